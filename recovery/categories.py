"""Error categories, decided from the exception chain.

The type of the exception and of every exception in its ``__cause__`` /
``__context__`` chain is matched first (by class name along the MRO, so no import of
optional libraries is needed); message patterns are only a fallback for errors that
arrive as text (a spooled event, a result backend's re-raised copy).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

IMPORT = "import"
MEMORY = "memory"
TIMEOUT = "timeout"
FILE_NOT_FOUND = "file_not_found"
PERMISSION = "permission"
NETWORK = "network"
PERMANENT = "permanent"
WORKER_LOST = "worker_lost"
OTHER = "other"

CATEGORIES = (
    IMPORT,
    MEMORY,
    TIMEOUT,
    FILE_NOT_FOUND,
    PERMISSION,
    NETWORK,
    PERMANENT,
    WORKER_LOST,
    OTHER,
)

#: Class names (anywhere in an exception's MRO) and the category they mean; the
#: first match walking the MRO from the most specific class wins.
_BY_CLASS: dict[str, str] = {
    "ImportError": IMPORT,
    "MemoryError": MEMORY,
    "DocumentTooLarge": MEMORY,
    "SoftTimeLimitExceeded": TIMEOUT,
    "TimeLimitExceeded": TIMEOUT,
    "TimeoutError": TIMEOUT,
    "FileNotFoundError": FILE_NOT_FOUND,
    "PermissionError": PERMISSION,
    "DocumentOutsideRoots": PERMANENT,
    "UnsupportedDocumentType": PERMANENT,
    "CorruptedDocument": PERMANENT,
    "WorkerLostError": WORKER_LOST,
    "ConnectionError": NETWORK,
    "gaierror": NETWORK,
    "herror": NETWORK,
    "HTTPError": NETWORK,
    "URLError": NETWORK,
    "RemoteDisconnected": NETWORK,
}

_BY_MESSAGE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), category)
    for pattern, category in (
        (r"no module named|cannot import name|ImportError", IMPORT),
        (r"out of memory|MemoryError|cannot allocate|too large", MEMORY),
        (r"SIGKILL|signal 9|worker.*lost|WorkerLostError", WORKER_LOST),
        (r"time ?limit|timed? ?out", TIMEOUT),
        (r"no such file|FileNotFoundError|not found", FILE_NOT_FOUND),
        (r"permission denied|PermissionError|not permitted", PERMISSION),
        (r"connection (refused|reset|aborted)|network|unreachable|name resolution", NETWORK),
        (r"outside the configured roots|unsupported document|corrupt", PERMANENT),
    )
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        hidden = current.__suppress_context__  # ``raise X from None`` hides the context
        current = current.__cause__ or (None if hidden else current.__context__)


def categorize(exc: BaseException, overrides: Mapping[str, str] | None = None) -> str:
    """The category of an exception: the user's overrides anywhere in the chain's
    types first, then the built-in table, its message last."""
    for table in (overrides or {}, _BY_CLASS):
        for link in exception_chain(exc):
            for klass in type(link).__mro__:
                category = table.get(klass.__name__)
                if category is not None:
                    return category
    return categorize_message(f"{type(exc).__name__}: {exc}")


def categorize_message(text: str) -> str:
    """Fallback for an error known only as text."""
    for pattern, category in _BY_MESSAGE:
        if pattern.search(text):
            return category
    return OTHER
