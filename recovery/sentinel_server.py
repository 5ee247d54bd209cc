"""A Sentinel-managed Redis on loopback, for the failover test and benchmark.

One primary, its replicas and (by default) three sentinels, each a real redis-server
(:class:`~recovery.redis_server.RedisServer`; a sentinel is ``redis-server
sentinel.conf --sentinel``) on a free port in a directory of its own. Failover is
quick: a primary that does not answer for ``down_after_ms`` is down, and a quorum of
sentinels promotes a replica. Tooling, like ``redis_server``: nothing in tracking
imports it.

    with SentinelGroup(tmp_dir) as group:
        os.environ["REDIS_URL"] = group.url      # sentinel://…;sentinel://…;sentinel://…
        group.primary.kill()
        promoted = group.wait_failover(timeout=30)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from recovery.redis_server import RedisServer, TLSFiles

POLL_SECONDS = 0.05
T = TypeVar("T")
#: A replica's first sync starts at once (Redis waits 5 s for more replicas to join).
SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")


class SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels watching them as
    ``master``. ``replica_priority`` 0 keeps the replicas from being promoted until
    :meth:`allow_promotion` (a failover held back for as long as a test needs)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        master: str = "mymaster",
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 2000,
        replica_priority: int = 100,
        sentinel_password: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.master = master
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # with TLS, every server and sentinel listens on a TLS port only and reaches the
        # others (replication, monitoring) over TLS too
        over_tls = ("--tls-replication", "yes") if tls else ()
        self.primary = RedisServer(
            self.data_dir / "redis-0", extra_args=(*SYNC_AT_ONCE, *over_tls), tls=tls
        )
        self.replicas = [
            RedisServer(
                self.data_dir / f"redis-{n}",
                tls=tls,
                extra_args=(
                    *SYNC_AT_ONCE,
                    *over_tls,
                    "--replicaof",
                    "127.0.0.1",
                    str(self.primary.port),
                    "--replica-priority",
                    str(replica_priority),
                ),
            )
            for n in range(1, replicas + 1)
        ]
        self.sentinels = [
            RedisServer(
                self.data_dir / f"sentinel-{n}",
                appendonly=False,
                config_file=self.data_dir / f"sentinel-{n}" / "sentinel.conf",
                extra_args=("--sentinel", *over_tls),
                password=sentinel_password,
                tls=tls,
            )
            for n in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """Celery's form: one ``sentinel://`` part per sentinel, joined by ``;`` (the
        sentinels' own password is not in it, as in Celery)."""
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def servers(self) -> list[RedisServer]:
        """The primary and the replicas it started with."""
        return [self.primary, *self.replicas]

    def start(self, timeout: float = 60.0) -> None:
        for server in self.servers:
            server.start()
        _wait(lambda: all(_linked(r) for r in self.replicas), timeout, "replicas to sync")
        for sentinel in self.sentinels:
            sentinel.data_dir.mkdir(parents=True, exist_ok=True)
            (sentinel.data_dir / "sentinel.conf").write_text(self._config(sentinel))
            sentinel.start()
        _wait(self._watching, timeout, "sentinels to find the replicas and each other")

    def _config(self, sentinel: RedisServer) -> str:
        """A sentinel's configuration: what it watches, how quickly it fails over, and
        the replicas and other sentinels it would otherwise take seconds to discover."""
        name, quorum = self.master, len(self.sentinels) // 2 + 1
        lines = [
            f"sentinel myid {_sentinel_id(sentinel)}",
            f"sentinel monitor {name} 127.0.0.1 {self.primary.port} {quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
            *(f"sentinel known-replica {name} 127.0.0.1 {r.port}" for r in self.replicas),
            *(
                f"sentinel known-sentinel {name} 127.0.0.1 {other.port} {_sentinel_id(other)}"
                for other in self.sentinels
                if other is not sentinel
            ),
            # sentinels that require a password log in to each other with it
            *(
                [f"sentinel sentinel-pass {self.sentinel_password}"]
                if self.sentinel_password
                else []
            ),
        ]
        return "\n".join(lines) + "\n"

    def _watching(self) -> bool:
        """Every sentinel knows every replica (up) and every other sentinel."""
        for sentinel in self.sentinels:
            known = self._ask(sentinel, "REPLICAS")
            if len(known) != len(self.replicas) or any(
                "down" in r["flags"] or "disconnected" in r["flags"] for r in known
            ):
                return False
            if len(self._ask(sentinel, "SENTINELS")) != len(self.sentinels) - 1:
                return False
        return True

    def _ask(self, sentinel: RedisServer, what: str) -> list[dict[str, str]]:
        return [_pairs(item) for item in _command(sentinel, "SENTINEL", what, self.master)]

    def master_addresses(self) -> set[int | None]:
        """The primary's port as each reachable sentinel names it."""
        ports: set[int | None] = set()
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            reply = _command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
            ports.add(int(reply[1]) if reply else None)
        return ports

    def in_step(self, timeout: float = 30.0) -> None:
        """Wait until every replica has every write the primary made so far: a write
        of its own, then WAIT (the replication stream is in order)."""
        client = self.primary.client()
        try:
            client.set("sentinel-group:in-step", time.time())
            acknowledged = int(client.wait(len(self.replicas), int(timeout * 1000)))
        finally:
            client.close()
        if acknowledged < len(self.replicas):
            raise TimeoutError(f"{acknowledged} of {len(self.replicas)} replicas in step")

    def allow_promotion(self, priority: int = 100) -> None:
        for replica in self.replicas:
            client = replica.client()
            try:
                client.config_set("replica-priority", priority)
            finally:
                client.close()

    def wait_failover(self, timeout: float = 30.0) -> RedisServer:
        """Wait until every running sentinel names a replica as the primary and it
        says it is one; it becomes :attr:`primary` (the old one, when restarted, is
        not in the group any more)."""
        old = self.primary.port

        def promoted() -> RedisServer | None:
            ports = self.master_addresses()
            if len(ports) != 1 or old in ports:
                return None
            [port] = ports
            for replica in self.replicas:
                if replica.port == port and _role(replica) == "master":
                    return replica
            return None

        server = _wait(promoted, timeout, "a replica to be promoted")
        self.replicas.remove(server)
        self.primary = server
        return server

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pairs(item: Any) -> dict[str, str]:
    """A SENTINEL REPLICAS/SENTINELS entry: a flat list of names and values."""
    if isinstance(item, dict):
        return {_text(k): _text(v) for k, v in item.items()}
    return {_text(item[i]): _text(item[i + 1]) for i in range(0, len(item), 2)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _command(server: RedisServer, *args: str) -> Any:
    """One command on a short-lived client (redis-py types SENTINEL replies loosely)."""
    client = server.client()
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _role(server: RedisServer) -> str | None:
    try:
        return _text(_command(server, "ROLE")[0])
    except redis.RedisError:
        return None


def _sentinel_id(sentinel: RedisServer) -> str:
    """A sentinel's run id (40 hex digits), fixed so the others can be told it."""
    return f"{sentinel.port:040x}"


def _linked(replica: RedisServer) -> bool:
    client = replica.client()
    try:
        info: dict[str, Any] = client.info("replication")
    finally:
        client.close()
    return info.get("master_link_status") == "up"


def _wait(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.ConnectionError):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS)
