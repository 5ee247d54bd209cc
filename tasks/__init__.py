"""The document pipeline: ``celery -A tasks worker`` / ``beat`` / ``flower``.

``tasks.process_document(document_path, query=None, metadata=None)`` extracts the text
of a document, scores its chunks against the query and stores the result. Failures
raise the original exception type, which the recovery system (installed on this app
in ``tasks.app``) categorizes and tracks.
"""

from tasks.app import app
from tasks.documents import process_document

__all__ = ["app", "process_document"]
