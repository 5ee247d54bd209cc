"""``tasks.process_document``: read a document, extract its text, rank it, store it.

::

    result = process_document.delay("/data/docs/guide.pdf", query="visibility timeout")
    result.get()["top_chunks"][0]["preview"]

The steps live in their own modules (``tasks.paths`` → ``tasks.extract`` →
``tasks.scoring``); this one runs them and stores the result as JSON at
:func:`result_key`, through the store of the recovery system installed on the app
(under its key prefix, whatever the broker is), with a TTL
(``DOCRECOVERY_RESULT_TTL`` seconds, default 7 days). The id is
``recovery.records.document_id(document_path, query)``, the same one the recovery
system files a failure under, so re-running a document overwrites its result instead
of adding one. A result that cannot be kept fails the run (a network failure, spooled
and recovered once Redis is back): a document counts as processed only with its result.

Nothing is retried here (no ``autoretry_for``, no ``self.retry``): every failure
propagates with its own type, and the recovery system installed on the app decides
from that type whether and when to try again.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from celery import Task

from recovery import TrackedTask, installed
from recovery.keys import Keys
from recovery.records import document_id
from tasks.app import app
from tasks.extract import extract
from tasks.paths import int_setting, read_document
from tasks.scoring import chunk_text, top_chunks

RESULT_TTL_ENV = "DOCRECOVERY_RESULT_TTL"
DEFAULT_RESULT_TTL = 7 * 24 * 3600


def result_key(keys: Keys, doc_id: str) -> str:
    """Where a processed document's JSON result is kept: under the keys of the
    document's shard (``tracker.connection.shard(doc_id).keys``), so results spread
    over a cluster's primaries as the records do."""
    return keys.app("result", doc_id)


@app.task(name="tasks.process_document", bind=True, base=TrackedTask)  # type: ignore[untyped-decorator]
def process_document(
    self: Task,
    document_path: str,
    query: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Process one document and return (and store) its JSON-ready result."""
    started = time.perf_counter()
    document = read_document(document_path)
    extraction = extract(document.path.name, document.data)
    chunks = chunk_text(extraction.text)
    doc_id = document_id(document_path, query)
    result: dict[str, Any] = {
        "doc_id": doc_id,
        "path": str(document.path),
        "type": extraction.type,
        "size": len(document.data),
        "sha256": hashlib.sha256(document.data).hexdigest(),
        "characters": len(extraction.text),
        "encoding": extraction.encoding,
        "chunk_count": len(chunks),
        "query": query,
        "top_chunks": [chunk.as_dict() for chunk in top_chunks(chunks, query)],
        "metadata": metadata or {},
    }
    result["processing_time"] = round(time.perf_counter() - started, 6)
    ttl = int_setting(RESULT_TTL_ENV, DEFAULT_RESULT_TTL)
    tracker = installed(self.app).tracker
    keys = tracker.connection.shard(doc_id).keys
    tracker.store.put(result_key(keys, doc_id), json.dumps(result), ttl)
    return result
