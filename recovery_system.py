"""The seed's import line: ``from recovery_system import run_document_recovery``."""

from recovery import (
    DocumentRecoveryManager,
    FailedDocumentRecord,
    FailedDocumentsTracker,
    run_document_recovery,
)

__all__ = [
    "DocumentRecoveryManager",
    "FailedDocumentRecord",
    "FailedDocumentsTracker",
    "run_document_recovery",
]
