"""docrecovery's recovery system: failed-document tracking and batched recovery.

Usable by any Celery app::

    import recovery
    recovery.install(app, recovery.RecoveryConfig.from_env())

Then failures of the tracked tasks are recorded in Redis, successes clear them, and
``recovery.run`` (on beat, or ``celery call recovery.run``) resubmits what is due.
The seed's API: :class:`FailedDocumentRecord`, :class:`FailedDocumentsTracker`,
:class:`DocumentRecoveryManager` and ``await run_document_recovery(...)``.
"""

from recovery.config import RecoveryConfig
from recovery.errors import ConfigError, CorruptRecord, RecoveryError, TrackerUnavailable
from recovery.integration import Recovery, TrackedTask, install, installed
from recovery.manager import DocumentRecoveryManager, run_document_recovery
from recovery.records import FailedDocumentRecord, document_id
from recovery.tracker import FailedDocumentsTracker

__all__ = [
    "ConfigError",
    "CorruptRecord",
    "DocumentRecoveryManager",
    "FailedDocumentRecord",
    "FailedDocumentsTracker",
    "Recovery",
    "RecoveryConfig",
    "RecoveryError",
    "TrackedTask",
    "TrackerUnavailable",
    "document_id",
    "install",
    "installed",
    "run_document_recovery",
]
