"""docrecovery's recovery system: failed-document tracking and batched recovery.

Usable by any Celery app::

    import recovery
    recovery.install(app, recovery.RecoveryConfig.from_env())

Then failures of the tracked tasks are recorded in Redis, successes clear them, and
``recovery.run`` (on beat, or ``celery call recovery.run``) resubmits what is due.
The seed's API: :class:`FailedDocumentRecord`, :class:`FailedDocumentsTracker`,
:class:`DocumentRecoveryManager` and ``await run_document_recovery(...)``.

Layers: :mod:`recovery.store` is the only code that talks to Redis; the manager,
the Celery wiring and the seed's API (:mod:`recovery.api`) sit on it.
"""

from recovery.api import DocumentRecoveryManager, FailedDocumentsTracker, run_document_recovery
from recovery.config import RecoveryConfig
from recovery.errors import (
    ConfigError,
    CorruptCounter,
    CorruptRecord,
    RecoveryError,
    TrackerBusy,
    TrackerError,
    TrackerFailed,
    TrackerRefused,
    TrackerUnavailable,
)
from recovery.integration import Recovery, TrackedTask, install, installed
from recovery.records import FailedDocumentRecord, document_id

__all__ = [
    "ConfigError",
    "CorruptCounter",
    "CorruptRecord",
    "DocumentRecoveryManager",
    "FailedDocumentRecord",
    "FailedDocumentsTracker",
    "Recovery",
    "RecoveryConfig",
    "RecoveryError",
    "TrackedTask",
    "TrackerBusy",
    "TrackerError",
    "TrackerFailed",
    "TrackerRefused",
    "TrackerUnavailable",
    "document_id",
    "install",
    "installed",
    "run_document_recovery",
]
