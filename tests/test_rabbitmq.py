"""Broker and tracker are separate settings: RabbitMQ carries the tasks, Redis the rest.

``CELERY_BROKER_URL`` (or ``celery -b``) names the broker and ``REDIS_URL`` the tracker
and result backend; unset, the broker is that Redis. Every entry point resolves them the
same way (``recovery.broker``). With RabbitMQ as the broker, in a vhost of each test's
own on the local RabbitMQ, the pipeline stores results and failures in the tracker's
Redis and never a message there, and recovery resubmits into the queues the workers
declared, quorum queues included. A node that dies holding a message is found by the
in-flight sweep, and RabbitMQ's redelivery of that message is dropped as a stale
duplicate, as on Redis. The seed's flow, the worker-kill faults and the
concurrent runs run on RabbitMQ too (the ``broker`` fixture in their own files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from brokers import RabbitBroker, rabbitmqctl
from celery import Celery
from conftest import run_python
from faults.support import (
    FAST_ENV,
    TASK,
    Doc,
    Worker,
    fast_config,
    inflight_score,
    processed,
    record,
    wait_for,
    write_slow_html,
    write_text,
)

from recovery import ConfigError, DocumentRecoveryManager, FailedDocumentRecord, installed
from recovery.broker import default_broker_url, is_redis, queue_type

REPO = Path(__file__).resolve().parent.parent
AMQP = "amqp://guest:guest@127.0.0.1:5672/docs"
TRACKER = "redis://tracker-host:6379/3"
StartWorker = Callable[..., Worker]

#: Where each entry point sends tasks and keeps its records, printed as JSON.
ENTRY_POINTS = """
import celeryconfig, json
from tasks.app import app
from recovery import installed
from distributed_processor import DistributedProcessor
from recovery_system import DocumentRecoveryManager
seen = {"celeryconfig": [celeryconfig.broker_url, celeryconfig.result_backend],
        "app": [app.conf.broker_url, installed(app).redis_url]}
processor = DistributedProcessor()
seen["processor"] = [app.conf.broker_url, processor.redis_url]
manager = DocumentRecoveryManager()
seen["manager"] = [manager.app.conf.broker_url, manager.tracker.url]
seen["visibility"] = "visibility_timeout" in getattr(celeryconfig, "broker_transport_options", {})
print(json.dumps(seen))
"""


@pytest.mark.parametrize(
    ("broker_env", "broker"),
    [({"CELERY_BROKER_URL": AMQP}, AMQP), ({}, TRACKER)],
    ids=["rabbitmq", "zero-config"],
)
def test_every_entry_point_sends_to_the_broker_and_tracks_in_redis_url(
    tmp_path: Path, broker_env: dict[str, str], broker: str
) -> None:
    # Given REDIS_URL, and CELERY_BROKER_URL or not
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(REDIS_URL=TRACKER, PYTHONPATH=str(REPO), **broker_env)

    # When workers' config, the app, the processor and a manager resolve them
    done = run_python(["-c", ENTRY_POINTS], env, tmp_path)

    # Then tasks go to the broker (REDIS_URL when none is named), records and results
    # to REDIS_URL, and the visibility timeout is set only for a Redis broker
    seen = json.loads(done.stdout)
    assert seen.pop("visibility") is (broker == TRACKER)
    assert seen == {
        "celeryconfig": [broker, TRACKER],
        "app": [broker, TRACKER],
        "processor": [broker, TRACKER],
        "manager": [broker, TRACKER],
    }


def test_celery_b_names_the_broker_of_workers_and_beat(tmp_path: Path) -> None:
    # Given REDIS_URL only, and `celery -b amqp://...`
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env.update(REDIS_URL=TRACKER, PYTHONPATH=str(REPO))

    # When Celery reports the app's settings
    done = run_python(["-m", "celery", "-b", AMQP, "-A", "tasks", "report"], env, tmp_path)

    # Then the broker is RabbitMQ with RabbitMQ's settings, the backend stays on Redis
    assert "broker_url: 'amqp://guest:********@127.0.0.1:5672/docs'" in done.stdout
    assert f"result_backend: '{TRACKER}'" in done.stdout
    assert "worker_cancel_long_running_tasks_on_connection_loss: True" in done.stdout
    assert "visibility_timeout" not in done.stdout


def test_the_tracker_stays_on_redis_url_when_the_broker_is_another_redis(
    celery_app: Celery, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Redis broker of its own beside REDIS_URL
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker-host:6379/0")

    # Then the app sends there and tracks in REDIS_URL
    assert celery_app.conf.broker_url == "redis://broker-host:6379/0"
    assert installed(celery_app).redis_url == redis_url
    assert installed(celery_app).tracker.url == redis_url


def test_broker_settings_are_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", TRACKER)
    assert default_broker_url() == TRACKER
    assert default_broker_url("redis://given:6379/1") == "redis://given:6379/1"
    # a Redis Cluster tracker cannot be Celery's broker: it must be named
    with pytest.raises(ConfigError, match=r"CELERY_BROKER_URL.*Redis Cluster"):
        default_broker_url("redis+cluster://node:7000")
    monkeypatch.setenv("CELERY_BROKER_URL", AMQP)
    assert default_broker_url("redis://given:6379/1") == AMQP
    assert default_broker_url("redis+cluster://node:7000") == AMQP
    assert [is_redis(u) for u in (AMQP, TRACKER, "rediss://h", "sentinel://h:26379")] == [
        False,
        True,
        True,
        True,
    ]
    monkeypatch.setenv("CELERY_QUEUE_TYPE", "Quorum")
    assert queue_type() == "quorum"
    monkeypatch.setenv("CELERY_QUEUE_TYPE", "mirrored")
    with pytest.raises(ConfigError, match=r"CELERY_QUEUE_TYPE.*'mirrored'.*classic or quorum"):
        queue_type()


# --- on the local RabbitMQ ----------------------------------------------------------


def test_with_rabbitmq_results_and_failures_go_to_the_tracker_and_no_message_to_redis(
    rabbitmq: RabbitBroker,
    worker_process: StartWorker,
    doc_root: Path,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # Given a worker on RabbitMQ, a document and one not uploaded yet
    worker_process("w1", env=FAST_ENV)
    good = Doc(str(write_text(doc_root / "good.txt")))
    missing = Doc(str(doc_root / "missing.txt"))
    env = {**os.environ, **FAST_ENV, "DOCRECOVERY_SPOOL_DIR": str(tmp_path / "spool")}

    def docrecovery(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(REPO / "main.py"), *args]
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90
        )

    # When both are submitted with the CLI
    submitted = docrecovery("submit", good.path, missing.path, "--wait", "60")

    # Then the document's result and the other's failure are in the tracker's Redis,
    # the failure categorized by its cause, and no broker key is in that Redis
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    assert processed(redis_client, good)
    assert record(redis_client, missing.doc_id)["cat"] == "file_not_found"
    keys: list[str] = redis_client.keys("*")  # type: ignore[assignment]
    assert [k for k in keys if not k.startswith(("{docrecovery}", "celery-task-meta-"))] == []

    # And once the file is uploaded, `docrecovery recover` sends it through RabbitMQ
    write_text(Path(missing.path))
    recovered = docrecovery("recover")
    assert "1 resubmitted" in recovered.stdout, recovered.stdout + recovered.stderr
    wait_for(lambda: processed(redis_client, missing), 60, "the recovered document")
    wait_for(lambda: not record(redis_client, missing.doc_id), 30, "its record to be cleared")
    assert rabbitmq.idle()


def test_recovery_resubmits_into_quorum_queues_declared_as_the_workers_do(
    rabbitmq: RabbitBroker,
    worker_process: StartWorker,
    doc_root: Path,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given workers on quorum queues, and a failed document whose file is back
    monkeypatch.setenv("CELERY_QUEUE_TYPE", "quorum")
    worker_process("w1", env=FAST_ENV)
    doc = Doc(str(write_text(doc_root / "back.txt")), "retry")
    manager = DocumentRecoveryManager(redis_url, fast_config())
    try:
        failure = FailedDocumentRecord(
            doc.path,
            "t-1",
            "FileNotFoundError: gone",
            query=doc.query,
            args=doc.args,
            error_type="FileNotFoundError",
            error_category="file_not_found",
        )
        manager.tracker.store.record_failure(failure)

        # When a recovery run with no app of its own (a sender app) resubmits it
        summary = manager.run_batch(now=time.time() + 60)
    finally:
        manager.close()
        manager.app.close()

    # Then the queue RabbitMQ accepted it into is a quorum queue, and the worker ran it
    assert [item.doc_id for item in summary.resubmitted] == [doc.doc_id], summary
    queues = rabbitmqctl("list_queues", "-p", rabbitmq.vhost, "name", "type", "--no-table-headers")
    assert "documents\tquorum" in queues.splitlines()
    wait_for(lambda: processed(redis_client, doc), 60, "the resubmitted document")
    wait_for(lambda: not record(redis_client, doc.doc_id), 30, "its record to be cleared")


def test_a_node_killed_with_no_other_consumer_is_swept_and_its_redelivery_dropped_as_stale(
    rabbitmq: RabbitBroker,
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    # Given the only worker running a large document when its node is SIGKILLed:
    # RabbitMQ holds the message again, ready, with nobody to deliver it to
    env = {**FAST_ENV, "CELERY_TASK_TIME_LIMIT": "20"}
    first = worker_process("w1", env=env)
    doc = Doc(str(write_slow_html(doc_root / "large.html", 2.0)), "retry")
    task_id = str(celery_app.send_task(TASK, args=doc.args).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the large document to start")
    first.kill()
    wait_for(lambda: rabbitmq.waiting("documents") == 1, 30, "the message back in its queue")

    # When recovery runs after the run's deadline, then a new worker starts
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        summary = manager.run_batch(now=time.time() + 30)
    finally:
        manager.close()
    second = worker_process("w2", env=env)
    wait_for(lambda: processed(redis_client, doc), 60, "the document", lambda: second.log())
    wait_for(lambda: not record(redis_client, doc.doc_id), 30, "its record to be cleared")

    # Then the sweep recorded the lost run and recovery resubmitted it once; the
    # redelivered original was dropped as a stale duplicate, not run a second time
    assert summary.lost_runs_recorded == 1
    assert [item.doc_id for item in summary.resubmitted] == [doc.doc_id]
    assert f"dropping task {task_id}" in second.log()
    assert second.log().count("succeeded in") == 1
    wait_for(rabbitmq.idle, 30, "the queues to drain")


def test_a_worker_that_loses_rabbitmq_stops_its_run_instead_of_running_it_twice(
    rabbitmq: RabbitBroker,
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a worker running a large document
    worker = worker_process("w1", env=FAST_ENV)
    doc = Doc(str(write_slow_html(doc_root / "large.html", 4.0)), "retry")
    task_id = str(celery_app.send_task(TASK, args=doc.args).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the large document to start")

    # When RabbitMQ closes the worker's connection mid-run (and so requeues the message)
    rabbitmqctl("close_all_connections", "-p", rabbitmq.vhost, "test: connection lost")

    # Then the run is stopped; the redelivered message runs once more, counted as the
    # lost attempt it was, and the document is processed by that one run
    wait_for(lambda: processed(redis_client, doc), 60, "the document", worker.log)
    wait_for(lambda: not record(redis_client, doc.doc_id), 30, "its record to be cleared")
    wait_for(rabbitmq.idle, 30, "the queues to drain")
    log = worker.log()
    assert "recorded as worker_lost" in log
    assert log.count("succeeded in") == 1, log[-3000:]
