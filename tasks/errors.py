"""Errors of the document pipeline: bad input, told apart from a broken environment.

::

    DocumentError
     ├── DocumentOutsideRoots     (permanent: never retried)
     ├── DocumentTooLarge         (memory: retried on the highmem queue)
     ├── UnsupportedDocumentType  (permanent)
     └── CorruptedDocument        (permanent)

The recovery system categorizes a failure by the class names in its MRO, so these
names are part of the contract. Everything else (``FileNotFoundError``,
``PermissionError``, ``ModuleNotFoundError`` of a missing extra, ``MemoryError``...)
propagates with its own type, because those causes can go away and be retried.

Every constructor takes one message string: Celery's JSON result backend stores
``exc.args`` and rebuilds the exception as ``cls(*args)``, so extra arguments or
keyword-only fields would not survive the round trip.
"""

from __future__ import annotations


class DocumentError(Exception):
    """Raised when a document cannot be processed because of the document itself."""


class DocumentOutsideRoots(DocumentError):
    """Raised when a path resolves outside every configured document root."""


class DocumentTooLarge(DocumentError):
    """Raised when a document is bigger than the configured size limit."""


class UnsupportedDocumentType(DocumentError):
    """Raised when a document's extension has no extractor or its text is binary."""


class CorruptedDocument(DocumentError):
    """Raised when a parser cannot read a document of a supported type."""
