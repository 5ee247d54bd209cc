"""Flower, run as the compose file runs it, against the test session's real Redis.

One ``celery -A tasks flower --basic-auth=...`` process serves the whole module; it
is always terminated, and every wait and request here has a deadline. Flower 2 opens
its API only behind authentication, while ``/healthcheck`` (for container health)
and ``/metrics`` (for Prometheus) stay open.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult
from conftest import HttpResponse, http_get
from faults.support import wait_for
from prometheus_client.parser import text_string_to_metric_families

from recovery.api import DocumentRecoveryManager
from recovery.calls import HEADER
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.redis_server import RedisServer, free_port
from recovery.store import Tracker

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "user", "secret"
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Flower:
    url: str

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> HttpResponse:
        """GET ``path``; an HTTP error status is returned, not raised."""
        return http_get(self.url + path, auth, REQUEST_TIMEOUT)


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


@contextmanager
def running_flower(redis_url: str, log: Path) -> Iterator[Flower]:
    """``celery -A tasks flower`` with basic auth and this repository's
    ``flowerconfig.py``, as compose runs it, until the block ends."""
    port = free_port()
    # No FLOWER_* from the caller's environment: Flower reads its options from there,
    # and FLOWER_UNAUTHENTICATED_API would open the API this module checks is closed.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWER_")}
    env["REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [
        sys.executable, "-m", "celery", "-A", "tasks", "flower",
        f"--port={port}", "--address=127.0.0.1", f"--basic-auth={USER}:{PASSWORD}",
        f"--conf={ROOT / 'flowerconfig.py'}",
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


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    if redis_server.process is None:  # an earlier test stopped it
        redis_server.start()
    with running_flower(redis_server.url, tmp_path_factory.mktemp("flower") / "flower.log") as f:
        yield f


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


# -- docrecovery in Flower -------------------------------------------------------------


def test_metrics_carry_the_trackers_lines_read_at_scrape_time(
    flower: Flower, redis_url: str
) -> None:
    # Given a tracked failure recorded after Flower started
    tracker = Tracker(redis_url)
    try:
        now = tracker.connection.server_time()
        tracker.store.record_failure(
            FailedDocumentRecord("/docs/a.txt", "task-a", "RuntimeError: boom", now)
        )
    finally:
        tracker.close()

    # When Prometheus scrapes Flower, without credentials
    response = flower.get("/metrics")

    # Then Flower's own metrics and the tracker's are both there, the tracker's current
    assert response.status == 200
    families = {f.name: f for f in text_string_to_metric_families(response.body)}
    assert any(name.startswith("flower_") for name in families)
    tracked = {s.labels["state"]: s.value for s in families["docrecovery_documents"].samples}
    assert sum(tracked.values()) == 1
    assert families["docrecovery_tracker_up"].samples[0].value == 1


@dataclass(frozen=True)
class Pipeline:
    """Flower started on a flushed Redis (its event queue bound after the flush), a
    prefork worker sending task events, and the app to send with."""

    flower: Flower
    app: Celery
    redis_url: str
    root: Path

    def api(self, path: str) -> dict[str, Any]:
        response = self.flower.get(path, auth=(USER, PASSWORD))
        assert response.status == 200, (path, response)
        found: dict[str, Any] = json.loads(response.body)
        return found

    def seen(self, task_id: str, state: str) -> dict[str, Any]:
        """Flower's view of a task once its events say ``state``."""

        def ready() -> bool:
            response = self.flower.get(f"/api/task/info/{task_id}", auth=(USER, PASSWORD))
            return response.status == 200 and json.loads(response.body)["state"] == state

        wait_for(ready, START_TIMEOUT, f"Flower to see task {task_id} as {state}")
        return self.api(f"/api/task/info/{task_id}")

    def failed_and_tracked(self, path: Path) -> str:
        """Send the document; wait until its failure is tracked; the task id."""
        task_id: str = self.app.send_task("tasks.process_document", args=[str(path)]).id
        tracker = Tracker(self.redis_url)
        try:
            doc_id = FailedDocumentRecord(str(path), task_id, "").doc_id
            wait_for(lambda: tracker.reports.get_record(doc_id), START_TIMEOUT, f"{path} tracked")
        finally:
            tracker.close()
        return task_id


@pytest.fixture
def pipeline(
    redis_url: str,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
    worker_process: Callable[..., Any],
) -> Iterator[Pipeline]:
    with running_flower(redis_url, tmp_path / "flower.log") as server:
        worker_process("w1")
        yield Pipeline(server, celery_app, redis_url, doc_root)


NO_JITTER = {"retry_jitter": 0.0, "min_retry_interval_hours": 0.0}


@pytest.mark.slow
def test_a_recovery_resubmission_shows_its_attempt_and_its_original_in_flower(
    pipeline: Pipeline,
) -> None:
    # Given a document that failed because its file was missing, and is back
    path = pipeline.root / "late.txt"
    original = pipeline.failed_and_tracked(path)
    path.write_text("back in place")

    # When a recovery run resubmits it and the worker processes it
    manager = DocumentRecoveryManager(
        pipeline.redis_url, RecoveryConfig.from_mapping(NO_JITTER), app=pipeline.app
    )
    try:
        [sent] = manager.run_batch().resubmitted
    finally:
        manager.close()
    replacement = sent.task_id

    # Then Flower shows the new task as attempt 1 of the original, linked both ways
    info = pipeline.seen(replacement, "SUCCESS")
    assert f"'docrecovery': 'recovery attempt 1 of task {original}'" in info["kwargs"]
    assert info["parent_id"] == original
    assert replacement in pipeline.seen(original, "FAILURE")["children"]
    # and the original's result names its replacement, its failure kept
    result = AsyncResult(original, app=pipeline.app)
    assert result.state == "FAILURE"
    assert [child.id for child in result.children] == [replacement]
    assert result._get_task_meta()[HEADER] == {
        "replaced_by": replacement,
        "attempt": 1,
        "manual": False,
    }
    # while the task itself ran with its real arguments
    assert AsyncResult(replacement, app=pipeline.app).kwargs == {}


@pytest.mark.slow
def test_a_manual_retry_says_so_in_flower_and_in_the_originals_result(
    pipeline: Pipeline,
) -> None:
    # Given a document that failed for good (a type nothing extracts)
    path = pipeline.root / "notes.unknown"
    path.write_text("no extractor for this")
    original = pipeline.failed_and_tracked(path)

    # When an operator retries it, from outside any worker (as the CLI does)
    manager = DocumentRecoveryManager(pipeline.redis_url, RecoveryConfig.from_mapping(NO_JITTER))
    try:
        doc_id = FailedDocumentRecord(str(path), original, "").doc_id
        [sent] = manager.retry([doc_id]).resubmitted
    finally:
        manager.close()
        manager.app.close()
    replacement = sent.task_id

    # Then Flower shows the new task as a manual retry of the original
    info = pipeline.seen(replacement, "FAILURE")
    assert f"'docrecovery': 'manual retry of task {original}'" in info["kwargs"]
    assert info["parent_id"] == original
    meta = AsyncResult(original, app=pipeline.app)._get_task_meta()
    assert meta[HEADER] == {"replaced_by": replacement, "attempt": 1, "manual": True}
