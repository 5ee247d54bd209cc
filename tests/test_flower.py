"""Flower, run as the compose file runs it, against the test session's real Redis.

One ``celery -A tasks flower --basic-auth=...`` process serves the whole module; it
is always terminated, and every wait and request here has a deadline. Flower 2 opens
its API only behind authentication, while ``/healthcheck`` (for container health)
and ``/metrics`` (for Prometheus) stay open.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recovery.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "user", "secret"
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Response:
    status: int
    body: str


@dataclass(frozen=True)
class Flower:
    url: str

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> Response:
        """GET ``path``; an HTTP error status is returned, not raised."""
        request = urllib.request.Request(self.url + path)
        if auth is not None:
            token = base64.b64encode(":".join(auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                return Response(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.read().decode(errors="replace"))


def wait_until_serving(flower: Flower, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/healthcheck`` until it answers 200; fail with Flower's log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flower exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if flower.get("/healthcheck").status == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    pytest.fail(f"flower did not answer within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    if redis_server.process is None:  # an earlier test stopped it
        redis_server.start()
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    # No FLOWER_* from the caller's environment: Flower reads its options from there,
    # and FLOWER_UNAUTHENTICATED_API would open the API this module checks is closed.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}
    env["REDIS_URL"] = redis_server.url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [
        sys.executable, "-m", "celery", "-A", "tasks", "flower",
        f"--port={port}", "--address=127.0.0.1", f"--basic-auth={USER}:{PASSWORD}",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        server = Flower(f"http://127.0.0.1:{port}")
        wait_until_serving(server, process, log)
        yield server
    finally:
        stop(process)


def test_healthcheck_answers_without_credentials(flower: Flower) -> None:
    response = flower.get("/healthcheck")

    assert (response.status, response.body) == (200, "OK")


def test_the_api_refuses_a_request_without_credentials(flower: Flower) -> None:
    assert flower.get("/api/workers").status == 401


def test_the_api_refuses_wrong_credentials(flower: Flower) -> None:
    assert flower.get("/api/workers", auth=(USER, "not-the-password")).status == 401


def test_the_api_answers_with_the_basic_auth_credentials(flower: Flower) -> None:
    response = flower.get("/api/workers", auth=(USER, PASSWORD))

    assert response.status == 200
    assert response.body.startswith("{")


def test_metrics_serve_prometheus_text_without_credentials(flower: Flower) -> None:
    response = flower.get("/metrics")

    assert response.status == 200
    assert "# TYPE flower_" in response.body
