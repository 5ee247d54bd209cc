"""Workers die mid-batch: a pool child, then a whole node, are SIGKILLed.

A batch of 20 documents goes through real workers; some are missing at first and
uploaded later, one is a large document that is running when the kill comes. Each
scenario ends with the invariant: every document is processed or tracked, none is
lost, and none was resubmitted twice. Each runs with Redis and with RabbitMQ as the
broker (the tracker is the test's Redis either way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from brokers import Broker
from celery import Celery

from faults.support import (
    FAST_ENV,
    TASK,
    Doc,
    Worker,
    describe,
    fast_config,
    inflight_calls,
    inflight_score,
    kill_children,
    log_tail,
    make_batch,
    record,
    restore,
    resubmitted_ids,
    settled,
    take_census,
    wait_for,
    wait_steady,
)
from recovery.api import DocumentRecoveryManager

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]
MISSING = (5, 12, 17)


def submit_all(app: Celery, docs: list[Doc]) -> dict[Doc, str]:
    return {doc: str(app.send_task(TASK, args=doc.args).id) for doc in docs}


def test_a_child_killed_mid_batch_loses_no_document(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
    broker: Broker,
) -> None:
    # Given a batch of 20: one large document first, three not uploaded yet
    worker = worker_process("w1", env=FAST_ENV)
    docs = make_batch(doc_root, 20, slow=[0], missing=MISSING)
    missing = [docs[n] for n in MISSING]
    tasks = submit_all(celery_app, docs)

    # When the pool child running the large document is SIGKILLed
    wait_for(lambda: inflight_score(redis_client, tasks[docs[0]]), 30, "the large document")
    assert kill_children(worker)
    wait_steady(
        lambda: settled(redis_client, docs) and broker.idle(),
        60,
        "the batch to settle",
    )
    assert {record(redis_client, d.doc_id).get("cat") for d in missing} == {"file_not_found"}

    # And the missing documents are uploaded and recovery runs
    restore(missing)
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        summaries = [manager.run_batch()]
        wait_steady(
            lambda: settled(redis_client, docs) and broker.idle(),
            60,
            "the recovered documents",
        )
        summaries.append(manager.run_batch())
    finally:
        manager.close()

    # Then every document is processed, none lost, none resubmitted twice
    census = take_census(redis_client, "child SIGKILL", docs)
    assert (len(census.processed), census.lost) == (20, []), census.line()
    sent = resubmitted_ids(summaries)
    assert set(sent) == {d.doc_id for d in missing}, sent
    assert max(sent.values()) == 1, sent
    assert "recorded as worker_lost" in worker.log()


def test_a_node_killed_mid_batch_loses_no_document_once_a_new_worker_takes_over(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
    broker: Broker,
) -> None:
    # Given two workers on a batch of 20: two large documents first, three missing
    env = {**FAST_ENV, "CELERY_TASK_TIME_LIMIT": "20"}
    first = worker_process("w1", env=env)
    second = worker_process("w2", env=env)
    docs = make_batch(doc_root, 20, slow=[0, 1], missing=MISSING)
    missing = [docs[n] for n in MISSING]
    large = {docs[0].path, docs[1].path}
    submit_all(celery_app, docs)

    def first_node_on_a_large_document() -> tuple[str, str] | None:
        for task_id, call in inflight_calls(redis_client).items():
            if call["worker"].startswith("w1@") and call["path"] in large:
                return task_id, call["path"]
        return None

    # When the first node is SIGKILLed mid-task and a new worker starts
    killed, killed_path = wait_for(first_node_on_a_large_document, 30, "w1 to run a large document")
    first.kill()
    third = worker_process("w3", env=env)
    # Redis keeps the dead node's message until its visibility timeout: only recovery
    # finds that run. RabbitMQ redelivers it as soon as the node's connection closes,
    # and the next run of it records the lost attempt itself.
    stranded = [killed] if broker.kind == "redis" else []
    wait_steady(
        lambda: settled(redis_client, docs, running=stranded),
        60,
        "the survivors to finish the batch",
        lambda: describe(redis_client, docs) + log_tail(second, third)(),
    )
    assert list(inflight_calls(redis_client)) == stranded
    if not stranded:
        assert "recorded as worker_lost" in second.log() + third.log()

    # And recovery runs after the killed run's deadline, with the missing uploaded
    restore(missing)
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        later = time.time() + 30
        summaries = [manager.run_batch(now=later)]
        assert summaries[0].lost_runs_recorded == len(stranded)
        wait_steady(
            lambda: settled(redis_client, docs) and not broker.waiting("documents"),
            60,
            "the recovered documents",
            log_tail(second, third),
        )
        summaries.append(manager.run_batch(now=later + 1))
    finally:
        manager.close()

    # Then every document is processed, none lost, none resubmitted twice
    census = take_census(redis_client, "node SIGKILL", docs)
    assert (len(census.processed), census.lost) == (20, []), census.line()
    sent = resubmitted_ids(summaries)
    found_by_recovery = [d for d in docs if d.path == killed_path] if stranded else []
    assert set(sent) == {d.doc_id for d in [*missing, *found_by_recovery]}, sent
    assert max(sent.values()) == 1, sent
