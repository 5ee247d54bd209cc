"""Where documents may come from, and reading one safely.

A task's ``document_path`` arrives from a message, so it is untrusted: it is resolved
(symlinks and ``..`` included) and must land inside one of the roots listed in
``DOCRECOVERY_ROOTS`` (``os.pathsep``-separated; default: the working directory).
Only then is the file touched, and the operating system's own errors
(``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``) propagate
unchanged: the recovery system retries those once the file appears or its mode is
fixed. Settings are read at call time, so a worker follows its environment.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import DocumentOutsideRoots, DocumentTooLarge, UnsupportedDocumentType

ROOTS_ENV = "DOCRECOVERY_ROOTS"
MAX_BYTES_ENV = "DOCRECOVERY_MAX_BYTES"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Document:
    """A document's resolved path and its bytes, read once."""

    path: Path
    data: bytes


def int_setting(name: str, default: int) -> int:
    """A positive whole number from the environment; a bad value names the variable."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}: got {raw!r}; allowed: a whole number >= 1")
    return value


def document_roots() -> tuple[Path, ...]:
    """The resolved roots documents must live under."""
    raw = os.environ.get(ROOTS_ENV, "")
    roots = tuple(Path(part).resolve() for part in raw.split(os.pathsep) if part.strip())
    return roots or (Path.cwd().resolve(),)


def resolve_document_path(document_path: str | os.PathLike[str]) -> Path:
    """The real path of a document, refused unless it lies under a configured root."""
    resolved = Path(document_path).resolve()
    roots = document_roots()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise DocumentOutsideRoots(
            f"document {os.fspath(document_path)!r} resolves to {str(resolved)!r}, outside "
            f"the configured roots ({ROOTS_ENV}): {', '.join(map(str, roots))}"
        )
    return resolved


def read_document(document_path: str | os.PathLike[str]) -> Document:
    """Read a document under the roots, refusing directories, devices and oversize files."""
    path = resolve_document_path(document_path)
    limit = int_setting(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        # Opening a FIFO would block the worker until someone writes to it.
        raise UnsupportedDocumentType(f"unsupported document {str(path)!r}: not a regular file")
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        # Read one byte past the limit: the file may have grown since fstat.
        data = handle.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise DocumentTooLarge(
            f"document {str(path)!r} is too large: {max(size, len(data))} bytes, "
            f"limit {limit} ({MAX_BYTES_ENV})"
        )
    return Document(path=path, data=data)
