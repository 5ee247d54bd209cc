"""Error categories, decided from the exception chain.

An application files its own errors by declaring a class attribute
(``recovery_category = "permanent"``); the recovery system needs no list of their
names. The user's ``category_overrides`` (by class name) win over everything.

The type of the exception and of every exception in its ``__cause__`` /
``__context__`` chain is matched first (by class name along the MRO, so no import of
optional libraries is needed); message patterns are only a fallback for errors that
arrive as text (a spooled event, a result backend's re-raised copy).

Some failures that no retry can fix have no class of their own, so they are told by
a precise check instead and filed as permanent: an ``OSError`` whose errno is
``ENAMETOOLONG``, the ``ValueError`` Python raises for a path with a NUL byte, and the
``TypeError`` of a task called with arguments its signature refuses, which only
counts when Celery made the failing call (a bad call deep in a task's own code is a
bug like any other). Their message says what is wrong and is kept in the record.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator, Mapping

from celery.exceptions import SoftTimeLimitExceeded

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
    "SoftTimeLimitExceeded": TIMEOUT,
    "TimeLimitExceeded": TIMEOUT,
    "TimeoutError": TIMEOUT,
    "FileNotFoundError": FILE_NOT_FOUND,
    "PermissionError": PERMISSION,
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
        (r"ValueError: embedded null (byte|character)$", PERMANENT),
        (r"\[Errno 36\] File name too long", PERMANENT),
    )
)

#: What Python says when a call's arguments do not fit the callee's signature.
_BAD_CALL = re.compile(
    r"[\w.<>]+\(\) (got an unexpected keyword argument|got multiple values for argument"
    r"|missing \d+ required (positional|keyword-only) argument|takes \d+ positional argument"
    r"|takes from \d+ to \d+ positional arguments|got some positional-only arguments)"
)
#: Modules whose frames call a task with the arguments of its message (Celery's tracer,
#: ``Task.__call__``): a bad call made there means the message can never run.
_TASK_CALLERS = frozenset({"celery.app.trace", "celery.app.task"})
#: Python's messages for a path holding a NUL byte, which no file system accepts.
_NUL_IN_PATH = frozenset({"embedded null byte", "embedded null character"})


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        hidden = current.__suppress_context__  # ``raise X from None`` hides the context
        current = current.__cause__ or (None if hidden else current.__context__)


def cut_off(exc: BaseException) -> BaseException | None:
    """What cut a call off, if not an ordinary failure: a soft time limit (an
    Exception, but the calling task's, which must stop) or a BaseException such as ^C,
    raised as it is or as the cause of a library's own error (kombu's failed flush)."""
    for link in exception_chain(exc):
        if isinstance(link, SoftTimeLimitExceeded) or not isinstance(link, Exception):
            return link
    return None


def categorize(exc: BaseException, overrides: Mapping[str, str] | None = None) -> str:
    """The category of an exception: the user's overrides anywhere in the chain's
    types first, then the built-in checks and table, its message last."""
    table = overrides or {}
    for decide in (lambda link: _by_class(link, table), _built_in):
        for link in exception_chain(exc):
            category = decide(link)
            if category is not None:
                return category
    return categorize_message(f"{type(exc).__name__}: {exc}")


def _by_class(exc: BaseException, table: Mapping[str, str]) -> str | None:
    for klass in type(exc).__mro__:
        category = table.get(klass.__name__)
        if category is not None:
            return category
    return None


def _built_in(exc: BaseException) -> str | None:
    if _never_succeeds(exc):
        return PERMANENT
    return _declared(exc) or _by_class(exc, _BY_CLASS)


def _declared(exc: BaseException) -> str | None:
    """The category an application's exception class declares for itself
    (``recovery_category = "permanent"``): how an app's own errors are filed without
    the recovery system knowing their names."""
    category = getattr(type(exc), "recovery_category", None)
    return category if category in CATEGORIES else None


def _never_succeeds(exc: BaseException) -> bool:
    """Whether ``exc`` (one link, not its chain) is a failure without a class of its
    own that no retry can fix: a name too long, a NUL in a path, a bad task call."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENAMETOOLONG
    if isinstance(exc, ValueError):
        return str(exc) in _NUL_IN_PATH
    return isinstance(exc, TypeError) and _bad_task_call(exc)


def _bad_task_call(exc: TypeError) -> bool:
    """A TypeError of binding a task's arguments: the call that failed is the deepest
    frame of the traceback (the callee never started), and Celery made it."""
    tb = exc.__traceback__
    if tb is None or not _BAD_CALL.match(str(exc)):
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__") in _TASK_CALLERS


def categorize_text(
    error_type: str, message: str, overrides: Mapping[str, str] | None = None
) -> str:
    """The category of an error known only by its type's name and its message (a record
    handed to the API): the user's overrides and the table by that name first, as for
    an exception's own class, then the message."""
    for table in (overrides or {}, _BY_CLASS):
        if error_type in table:
            return table[error_type]
    return categorize_message(f"{error_type}: {message}" if error_type else message)


def categorize_message(text: str) -> str:
    """Fallback for an error known only as text."""
    for pattern, category in _BY_MESSAGE:
        if pattern.search(text):
            return category
    return OTHER
