"""Errors of the document pipeline: bad input, told apart from a broken environment.

::

    DocumentError
     ├── DocumentOutsideRoots     (permanent: never retried)
     ├── DocumentTooLarge         (memory: retried on the highmem queue)
     ├── UnsupportedDocumentType  (permanent)
     └── CorruptedDocument        (permanent)

Each declares its recovery category (``recovery_category``), which the recovery
system reads from the exception itself. Everything else (``FileNotFoundError``,
``PermissionError``, ``ModuleNotFoundError`` of a missing extra, ``MemoryError``...)
propagates with its own type, because those causes can go away and be retried.

Every constructor takes one message string: Celery's JSON result backend stores
``exc.args`` and rebuilds the exception as ``cls(*args)``, so extra arguments or
keyword-only fields would not survive the round trip.
"""

from __future__ import annotations

from recovery.categories import MEMORY, PERMANENT


class DocumentError(Exception):
    """Raised when a document cannot be processed because of the document itself."""


class DocumentOutsideRoots(DocumentError):
    """Raised when a path resolves outside every configured document root."""

    recovery_category = PERMANENT


class DocumentTooLarge(DocumentError):
    """Raised when a document is bigger than the configured size limit."""

    recovery_category = MEMORY


class UnsupportedDocumentType(DocumentError):
    """Raised when a document's extension has no extractor or its text is binary."""

    recovery_category = PERMANENT


class CorruptedDocument(DocumentError):
    """Raised when a parser cannot read a document of a supported type."""

    recovery_category = PERMANENT
