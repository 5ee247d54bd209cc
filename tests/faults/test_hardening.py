"""The hardening issue's scenarios, through real prefork workers.

Each test reproduces one reported failure with ``celery -A tasks worker`` processes
on the session's Redis and says in a comment what the code before the fix did.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
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
    processed,
    record,
    stats,
    wait_for,
    wait_steady,
    write_slow_html,
    write_text,
)
from recovery.api import DocumentRecoveryManager
from recovery.records import FailedDocumentRecord

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
    assert summary.lost_runs_recorded == 0
    assert [s.doc_id for s in summary.resubmitted] == [doc.doc_id]


@pytest.mark.parametrize("time_limit", ["soon", {"seconds": 60}])
def test_a_message_with_a_malformed_time_limit_is_processed_and_its_failure_tracked(
    time_limit: object,
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a worker whose configured hard limit is 300 s
    worker = worker_process("w1", env={**FAST_ENV, "CELERY_TASK_TIME_LIMIT": "300"})
    good = Doc(str(write_text(doc_root / "good.txt")), "q")
    missing = Doc(str(doc_root / "missing.txt"), "q")

    # When a document that can be processed and one that fails (its file is missing)
    # come in messages whose timelimit header is garbage (["soon", null]): the prefork
    # pool only reads it once a limit expires, so the runs go ahead (before: float()
    # raised ValueError/TypeError at the check-in and again in the failure handler:
    # neither document was processed nor its failure recorded)
    for doc in (good, missing):
        celery_app.send_task(TASK, args=doc.args, time_limit=time_limit)

    # Then the first is processed, the second's failure recorded under the configured
    # limit, and the header is reported once a run
    wait_for(lambda: processed(redis_client, good), 30, "the good document", log_tail(worker))
    wait_steady(
        lambda: record(redis_client, missing.doc_id).get("state") == "failed",
        30,
        "the failure",
        log_tail(worker),
    )
    assert float(record(redis_client, missing.doc_id)["tlimit"]) == 300
    assert worker.log().count("ignoring its malformed 'timelimit' header") == 2
    assert inflight_calls(redis_client) == {}


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
    assert summary.lost_runs_recorded == 1
    assert [s.doc_id for s in summary.resubmitted] == [doc.doc_id]
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
        [sent] = manager.run_batch().resubmitted
        wait_for(
            lambda: inflight_score(redis_client, sent.task_id),
            30,
            "the resubmission to start",
            log_tail(worker),
        )
        # (also when the worker took the message before the run settled it)
        assert record(redis_client, doc.doc_id)["state"] == "recovering"

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
    # (the delete mark stays, spent, so a redelivery or a replay is dropped too)
    spent = redis_client.zscore(KEYS.deleted, sent.task_id)
    assert spent is not None
    assert spent < 0
    assert "SoftTimeLimitExceeded" in worker.log() or "TimeLimitExceeded" in worker.log()


# --- item 3: a host whose clock is two hours ahead -----------------------------------

FAKETIME = shutil.which("faketime")
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
needs_faketime = pytest.mark.skipif(
    FAKETIME is None or LIBFAKETIME is None,
    reason="Debian's faketime is not installed (apt-get install -y faketime)",
)
#: A recovery run as ``main.py --recover`` does it, printing its summary and its clock.
RUN = """
import json, os, time
from recovery.api import DocumentRecoveryManager
from recovery.config import RecoveryConfig
manager = DocumentRecoveryManager(os.environ["REDIS_URL"], RecoveryConfig.from_env())
print(json.dumps({"clock": time.time(), "summary": manager.run_batch().to_dict()}))
"""


@needs_faketime
def test_a_run_on_a_host_two_hours_ahead_neither_loses_a_running_task_nor_a_lease(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = worker_process("w1", env=FAST_ENV)
    # Given a document claimed by a run a moment ago (its lease: 5 minutes)
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    try:
        claimed = Doc(str(write_text(doc_root / "claimed.txt")))
        manager.tracker.store.record_failure(
            FailedDocumentRecord(claimed.path, "t-old", "boom", time.time() - 10, args=claimed.args)
        )
        assert [r.doc_id for r in manager.tracker.claims.claim_due(10).records] == [claimed.doc_id]
    finally:
        manager.close()
    # And a healthy task running a slow document (its deadline: minutes away)
    slow = Doc(str(write_slow_html(doc_root / "slow.html", 8)), "q")
    task_id = str(celery_app.send_task(TASK, args=slow.args).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the check-in", log_tail(worker))

    # When a recovery run starts on a host whose clock is two hours ahead (before: the
    # run measured deadlines and leases by its own clock, recorded the running task as
    # worker_lost — a counted retry — resubmitted it, and released the claim)
    assert FAKETIME is not None
    env = {**os.environ, **FAST_ENV, "REDIS_URL": redis_url}
    ran = subprocess.run(
        [FAKETIME, "-f", "+2h", sys.executable, "-c", RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["clock"] > time.time() + 7000, "faketime did not move the run's clock"
    summary = out["summary"]

    # Then the running task is not lost, the lease holds, nothing is counted or sent
    assert (summary["lost_runs_recorded"], summary["claims_returned"]) == (0, 0), summary
    assert summary["resubmitted"] == []
    assert record(redis_client, slow.doc_id) == {}
    assert record(redis_client, claimed.doc_id)["state"] == "claimed"
    assert stats(redis_client)["failures_recorded"] == 1
    # And the slow document is processed exactly once
    wait_steady(lambda: processed(redis_client, slow), 60, "the slow document", log_tail(worker))
    assert worker.log().count(f"[{task_id}] succeeded") == 1
    assert worker.log().count("succeeded in") == 1
    assert redis_client.llen("documents") == 0
    assert inflight_calls(redis_client) == {}


@needs_faketime
def test_a_worker_two_hours_ahead_records_failures_on_the_servers_clock(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a worker whose clock is two hours ahead (libfaketime, as faketime runs it)
    assert LIBFAKETIME is not None
    env = {**FAST_ENV, "LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+2h"}
    worker = worker_process("w1", env=env)
    logged = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", worker.log(), re.MULTILINE)
    assert logged, worker.log()[-2000:]
    ahead = datetime.strptime(logged[1], "%Y-%m-%d %H:%M:%S") - datetime.now()
    assert ahead.total_seconds() > 7000, "faketime did not move the worker's clock"

    # When it fails on a document
    doc = Doc(str(doc_root / "missing.txt"))
    before = time.time()
    celery_app.send_task(TASK, args=doc.args)
    fields = wait_for(lambda: record(redis_client, doc.doc_id), 30, "the failure", log_tail(worker))
    after = time.time()

    # Then the times stored are the server's, not the worker's (before: the worker's
    # own time.time(), two hours in the future, so the failure looked two hours fresher
    # and its backoff ran two hours longer)
    assert before - 1 <= float(fields["first"]) <= after + 1
    assert before - 1 <= float(fields["last"]) <= after + 1
    assert before - 1 <= float(redis_client.zscore(KEYS.failed, doc.doc_id) or 0) <= after + 1


# --- item 9: bounded records ---------------------------------------------------------


def test_five_megabytes_of_metadata_and_a_long_query_stay_out_of_redis(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = worker_process("w1", env=FAST_ENV)
    config = fast_config()
    # 5 MB that does not compress, and a 100 KB query
    metadata = {"blob": base64.b64encode(os.urandom(3_750_000)).decode(), "source": "upload"}
    query = "q" * 100_000
    limit = 64 * 1024  # MEMORY USAGE ... SAMPLES 0: every field, not an estimate

    # When a slow document with them runs (before: the in-flight entry held the
    # metadata twice, as metadata and inside args: a 10 MB hash field)
    slow = Doc(str(write_slow_html(doc_root / "slow.html", 4)), query)
    task_id = str(celery_app.send_task(TASK, args=[slow.path, query, metadata]).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the check-in", log_tail(worker))
    entry = inflight_calls(redis_client)[task_id]
    assert int(redis_client.memory_usage(KEYS.inflight_tasks, samples=0) or 0) < limit + len(query)
    assert "args" not in entry
    assert entry["nargs"] == 3
    assert entry["metadata"]["source"] == "upload"
    assert entry["metadata"]["docrecovery_cut"]["keys"] == ["blob"]

    # And a missing one with them fails (before: the record kept all 5 MB)
    missing = Doc(str(doc_root / "missing.txt"), query)
    celery_app.send_task(TASK, args=[missing.path, query, metadata])
    wait_for(lambda: record(redis_client, missing.doc_id), 30, "the failure", log_tail(worker))

    # Then the record stays small and says what was cut
    assert int(
        redis_client.memory_usage(KEYS.record(missing.doc_id), samples=0) or 0
    ) < limit + len(query)
    fields = record(redis_client, missing.doc_id)
    assert fields["meta"]["source"] == "upload"
    cut = fields["meta"]["docrecovery_cut"]
    assert cut["keys"] == ["blob"]
    assert cut["bytes"] > 5_000_000
    assert fields["query"] == query  # the whole query: it is part of the document's id
    # And the query is counted under a bounded name (before: a 100 KB field name in
    # each per-query hash)
    for key in (KEYS.by_query, KEYS.query_failures):
        [name] = [str(field) for field in redis_client.hkeys(key)]
        assert len(name) <= config.max_query_label_chars + 20
        assert name.startswith("q" * config.max_query_label_chars)
    # And taking the document out of tracking counts it out under the same name
    manager = DocumentRecoveryManager(redis_url, config, app=celery_app)
    try:
        assert manager.delete([missing.doc_id]) == 1
    finally:
        manager.close()
    assert redis_client.hgetall(KEYS.by_query) == {}


# --- item 12: an operator's cold shutdown ---------------------------------------------


def test_a_cold_shutdown_by_an_operator_releases_its_run_uncounted(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a worker busy with a large document
    env = {**FAST_ENV, "CELERY_VISIBILITY_TIMEOUT": "5"}
    doc = Doc(str(write_slow_html(doc_root / "big.html", 4)), "alpha")
    old = worker_process("w1", env=env)
    task_id = str(celery_app.send_task(TASK, args=doc.args).id)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the run to check in")

    # When an operator stops it cold (SIGQUIT: runs are abandoned, not finished)
    old.process.send_signal(signal.SIGQUIT)
    old.process.wait(30)

    # Then its run left flight as the worker went down (before: the entry stayed, and
    # the redelivery recorded a counted worker_lost failure against the document)
    assert inflight_score(redis_client, task_id) is None
    # And a new worker processes the redelivered message, nothing counted against it
    new = worker_process("w2", env=env)
    wait_for(lambda: processed(redis_client, doc), 60, "the redelivery", log_tail(new))
    assert stats(redis_client).get("failures_recorded", 0) == 0
    assert record(redis_client, doc.doc_id) == {}
