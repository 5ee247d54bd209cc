"""Each root cause of a lost or looping document, made real and recovered (issue 4).

Real Redis, real ``celery -A tasks worker`` processes, real files and real signals:
a pool child or a whole node is SIGKILLed while a large HTML document is being
parsed, a one-second time limit cuts a run short, a size limit refuses a document.
The test process plays beat: it runs recovery itself with ``run_batch``, passing a
``now`` in the future where an in-flight deadline must have passed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from faults.support import (
    FAST_ENV,
    KEYS,
    TASK,
    UNACKED,
    Doc,
    Worker,
    body,
    fast_config,
    inflight_score,
    kill_children,
    log_tail,
    messages,
    processed,
    record,
    stats,
    wait_for,
    wait_unchanged,
    write_slow_html,
    write_text,
)

from recovery.api import DocumentRecoveryManager
from recovery.records import FailedDocumentRecord

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]
ManagerFactory = Callable[..., DocumentRecoveryManager]
HOUR = 3600.0


@pytest.fixture
def make_manager(redis_url: str, celery_app: Celery) -> Iterator[ManagerFactory]:
    """Recovery as beat would run it, on the test Redis, sending with the pipeline app."""
    made: list[DocumentRecoveryManager] = []

    def create(**settings: Any) -> DocumentRecoveryManager:
        manager = DocumentRecoveryManager(redis_url, fast_config(**settings), app=celery_app)
        made.append(manager)
        return manager

    yield create
    for manager in made:
        manager.close()


#: Megabytes of HTML that take several times a one-second limit to extract: the pool
#: enforces hard limits with about a second of slack, so a 1.5 s run may slip through.
SLOW_MB = 8


def submit(app: Celery, doc: Doc) -> str:
    return str(app.send_task(TASK, args=doc.args).id)


def succeeded_runs(worker: Worker, task_id: str) -> int:
    return len(re.findall(rf"{TASK}\[{task_id}\] succeeded", worker.log()))


# --- a killed pool child -------------------------------------------------------------


def test_a_child_killed_mid_task_is_tracked_as_worker_lost_and_the_document_is_processed(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a worker busy parsing a large document (large enough that the record of the
    # lost run lives a few seconds, while the redelivered run parses it again)
    worker = worker_process("w1", env=FAST_ENV)
    doc = Doc(str(write_slow_html(doc_root / "big.html", 6)), "alpha")
    task_id = submit(celery_app, doc)
    wait_for(lambda: inflight_score(redis_client, task_id), 30, "the run to check in")

    # When its pool child is SIGKILLed mid-task (as the OOM killer would)
    assert kill_children(worker)

    # Then the redelivered message finds the dead run and tracks it as worker_lost
    seen: dict[str, str] = {}

    def done() -> bool:
        fields = record(redis_client, doc.doc_id)
        if fields.get("cat"):
            seen.update(fields)
        return processed(redis_client, doc)

    wait_for(done, 60, "the document to be processed", log_tail(worker))
    assert (seen.get("cat"), seen.get("etype"), seen.get("task_id")) == (
        "worker_lost",
        "WorkerLost",
        task_id,
    ), seen
    assert seen["worker"].startswith("w1@")
    assert "recorded as worker_lost" in worker.log()
    # And processing it afterwards resolved it: nothing left tracked or in flight (the
    # result is stored inside the task, the record cleared just after, on task_success)
    wait_for(lambda: record(redis_client, doc.doc_id) == {}, 10, "the success to clear it")
    assert record(redis_client, doc.doc_id) == {}
    assert redis_client.zcard(KEYS.inflight) == 0
    counters = stats(redis_client)
    assert (counters.get("failures_recorded"), counters.get("resolved")) == (1, 1), counters


# --- a killed node ---------------------------------------------------------------------


def test_a_node_killed_mid_task_is_recovered_by_a_new_worker_and_its_redelivery_dropped(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    make_manager: ManagerFactory,
) -> None:
    env = {**FAST_ENV, "CELERY_VISIBILITY_TIMEOUT": "5"}
    doc = Doc(str(write_slow_html(doc_root / "big.html", 1)), "alpha")
    old = worker_process("w1", env=env)
    old_task = submit(celery_app, doc)
    wait_for(lambda: inflight_score(redis_client, old_task), 30, "the run to check in")

    # Given the whole node is SIGKILLed mid-task: no signal, no ack, no failure event
    old.kill()
    assert redis_client.hlen(UNACKED) == 1

    # When recovery runs after the run's in-flight deadline
    summary = make_manager().run_batch(now=time.time() + HOUR)

    # Then the run is recorded worker_lost and resubmitted as a new task
    assert summary.lost_runs_recorded == 1
    [sent] = summary.resubmitted
    assert sent.doc_id == doc.doc_id
    new_task = sent.task_id
    assert new_task != old_task
    fields = record(redis_client, doc.doc_id)
    assert (fields["cat"], fields["etype"], fields["state"]) == (
        "worker_lost",
        "WorkerLost",
        "sent",
    )
    assert redis_client.zscore(KEYS.superseded, old_task) is not None

    # And a new worker processes it, then drops the original message's redelivery
    new = worker_process("w2", env=env)
    wait_for(lambda: processed(redis_client, doc), 30, "the resubmission", log_tail(new))
    wait_for(
        lambda: f"dropping task {old_task}" in new.log(),
        40,
        "the visibility-timeout redelivery of the old message to be dropped",
        log_tail(new),
    )
    wait_for(lambda: not redis_client.hlen(UNACKED), 10, "the stale message to be acked")

    # So the document was processed exactly once more
    assert (succeeded_runs(new, new_task), succeeded_runs(new, old_task)) == (1, 0)
    counters = stats(redis_client)
    assert (counters.get("successful_recoveries"), counters.get("resolved")) == (1, 1), counters
    assert record(redis_client, doc.doc_id) == {}
    assert redis_client.zcard(KEYS.inflight) == 0


# --- a crash loop ----------------------------------------------------------------------


def test_a_document_that_kills_its_worker_every_time_stops_after_its_retries(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    make_manager: ManagerFactory,
) -> None:
    # Given a document whose every run dies with its pool child (dramatiq #213)
    worker = worker_process("w1", env=FAST_ENV)
    doc = Doc(str(write_slow_html(doc_root / "poison.html", 1)), "alpha")
    task_id = submit(celery_app, doc)
    kills = 0
    last_check_in: float | None = None

    def next_run_killed_or_stopped() -> bool:
        nonlocal kills, last_check_in
        check_in = inflight_score(redis_client, task_id)
        if record(redis_client, doc.doc_id).get("retries") == "3" and check_in is None:
            return True
        if check_in is not None and check_in != last_check_in:
            # A new run of the message checked in (a later deadline): kill it too.
            assert kill_children(worker)
            kills += 1
            last_check_in = check_in
        return False

    # When every run that starts is killed
    wait_for(next_run_killed_or_stopped, 90, "the crash loop to end", log_tail(worker))

    # Then after max_retry_count counted lost runs the message is dropped and acked;
    # the record stays, out of retries under this config (no run takes it again)
    fields = record(redis_client, doc.doc_id)
    assert (fields["state"], fields["cat"], fields["retries"]) == ("failed", "worker_lost", "3")
    assert kills == 4, f"{kills} runs killed; runs must stop after the 4th"
    assert make_manager(max_retry_count=3).tracker.reports.status()["exhausted"] == 1
    wait_for(lambda: not redis_client.hlen(UNACKED), 15, "the poison message to be acked")
    assert redis_client.llen("documents") == 0
    assert redis_client.zcard(KEYS.inflight) == 0
    # And the worker lives on and processes the next document
    good = Doc(str(write_text(doc_root / "good.txt")), "retry")
    submit(celery_app, good)
    wait_for(lambda: processed(redis_client, good), 30, "the next document", log_tail(worker))
    assert not processed(redis_client, doc)


# --- a timeout ---------------------------------------------------------------------------


def test_a_timed_out_document_is_recovered_with_a_doubled_time_limit(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    make_manager: ManagerFactory,
) -> None:
    # Given workers whose tasks may run one second, and a document that needs more
    env = {**FAST_ENV, "CELERY_TASK_TIME_LIMIT": "1", "DOCRECOVERY_MAX_RETRY_COUNT": "8"}
    worker = worker_process("w1", env=env)
    doc = Doc(str(write_slow_html(doc_root / "slow.html", SLOW_MB)), "alpha")
    submit(celery_app, doc)
    manager = make_manager(recovery_timeout=120, max_retry_count=8)

    def resting() -> dict[str, str]:
        """The record once no report is arriving for it any more."""
        wait_for(
            lambda: (
                processed(redis_client, doc)
                or record(redis_client, doc.doc_id).get("state") == "failed"
            ),
            60,
            "the run to end",
            log_tail(worker),
        )
        return wait_unchanged(lambda: record(redis_client, doc.doc_id), 10, "the record")

    first = resting()
    assert (first["cat"], first["etype"]) == ("timeout", "TimeLimitExceeded"), first

    # When recovery resubmits it until it goes through
    limits: list[float] = []
    while not processed(redis_client, doc):
        assert len(limits) < 5, f"still timing out with limits {limits}"
        [sent] = manager.run_batch().resubmitted
        limits.append(sent.time_limit)
        wait_for(
            lambda: record(redis_client, doc.doc_id).get("state") != "recovering",
            60,
            f"the resubmission with limit {limits[-1]}",
            log_tail(worker),
        )
        fields = resting()
        if fields:
            assert fields["cat"] == "timeout", fields
            assert fields["tlimit"] == str(limits[-1]), fields

    # Then each resubmission doubled the limit, and a larger one let it through
    print(f"[timeout] resubmitted with time limits {limits}")
    assert limits == [2**n for n in range(1, len(limits) + 1)], limits
    assert stats(redis_client).get("successful_recoveries") == 1
    assert record(redis_client, doc.doc_id) == {}


def test_a_hard_time_limit_is_recorded_once_with_the_worker_that_ran_it(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a one-second hard limit (no soft limit) and a document that needs more
    worker = worker_process("w1", env={**FAST_ENV, "CELERY_TASK_TIME_LIMIT": "1"})
    doc = Doc(str(write_slow_html(doc_root / "slow.html", SLOW_MB)), "alpha")
    submit(celery_app, doc)

    # When the pool kills the run at its hard limit
    wait_for(
        lambda: record(redis_client, doc.doc_id).get("state") == "failed",
        30,
        "the hard limit",
        log_tail(worker),
    )
    # (Celery 5.7 reports a hard limit from two places in the worker's main process)
    fields = wait_unchanged(lambda: record(redis_client, doc.doc_id), 10, "the record")

    # Then that one run is one failure, not a retry, and names its worker
    assert "Hard time limit (1s) exceeded" in worker.log()
    assert (fields["etype"], fields["failures"], fields["retries"]) == (
        "TimeLimitExceeded",
        "1",
        "0",
    ), fields
    assert fields.get("worker", "").startswith("w1@"), fields
    assert stats(redis_client).get("failures_recorded") == 1


def test_a_resubmission_after_a_one_second_limit_gets_more_than_one_second(
    redis_client: redis.Redis, make_manager: ManagerFactory
) -> None:
    # Given a document whose run was cut at a one-second hard limit
    manager = make_manager(recovery_timeout=120)
    manager.tracker.store.record_failure(
        FailedDocumentRecord(
            document_path="/docs/slow.html",
            task_id="t-1",
            error_message="TimeLimitExceeded(1)",
            args=["/docs/slow.html"],
            error_type="TimeLimitExceeded",
            error_category="timeout",
            time_limit=1,
        )
    )

    # When recovery resubmits it
    [sent] = manager.run_batch().resubmitted

    # Then the new run may work longer than one second before it is interrupted
    [message] = messages(redis_client, "documents")
    hard, soft = message["headers"]["timelimit"]
    assert (sent.time_limit, hard) == (2, 2)
    assert soft is None or soft > 1, f"soft limit {soft}s: no more time than the failed run"


# --- a memory failure -----------------------------------------------------------------------


def test_a_document_too_large_for_its_worker_is_resubmitted_to_the_highmem_queue(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    make_manager: ManagerFactory,
) -> None:
    # Given a worker on the usual queues that refuses documents over 1 kB
    small = worker_process(
        "small",
        env={**FAST_ENV, "DOCRECOVERY_MAX_BYTES": "1000"},
        args=("-P", "prefork", "-c", "1", "-X", "highmem"),
    )
    doc = Doc(str(write_text(doc_root / "large.txt", 2000)), "retry")
    submit(celery_app, doc)
    failed = wait_for(
        lambda: record(redis_client, doc.doc_id).get("state") == "failed",
        30,
        "the memory failure",
        log_tail(small),
    )
    assert failed
    fields = record(redis_client, doc.doc_id)
    assert (fields["cat"], fields["etype"]) == ("memory", "DocumentTooLarge")

    # When recovery runs
    [sent] = make_manager().run_batch().resubmitted

    # Then the document goes to the highmem queue, not back to the small worker
    assert sent.queue == "highmem"
    [message] = messages(redis_client, "highmem")
    assert message["headers"]["docrecovery"]["doc_id"] == doc.doc_id
    assert body(message)[0] == doc.args
    assert redis_client.llen("documents") == 0

    # And a worker on the highmem queue alone processes it
    big = worker_process(
        "big", env=FAST_ENV, args=("-P", "prefork", "-c", "1", "-X", "documents,recovery")
    )
    # (its result is stored by the task itself, its success counted just after)
    wait_for(
        lambda: (
            processed(redis_client, doc) and stats(redis_client).get("successful_recoveries") == 1
        ),
        30,
        "the highmem worker",
        log_tail(big),
    )
    assert f"{TASK}[{sent.task_id}] succeeded" in big.log()
    assert "succeeded" not in small.log()


# --- the circuit breaker ------------------------------------------------------------------


def test_failed_recoveries_open_the_breaker_which_sends_one_canary_whose_success_closes_it(
    worker_process: StartWorker,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    make_manager: ManagerFactory,
) -> None:
    breaker = {"breaker_window": 3, "breaker_threshold": 0.6, "max_retry_count": 5}
    env = {
        **FAST_ENV,
        "DOCRECOVERY_MAX_BYTES": "1000",
        "DOCRECOVERY_BREAKER_WINDOW": "3",
        "DOCRECOVERY_BREAKER_THRESHOLD": "0.6",
        "DOCRECOVERY_MAX_RETRY_COUNT": "5",
    }
    worker = worker_process("w1", env=env)
    paths = [write_text(doc_root / f"large-{n}.txt", 2000) for n in range(4)]
    docs = [Doc(str(path), "retry") for path in paths]
    for doc in docs:
        submit(celery_app, doc)
    manager = make_manager(**breaker)

    def all_failed(times: int) -> Callable[[], bool]:
        return lambda: all(
            record(redis_client, d.doc_id).get("failures") == str(times)
            and record(redis_client, d.doc_id).get("state") == "failed"
            for d in docs
        )

    wait_for(all_failed(1), 30, "the first memory failures", log_tail(worker))

    # Given recoveries of one category that keep failing (the cause is still there)
    first = manager.run_batch()
    assert len(first.resubmitted) == 4
    wait_for(all_failed(2), 30, "the failed recoveries", log_tail(worker))

    # Then the category's breaker is open
    state = manager.breakers()["memory"]
    assert (state["state"], state["recent"]) == ("open", "000"), state

    # When the cause is fixed and recovery runs again
    for path in paths:
        write_text(path, 20)
    second = manager.run_batch()

    # Then only one canary is sent; the others wait, reported as held by the breaker
    assert second.claimed == 4
    [canary] = second.resubmitted
    assert len(second.waiting) == 3
    assert all("circuit open for memory" in w.reason for w in second.waiting), second
    held = [d for d in docs if d.doc_id != canary.doc_id]
    assert {record(redis_client, d.doc_id)["state"] for d in held} == {"waiting"}

    # And the canary's success closes the breaker
    canary_doc = next(d for d in docs if d.doc_id == canary.doc_id)
    # (its success is reported after its result is stored: wait for the report, by
    # which its record is cleared, not for the result)
    wait_for(
        lambda: processed(redis_client, canary_doc) and not record(redis_client, canary.doc_id),
        30,
        "the canary's success",
        log_tail(worker),
    )
    state = manager.breakers()["memory"]
    assert (state["state"], state["recent"]) == ("closed", "001"), state
    assert not any(processed(redis_client, d) for d in held)
