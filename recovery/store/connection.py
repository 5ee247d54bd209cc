"""Where the tracker's Redis is and how docrecovery talks to it.

A :class:`Connection` owns one client — of one Redis (``redis://``, ``rediss://``,
``unix://``), of the primary Sentinel names (``sentinel://``, see
:mod:`recovery.store.sentinel`) or of a Redis Cluster (``redis+cluster://``, see
:mod:`recovery.store.cluster`) — and its shards: the key names of each (one shard,
under the prefix itself, unless ``shards`` says more) and the Lua scripts registered on
the client for them, which wait for replicas when ``wait_replicas`` says so
(:mod:`recovery.store.replication`). Its :meth:`~Connection.errors` context turns
redis-py's errors into the :class:`~recovery.errors.TrackerError` that says what
happened (:mod:`recovery.store.redis_errors`), naming the operation and the server
without its password, so nothing above the store catches a redis-py exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import hiredis
import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from recovery.config import RecoveryConfig
from recovery.errors import (
    RecoveryError,
)
from recovery.keys import Keys, shard_keys, shard_of
from recovery.store import tls
from recovery.store.cluster import connect_cluster, is_cluster_url
from recovery.store.redis_errors import tracker_error
from recovery.store.replication import Wait
from recovery.store.scripts import LuaScript, Scripts
from recovery.store.sentinel import (
    close_sentinels,
    is_sentinel,
    master_client,
)
from recovery.store.urls import check_url, redact

#: A client of the tracker's Redis: one server (or Sentinel's primary), or a cluster.
Client = redis.Redis | RedisCluster
#: A read-only script call for :meth:`Connection.read_all`: the script, its KEYS, ARGV.
ReadCall = tuple[LuaScript, list[str], list[Any]]
T = TypeVar("T")


class Packer(HiredisRespSerializer):
    """redis-py's own hiredis packer first copies every argument (to turn a bytearray
    or memoryview into bytes), which cost a failure's call (45 arguments) more than the
    packing itself. This one lets hiredis pack at once, and only a call hiredis refuses
    goes redis-py's way, so the bytes sent and the errors raised are the same."""

    def pack(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) or b" " in head:  # "SCRIPT LOAD": one word an argument
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            packed: list[bytes] = super().pack(*args)
            return packed


#: Options of every client: fail fast, so a handler spools an event instead of hanging.
CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "encoding_errors": "surrogateescape",
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
}


def connect(url: str, config: RecoveryConfig) -> Client:
    """A client of the Redis ``url`` names; for a ``sentinel://`` URL, of the primary
    its sentinels know as ``config.sentinel_master``, reached with the config's other
    ``sentinel_*`` settings and found again after a failover; for a ``redis+cluster://``
    URL, of the cluster (it reads the slot map on creation)."""
    if is_cluster_url(url):
        return connect_cluster(tls.for_redis_py(url), **CLIENT_OPTIONS)
    options = {
        **CLIENT_OPTIONS,
        # a ping before using a connection idle this long
        "health_check_interval": 30,
        # One quick retry rides out a dropped connection or a socket timeout. It sends
        # the command again, which Redis may have applied already (only its reply was
        # lost), so each script, and the run lock, tells that second call from a new
        # one or changes nothing twice (README, "A call sent twice"); a live success
        # alone counts its worker's and query's run again. redis-py's default (10
        # retries, each reconnecting with retries of its own) keeps a worker whose
        # network is down waiting about 40 s per call before its event reaches the
        # spool.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.1), 1),
        # (a cluster client takes no packer: its nodes' connections keep redis-py's)
        "command_packer": Packer(),
    }
    if is_sentinel(url):
        return master_client(
            url,
            config.sentinel_master,
            redact(url),
            options,
            config.sentinel_password,
            config.sentinel_tls,
        )
    return redis.Redis.from_url(tls.for_redis_py(url), **options)


class Shard:
    """The key names of one shard and the scripts bound to them."""

    def __init__(self, connection: Connection, keys: Keys) -> None:
        self.keys = keys
        self._connection = connection
        self._scripts: Scripts | None = None

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self._connection.client, self.keys, self._connection.wait)
        return self._scripts


class Connection:
    """One Redis client with the names and scripts of one key prefix, in ``shards``
    key sets. The client is made on first use: a cluster client reads the slot map
    then, and a cluster that cannot be reached is a TrackerUnavailable like any other,
    raised where the caller handles it (a worker spools its event)."""

    def __init__(self, url: str, config: RecoveryConfig, client: Client | None = None) -> None:
        self.url = url
        if client is None:
            check_url(url)
        self._client = client
        self._config = config
        self.wait = (
            Wait(config.wait_replicas, config.wait_timeout_ms) if config.wait_replicas else None
        )
        self.shards = tuple(
            Shard(self, keys) for keys in shard_keys(config.key_prefix, config.shards)
        )
        #: The first shard's names: where what is not a document's lives (the run lock).
        self.keys = self.shards[0].keys

    @property
    def client(self) -> Client:
        if self._client is None:
            with self.errors("connect"):
                try:
                    self._client = connect(self.url, self._config)
                except RedisClusterException as exc:
                    raise redis.ConnectionError(str(exc)) from exc
        return self._client

    @property
    def scripts(self) -> Scripts:
        """The first shard's scripts."""
        return self.shards[0].scripts

    def shard(self, doc_id: str) -> Shard:
        """The shard a document is filed in."""
        return self.shards[shard_of(doc_id, len(self.shards))]

    def errors(self, operation: str) -> Errors:
        """Redis errors inside become the TrackerError that says what happened —
        unreachable, refused, or failed there — naming the operation and the server
        without its password. Any other exception but docrecovery's own may have cut a
        call off before its reply: it closes the pool's idle connections on its way."""
        return Errors(self, operation)

    def _close_idle(self) -> None:
        """Close the pool's idle connections. An exception raised between a command's
        send and its reply (a soft time limit's, ^C) puts the connection back in the
        pool with the reply unread: redis-py closes a connection itself only when the
        exception comes while it waits, and its check before lending one again misses
        a reply still on its way, so the next call would read it as its own.
        Connections other threads are using are left alone. A cluster client closes
        the connection itself on an Exception, not on a BaseException such as ^C; each
        of its nodes has a pool of its own."""
        client = self._client
        pools = []
        if isinstance(client, redis.Redis):
            pools = [client.connection_pool]
        elif isinstance(client, RedisCluster):
            nodes = client.get_nodes()  # type: ignore[no-untyped-call]
            pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
        for pool in pools:
            pool.disconnect(inuse_connections=False)

    def server_time(self) -> float:
        """The Redis server's clock: the one every deadline is measured by."""
        with self.errors("read the server's clock"):
            seconds, micros = self.client.time()
        return float(seconds) + micros / 1e6

    def pipeline(self, *, transaction: bool = False) -> Any:
        return self.client.pipeline(transaction=transaction)

    def read_all(self, calls: Sequence[ReadCall]) -> list[Any]:
        """Replies of read-only script calls sent in one pipeline: one round trip. A
        script the server does not know yet (restart, SCRIPT FLUSH) is loaded and the
        whole pipeline read again, which only read-only scripts make safe. redis-py
        refuses scripts in a cluster pipeline: on a cluster each call goes by itself,
        to its shard's primary, one round trip each."""
        if isinstance(self.client, RedisCluster):
            return [script.run(keys, argv) for script, keys, argv in calls]
        for _ in range(2):
            pipe = self.pipeline()
            for script, keys, argv in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *argv)
            replies: list[Any] = pipe.execute(raise_on_error=False)
            unknown = {
                call[0].name: call[0]
                for call, reply in zip(calls, replies, strict=True)
                if isinstance(reply, NoScriptError)
            }
            if not unknown:
                break
            for script in unknown.values():
                self.client.script_load(script.source)
        return _raise_first(replies)

    def write(self, pipe: Any) -> list[Any]:
        """Run a pipeline of writes, waiting for replicas when ``wait_replicas`` says
        so; raises the first error among its replies."""
        replies: list[Any] = (
            self.wait.execute(pipe) if self.wait else pipe.execute(raise_on_error=False)
        )
        return _raise_first(replies)

    def close(self) -> None:
        client = self._client
        if client is None:
            return
        if isinstance(client, redis.Redis):
            close_sentinels(client)
        client.close()


def _raise_first(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class Part:
    """One concern of the store on a shared connection: its client, scripts and key
    names, and the config it applies."""

    def __init__(self, connection: Connection, config: RecoveryConfig) -> None:
        self.connection = connection
        self.config = config
        self.shards = connection.shards
        self.keys = connection.keys

    @property
    def scripts(self) -> Scripts:
        """The first shard's scripts (of the only shard, unless ``shards`` > 1)."""
        return self.connection.scripts

    def split(self, items: Sequence[T], doc_id: Callable[[T], str]) -> list[tuple[Shard, list[T]]]:
        """``items`` by the shard of their document, in shard order; shards given none
        are left out, and each keeps the items' order."""
        if len(self.shards) == 1:
            return [(self.shards[0], list(items))] if items else []
        grouped: dict[int, list[T]] = {}
        for item in items:
            grouped.setdefault(shard_of(doc_id(item), len(self.shards)), []).append(item)
        return [(self.shards[i], grouped[i]) for i in sorted(grouped)]


class Errors:
    """:meth:`Connection.errors`, a class rather than a generator: it wraps every call
    of the store, and a generator's context costs three times as much."""

    __slots__ = ("_connection", "_operation")

    def __init__(self, connection: Connection, operation: str) -> None:
        self._connection = connection
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, RecoveryError):
            return  # ours, raised between calls: no reply is left unread
        connection = self._connection
        if isinstance(exc, redis.RedisError | RedisClusterException):
            master = connection._config.sentinel_master
            raise tracker_error(exc, self._operation, connection.url, master) from exc
        connection._close_idle()


def wire(value: str) -> bytes:
    """A string as the bytes Redis stores. Paths from the file system may hold
    undecodable bytes (surrogate escapes), which hiredis's packer refuses as str."""
    return value.encode("utf-8", "surrogateescape")


def strs(reply: Any) -> list[str]:
    """redis-py types replies loosely; with decode_responses they are str."""
    return [str(item) for item in reply]
