"""Where the tracker's Redis is and how docrecovery talks to it.

A :class:`Connection` owns one client — of one Redis (``redis://``, ``rediss://``,
``unix://``) or of the primary Sentinel names (``sentinel://``, see
:mod:`recovery.store.sentinel`) — the key names under its prefix and the Lua scripts
registered on that client, which wait for replicas when ``wait_replicas`` says so
(:mod:`recovery.store.replication`). Its :meth:`~Connection.errors` context turns
redis-py's errors into :class:`~recovery.errors.TrackerUnavailable`, naming the
operation and the server without its password, so nothing above the store catches a
redis-py exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis

from recovery.config import RecoveryConfig
from recovery.errors import TrackerError, TrackerFailed, TrackerRefused, TrackerUnavailable
from recovery.keys import Keys
from recovery.store.replication import Wait
from recovery.store.scripts import Scripts
from recovery.store.sentinel import close_sentinels, is_sentinel, master_client, parts

#: The Redis every process uses when neither an argument nor ``REDIS_URL`` names one.
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redact(url: str) -> str:
    """The URL without its passwords (in the user part or a ``password=`` query
    parameter of each part of a ``sentinel://…;sentinel://…`` URL), for messages and
    logs."""
    return ";".join(_redact_one(part) for part in parts(url))


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def default_redis_url(explicit: str | None = None) -> str:
    """The Redis to use: ``explicit`` (``--redis-url``, ``redis_url=``), else
    ``REDIS_URL``, else :data:`DEFAULT_URL`. Workers, beat, the CLI and the Python API
    all resolve it here, so they cannot disagree about where the failures are."""
    return explicit or os.environ.get("REDIS_URL") or DEFAULT_URL


#: Options of every client: fail fast, so a handler spools an event instead of hanging.
CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "encoding_errors": "surrogateescape",
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "health_check_interval": 30,
}


def connect(url: str, sentinel_master: str) -> redis.Redis:
    """A client of the Redis ``url`` names; for a ``sentinel://`` URL, of the primary
    its sentinels know as ``sentinel_master``, found again after a failover."""
    if is_sentinel(url):
        return master_client(url, sentinel_master, redact(url), CLIENT_OPTIONS)
    return redis.Redis.from_url(url, **CLIENT_OPTIONS)


class Connection:
    """One Redis client with the names and scripts of one key prefix."""

    def __init__(self, url: str, config: RecoveryConfig, client: redis.Redis | None = None) -> None:
        self.url = url
        self.client = client or connect(url, config.sentinel_master)
        self.keys = Keys(config.key_prefix)
        self.wait = (
            Wait(config.wait_replicas, config.wait_timeout_ms) if config.wait_replicas else None
        )
        self.scripts = Scripts(self.client, self.keys, self.wait)

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

    def write(self, pipe: Any) -> list[Any]:
        """Run a pipeline of writes, waiting for replicas when ``wait_replicas`` says
        so; raises the first error among its replies."""
        replies: list[Any] = (
            self.wait.execute(pipe) if self.wait else pipe.execute(raise_on_error=False)
        )
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def close(self) -> None:
        close_sentinels(self.client)
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
