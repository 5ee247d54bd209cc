"""The hardening issue's scenarios, through real prefork workers.

Each test reproduces one reported failure with ``celery -A tasks worker`` processes
on the session's Redis and says in a comment what the code before the fix did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery

from faults.support import (
    FAST_ENV,
    KEYS,
    TASK,
    Doc,
    Worker,
    fast_config,
    inflight_calls,
    inflight_score,
    log_tail,
    record,
    stats,
    wait_for,
    wait_steady,
    write_slow_html,
    write_text,
)
from recovery.api import DocumentRecoveryManager

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]


# --- item 1: a malformed docrecovery header -----------------------------------------


@pytest.mark.parametrize("header", ["x", {"attempt": "abc"}])
def test_a_malformed_recovery_header_is_a_counted_failure_and_leaves_nothing_in_flight(
    header: object,
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = worker_process("w1", env=FAST_ENV)
    doc = Doc(str(doc_root / "missing.txt"), "q")

    # Given a document that already failed once
    celery_app.send_task(TASK, args=doc.args)
    wait_for(lambda: record(redis_client, doc.doc_id), 30, "the first failure", log_tail(worker))

    # When it fails again from a message with a malformed docrecovery header (before:
    # reading the header raised in the failure handler and in the check-in, so the
    # failure was never recorded and the in-flight entry stayed, holding the header,
    # to crash the lost-run sweep of every later recovery run)
    celery_app.send_task(TASK, args=doc.args, headers={"docrecovery": header})
    wait_steady(
        lambda: record(redis_client, doc.doc_id).get("failures") == "2",
        30,
        "the second failure",
        log_tail(worker),
    )

    # Then it is recorded as an ordinary, counted failure, not a recovery attempt
    fields = record(redis_client, doc.doc_id)
    assert (fields["state"], fields["retries"], fields.get("attempts")) == ("failed", "1", None)
    assert stats(redis_client).get("failed_recoveries", 0) == 0
    assert "malformed 'docrecovery' header" in worker.log()
    # And nothing is left in flight
    assert inflight_calls(redis_client) == {}

    # And once the file is uploaded, a recovery run after any in-flight deadline
    # completes and resubmits it
    write_text(Path(doc.path))
    time.sleep(1.5)
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        summary = manager.run_batch()
    finally:
        manager.close()
    assert summary["lost_runs_recorded"] == 0
    assert [s["doc_id"] for s in summary["resubmitted"]] == [doc.doc_id]


def test_a_run_with_a_malformed_header_whose_node_dies_is_swept_as_lost(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    # Given a worker whose runs count as lost two seconds after their deadline
    worker = worker_process("w1", env={**FAST_ENV, "DOCRECOVERY_RECOVERY_TIMEOUT": "1"})
    doc = Doc(str(write_slow_html(doc_root / "slow.html", 8)), "q")

    # When a run with a malformed header checks in and its whole node is SIGKILLed
    bad = {"docrecovery": {"attempt": "x"}}
    task_id = str(celery_app.send_task(TASK, args=doc.args, headers=bad).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the check-in", log_tail(worker))
    worker.kill()
    assert inflight_calls(redis_client)[task_id]["marker"] is None

    # Then a recovery run after its deadline records it as lost (before: the entry held
    # the raw header, and the sweep crashed on it in every run) as an ordinary counted
    # failure, and the run completes: it resubmits the document
    time.sleep(2.5)
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        summary = manager.run_batch()
    finally:
        manager.close()
    assert summary["lost_runs_recorded"] == 1
    assert [s["doc_id"] for s in summary["resubmitted"]] == [doc.doc_id]
    fields = record(redis_client, doc.doc_id)
    assert (fields["cat"], fields["retries"], fields.get("attempts")) == ("worker_lost", "0", "1")
    assert inflight_calls(redis_client) == {}
    assert redis_client.zscore(KEYS.inflight, task_id) is None


# --- item 4: a delete while the resubmission runs ------------------------------------


def test_a_document_deleted_while_its_resubmission_runs_stays_deleted_when_it_fails(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = worker_process("w1", env=FAST_ENV)
    doc = Doc(str(doc_root / "slow.html"), "q")
    # Given a document whose first run failed (not uploaded yet)
    celery_app.send_task(TASK, args=doc.args)
    wait_for(lambda: record(redis_client, doc.doc_id), 30, "the failure", log_tail(worker))
    # And once it is uploaded (8 MB of HTML: about 4 s of work), resubmitted by a run
    # with a 2 s time limit, so that the resubmission will fail
    write_slow_html(Path(doc.path), 8)
    manager = DocumentRecoveryManager(redis_url, fast_config(recovery_timeout=2), app=celery_app)
    try:
        [sent] = manager.run_batch()["resubmitted"]
        wait_for(
            lambda: record(redis_client, doc.doc_id).get("state") == "recovering",
            30,
            "the resubmission to start",
            log_tail(worker),
        )

        # When the operator deletes the document while the resubmission runs
        assert manager.delete([doc.doc_id]) == 1

        # Then, once the run fails (soft time limit), its failure is dropped and
        # counted (before: it was recorded as a new failure, retries reset to 0, and
        # the deleted document came back to be retried)
        wait_for(
            lambda: stats(redis_client).get("dropped_after_delete") == 1,
            30,
            "the failure to be dropped",
            log_tail(worker),
        )
        status = manager.status()
    finally:
        manager.close()
    assert record(redis_client, doc.doc_id) == {}
    assert (status["total_failed_documents"], status["corrupt"], status["in_recovery"]) == (0, 0, 0)
    assert inflight_calls(redis_client) == {}
    assert redis_client.zscore(KEYS.deleted, sent["task_id"]) is None
    assert "SoftTimeLimitExceeded" in worker.log() or "TimeLimitExceeded" in worker.log()
