"""Where the tracker's Redis is and how docrecovery talks to it.

A :class:`Connection` owns one client, the key names under its prefix and the Lua
scripts registered on that client. Its :meth:`~Connection.errors` context turns
redis-py's errors into :class:`~recovery.errors.TrackerUnavailable`, naming the
operation and the server without its password, so nothing above the store catches a
redis-py exception.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis

from recovery.config import RecoveryConfig
from recovery.errors import TrackerError, TrackerFailed, TrackerRefused, TrackerUnavailable
from recovery.keys import Keys
from recovery.store.scripts import Scripts

#: The Redis every process uses when neither an argument nor ``REDIS_URL`` names one.
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redact(url: str) -> str:
    """The URL without its password (in the user part or a ``password=`` query
    parameter), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


#: A password inside text: a URL's user part (``scheme://user:secret@``) or a
#: ``password=`` query parameter.
_PASSWORDS = re.compile(
    r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*:)[^@/\s]+(?=@)"
    r"|(?P<param>[?&;]password=)[^&\s]*",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with every URL's password masked as :func:`redact` masks one URL: an
    error message or traceback stored with a record can hold a connection URL."""
    return _PASSWORDS.sub(lambda m: f"{m.group('keep') or m.group('param')}***", text)


def default_redis_url(explicit: str | None = None) -> str:
    """The Redis to use: ``explicit`` (``--redis-url``, ``redis_url=``), else
    ``REDIS_URL``, else :data:`DEFAULT_URL`. Workers, beat, the CLI and the Python API
    all resolve it here, so they cannot disagree about where the failures are."""
    return explicit or os.environ.get("REDIS_URL") or DEFAULT_URL


def connect(url: str) -> redis.Redis:
    """A client that fails fast, so a handler spools an event instead of hanging."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
    )


class Connection:
    """One Redis client with the names and scripts of one key prefix."""

    def __init__(self, url: str, prefix: str, client: redis.Redis | None = None) -> None:
        self.url = url
        self.client = client or connect(url)
        self.keys = Keys(prefix)
        self.scripts = Scripts(self.client, self.keys)

    @contextmanager
    def errors(self, operation: str) -> Iterator[None]:
        """Redis errors inside become the TrackerError that says what happened —
        unreachable, refused, or failed there — naming the operation and the server
        without its password."""
        try:
            yield
        except redis.RedisError as exc:
            where = redact(self.url) if self.url else "Redis"
            kind = _kind(exc)
            raise kind(f"{operation} failed on {where}: {exc}") from exc

    def server_time(self) -> float:
        """The Redis server's clock: the one every deadline is measured by."""
        with self.errors("read the server's clock"):
            seconds, micros = self.client.time()
        return float(seconds) + micros / 1e6

    def pipeline(self, *, transaction: bool = False) -> Any:
        return self.client.pipeline(transaction=transaction)

    def close(self) -> None:
        self.client.close()


#: Refusals: the server answered, and said no to this client or command.
_REFUSALS = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
    redis.ReadOnlyError,
    redis.OutOfMemoryError,
)


def _kind(exc: redis.RedisError) -> type[TrackerError]:
    if isinstance(exc, _REFUSALS):
        return TrackerRefused
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        return TrackerUnavailable
    return TrackerFailed


class Part:
    """One concern of the store on a shared connection: its client, scripts and key
    names, and the config it applies."""

    def __init__(self, connection: Connection, config: RecoveryConfig) -> None:
        self.connection = connection
        self.config = config
        self.scripts = connection.scripts
        self.keys = connection.keys


def wire(value: str) -> bytes:
    """A string as the bytes Redis stores. Paths from the file system may hold
    undecodable bytes (surrogate escapes), which hiredis's packer refuses as str."""
    return value.encode("utf-8", "surrogateescape")


def strs(reply: Any) -> list[str]:
    """redis-py types replies loosely; with decode_responses they are str."""
    return [str(item) for item in reply]
