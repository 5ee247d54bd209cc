"""What a redis-py error means for docrecovery: unreachable, refused, busy, or a
failure of the command itself, as the TrackerError that names it.

A refusal and a busy server are unavailability too (a worker's event that meets one is
spooled and replayed); only an error of the command (a script error, a key of the wrong
type) fails it.
"""

from __future__ import annotations

import json
import re

import redis
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.sentinel import MasterNotFoundError

from recovery.categories import exception_chain
from recovery.errors import (
    CorruptCounter,
    RecoveryError,
    TrackerBusy,
    TrackerError,
    TrackerFailed,
    TrackerRefused,
    TrackerUnavailable,
)
from recovery.store import tls
from recovery.store.sentinel import no_primary
from recovery.store.urls import redact


def connection_problem(exc: BaseException) -> str:
    """The cause of a failed connection (a broker's, through kombu) in a few words."""
    for link in exception_chain(exc):
        if isinstance(link, redis.AuthenticationError):
            return "authentication failed"
        if isinstance(link, redis.TimeoutError | TimeoutError):
            return "timeout"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


#: Refusals: the server answered, and said no to this client or command.
_REFUSALS = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
    redis.ReadOnlyError,
    redis.OutOfMemoryError,
)


#: Busy: the server answered that it cannot serve for now, and will (redis-py gives
#: these their own classes; the codes below come as a plain ResponseError).
_BUSY = (
    redis.BusyLoadingError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
)
_BUSY_CODES = {"BUSY", "MISCONF", "NOREPLICAS"}
#: The same refusals as the classes above, where no class carries them (see _code).
_REFUSED_CODES = {"NOAUTH", "WRONGPASS", "NOPERM", "READONLY", "OOM"}
#: Redis's answer to a SELECT past its ``databases`` (redis-py drops the "ERR ").
_OUT_OF_RANGE = "DB index is out of range"
#: What that answer means for the URL that asked for it.
_NO_SUCH_DATABASE = (
    "the server has fewer databases than the URL's database number needs"
    f" (Redis: {_OUT_OF_RANGE}; see `databases` in its redis.conf)"
)
#: Redis 6.2 wraps the error a script's call met, its code inside: "ERR Error running
#: script (call to f_…): @user_script:1: @user_script: 1: -READONLY You can't…", which
#: redis-py gives without its "ERR ", or, when the script caught it (redis.pcall) and
#: returned it, "@user_script: 1: -READONLY You can't…"; 7 keeps the code first, and
#: redis-py gives it its class.
_WRAPPED = re.compile(
    r"(?:ERR )?(?:Error running script .*?|@user_script: \d+): -(?P<code>[A-Z]+) "
)


def _code(exc: redis.ResponseError) -> str:
    """The error code of a reply, also where Redis 6.2 wrapped it in a script's error."""
    text = str(exc)
    wrapped = _WRAPPED.match(text)
    return wrapped.group("code") if wrapped else text.partition(" ")[0]


def _corrupt_counter(exc: Exception) -> CorruptCounter | None:
    """The CorruptCounter a script's refusal names (``stats_refusal`` in _lib.lua:
    "BADCOUNTER [key, field, value]"), or None for any other error."""
    if not isinstance(exc, redis.ResponseError) or _code(exc) != "BADCOUNTER":
        return None
    named, _ = json.JSONDecoder().raw_decode(str(exc).partition(" ")[2])
    return CorruptCounter(*named)


def _no_such_database(exc: Exception) -> bool:
    """Whether the server refused the URL's database: redis-py selects it as it
    connects, and its answer comes as a plain ResponseError, a failure of whichever
    command came first, though no command could ever succeed on that URL."""
    return isinstance(exc, redis.ResponseError) and str(exc) == _OUT_OF_RANGE


#: Unreachable: nothing answered, or not yet (a cluster's slot not served by any node).
_UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    SlotNotCoveredError,
)


def _kind(exc: Exception) -> type[TrackerError]:
    """What a redis-py error means for the caller: a refusal and a busy server are
    unavailability too (an event that meets one is spooled and replayed); only an
    error of the command itself (a script error, a key of the wrong type) fails it."""
    code = _code(exc) if isinstance(exc, redis.ResponseError) else ""
    refused = code in _REFUSED_CODES or _no_such_database(exc) or tls.untrusted(exc)
    if isinstance(exc, _REFUSALS) or refused:
        return TrackerRefused
    if isinstance(exc, _BUSY) or code in _BUSY_CODES:
        return TrackerBusy
    if isinstance(exc, _UNREACHABLE):
        return TrackerUnavailable
    return TrackerFailed


def tracker_error(
    exc: redis.RedisError | RedisClusterException, operation: str, url: str, sentinel_master: str
) -> RecoveryError:
    """The error to raise for ``exc``, met by ``operation`` on the Redis at ``url``:
    naming both, the server without its password."""
    if corrupt := _corrupt_counter(exc):
        return corrupt
    where = redact(url) if url else "Redis"
    kind, cause = _kind(exc), str(exc)
    if isinstance(exc, MasterNotFoundError):
        kind, cause = no_primary(exc, sentinel_master)
    elif _no_such_database(exc):
        cause = _NO_SUCH_DATABASE
    elif hint := tls.hint(exc, url):
        cause += f" ({hint})"
    return kind(f"{operation} failed on {where}: {cause}")
