"""The tracker against a real redis-server: records, indexes, aggregates, leases, retention,
garbage, status and analysis, and a clear error when Redis is away."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import trackers
from faults.support import Interrupted, interrupted_at, wait_for
from redis.connection import HiredisRespSerializer

from recovery.api import FailedDocumentsTracker
from recovery.calls import RunCall
from recovery.config import RecoveryConfig
from recovery.errors import (
    CorruptCounter,
    CorruptRecord,
    TrackerBusy,
    TrackerFailed,
    TrackerRefused,
    TrackerUnavailable,
)
from recovery.events import FailureEvent, Reporter
from recovery.keys import LEVEL
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_server import RedisServer
from recovery.spool import Spool
from recovery.store import Settlement, Tracker, redact, redact_text, scripts
from recovery.store.connection import Packer

HOUR = 3600.0
DAY = 86400.0
#: A fixed clock: every call takes ``now=`` (or a failure time), nothing sleeps.
T0 = 1_700_000_000.0

TrackerFactory = Callable[..., Tracker]


@pytest.fixture
def make_tracker(redis_url: str) -> Iterator[TrackerFactory]:
    """Factory of trackers on the test's Redis, without jitter unless asked; closed after."""
    with trackers(redis_url) as create:
        yield create


@pytest.fixture
def tracker(make_tracker: TrackerFactory) -> Tracker:
    return make_tracker()


def failure(path: str, at: float = T0, **fields: Any) -> FailedDocumentRecord:
    fields.setdefault("task_id", f"task-{path}-{at}")
    fields.setdefault("error_message", "RuntimeError: boom")
    return FailedDocumentRecord(document_path=path, failure_timestamp=at, **fields)


def zscore(client: redis.Redis, key: str, member: str) -> float | None:
    score = client.zscore(key, member)
    return None if score is None else float(score)


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    return client.hgetall(key)  # type: ignore[return-value]


class CountingConnection(redis.Connection):
    """A real connection that counts the requests it sends (one per round trip)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def counting_client(redis_url: str) -> redis.Redis:
    """A client of ``redis_url`` whose connections count the requests they send."""
    return redis.Redis.from_url(
        redis_url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        connection_class=CountingConnection,
    )


def round_trips(action: Callable[[], object]) -> int:
    CountingConnection.sent = 0
    action()
    return CountingConnection.sent


# --- recording failures ------------------------------------------------------------


def test_a_first_failure_creates_record_indexes_and_aggregates_in_one_call(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a tracker whose connection is open and whose scripts are loaded
    client = counting_client(redis_url)
    tracker = Tracker(redis_url, RecoveryConfig(retry_jitter=0.0), client=client)
    tracker.store.record_failure(failure("/docs/warmup.pdf"))
    record = failure("/docs/a.pdf", error_category="import", worker_id="celery@w1", query="revenue")

    # When a document fails for the first time, it takes one round trip
    outcome_box: list[Any] = []
    assert round_trips(lambda: outcome_box.append(tracker.store.record_failure(record))) == 1
    outcome = outcome_box[0]
    client.close()

    # Then the record, its indexes and the aggregates are all there
    k = tracker.keys
    assert (outcome.state, outcome.retry_count) == ("failed", 0)
    stored = hash_of(redis_client, k.record(record.doc_id))
    assert (stored["state"], stored["retries"], stored["cat"]) == ("failed", "0", "import")
    read = tracker.reports.get_record(record.doc_id)
    assert read is not None
    assert (read.document_path, read.next_retry_at) == ("/docs/a.pdf", T0 + HOUR)
    # the due index holds the fact (retry level 0, last attempt T0), not a verdict
    assert zscore(redis_client, k.due, record.doc_id) == T0
    assert zscore(redis_client, k.failed, record.doc_id) == T0
    assert zscore(redis_client, k.dead, record.doc_id) is None
    assert hash_of(redis_client, k.by_category) == {"other": "1", "import": "1"}
    assert hash_of(redis_client, k.by_worker) == {"celery@w1": "1"}
    # a document without a query is counted as such
    assert hash_of(redis_client, k.by_query) == {"(no query)": "1", "revenue": "1"}
    assert hash_of(redis_client, k.worker_failures) == {"celery@w1": "1"}
    assert redis_client.hget(k.stats, "failures_recorded") == "2"
    assert int(redis_client.ttl(k.record(record.doc_id))) > 0


def test_a_second_counted_failure_counts_a_retry_and_keeps_the_first_failure_time(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf", T0))

    outcome = tracker.store.record_failure(failure("/docs/a.pdf", T0 + 10 * HOUR), counted=True)

    record = tracker.reports.get_record(document_id("/docs/a.pdf"))
    assert record is not None
    assert outcome.retry_count == record.retry_count == 1
    assert record.failure_count == 2
    assert record.first_failure_timestamp == T0
    assert record.failure_timestamp == T0 + 10 * HOUR
    assert zscore(redis_client, tracker.keys.failed, record.doc_id) == T0
    assert hash_of(redis_client, tracker.keys.by_category) == {"other": "1"}


def test_an_uncounted_failure_does_not_use_up_a_retry(tracker: Tracker) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf", T0))

    outcome = tracker.store.record_failure(failure("/docs/a.pdf", T0 + HOUR), counted=False)

    record = tracker.reports.get_record(document_id("/docs/a.pdf"))
    assert record is not None
    assert outcome.retry_count == record.retry_count == 0
    assert record.failure_count == 2


def test_a_failure_that_changes_category_worker_and_query_moves_its_aggregates(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf", error_category="import", worker_id="w1"))

    tracker.store.record_failure(
        failure("/docs/a.pdf", T0 + HOUR, error_category="memory", worker_id="w2")
    )

    assert hash_of(redis_client, tracker.keys.by_category) == {"memory": "1"}
    assert hash_of(redis_client, tracker.keys.by_worker) == {"w2": "1"}
    assert hash_of(redis_client, tracker.keys.worker_failures) == {"w1": "1", "w2": "1"}


def test_backoff_grows_by_the_factor_per_retry_and_is_capped(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given 1 h backoff doubling per retry, capped at 5 h
    tracker = make_tracker(
        min_retry_interval_hours=1.0,
        backoff_factor=2.0,
        max_retry_interval_hours=5.0,
        max_retry_count=10,
    )
    doc = document_id("/docs/a.pdf")
    waits = []

    # When the document fails six times
    for n in range(6):
        at = T0 + n * DAY
        tracker.store.record_failure(failure("/docs/a.pdf", at))
        read = tracker.reports.get_record(doc)
        assert read is not None
        assert read.next_retry_at is not None
        # indexed by the fact: retry level n, last attempt at `at`
        assert zscore(redis_client, tracker.keys.due, doc) == n * LEVEL + at
        waits.append((read.next_retry_at - at) / HOUR)

    # Then each wait doubles until the cap
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_network_failures_back_off_from_the_shorter_network_interval(
    make_tracker: TrackerFactory,
) -> None:
    tracker = make_tracker(network_retry_interval_hours=0.05, backoff_factor=3.0)
    doc = document_id("/docs/n.pdf")

    tracker.store.record_failure(failure("/docs/n.pdf", T0, error_category="network"))
    first = tracker.reports.get_record(doc)
    tracker.store.record_failure(failure("/docs/n.pdf", T0 + 1, error_category="network"))
    second = tracker.reports.get_record(doc)

    assert first is not None
    assert second is not None
    assert first.next_retry_at == pytest.approx(T0 + 180.0)
    assert second.next_retry_at == pytest.approx(T0 + 1 + 540.0)
    # and a run claims it by the network lane's backoff, not the 1 h one
    assert tracker.claims.claim_due(10, now=T0 + 1 + 539).records == []
    assert [r.doc_id for r in tracker.claims.claim_due(10, now=T0 + 1 + 541).records] == [doc]


def test_jitter_only_ever_adds_to_the_backoff_within_its_bound(
    make_tracker: TrackerFactory,
) -> None:
    tracker = make_tracker(retry_jitter=0.1, min_retry_interval_hours=1.0)

    waits = set()
    for n in range(20):
        record = failure(f"/docs/{n}.pdf", T0)
        tracker.store.record_failure(record)
        read = tracker.reports.get_record(record.doc_id)
        assert read is not None
        assert read.next_retry_at is not None
        waits.add(read.next_retry_at - T0)

    # min_retry_interval_hours is a minimum: nothing is eligible before it
    assert all(HOUR <= wait <= 1.1 * HOUR for wait in waits)
    assert len(waits) > 1
    assert tracker.claims.claim_due(100, now=T0 + HOUR - 1).records == []


def test_a_document_out_of_retries_stays_tracked_and_is_not_eligible_under_that_maximum(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    tracker = make_tracker(max_retry_count=2)
    doc = document_id("/docs/a.pdf")

    states = [tracker.store.record_failure(failure("/docs/a.pdf", T0 + n)).state for n in range(3)]

    # A failure records facts: two counted retries, no verdict
    assert states == ["failed", "failed", "failed"]
    k = tracker.keys
    assert redis_client.hget(k.record(doc), "retries") == "2"
    assert zscore(redis_client, k.due, doc) == 2 * LEVEL + T0 + 2
    assert zscore(redis_client, k.failed, doc) == T0
    # A run with max_retry_count=2 neither takes it nor destroys it: it is exhausted
    status = tracker.reports.status(now=T0 + DAY)
    assert (status["dead"], status["eligible_for_recovery"], status["exhausted"]) == (0, 0, 1)
    assert status["total_failed_documents"] == 1
    assert tracker.claims.claim_due(10, now=T0 + DAY).records == []
    read = tracker.reports.get_record(doc)
    assert read is not None
    assert (read.state, read.next_retry_at) == ("failed", None)


def test_a_permanent_error_is_dead_at_once(tracker: Tracker, redis_client: redis.Redis) -> None:
    record = failure("/docs/virus.exe", error_category="permanent")

    outcome = tracker.store.record_failure(record)

    assert (outcome.state, outcome.retry_count) == ("dead", 0)
    assert zscore(redis_client, tracker.keys.dead, record.doc_id) == T0
    assert zscore(redis_client, tracker.keys.due, record.doc_id) is None
    # dead documents stay in the failed index: retention applies to them too
    assert zscore(redis_client, tracker.keys.failed, record.doc_id) == T0
    assert tracker.reports.status(now=T0)["recovery_metrics"]["dead_total"] == 1


def test_a_dead_record_can_still_be_read_and_listed(make_tracker: TrackerFactory) -> None:
    tracker = make_tracker()
    record = failure("/docs/a.pdf", worker_id="w1", error_category="permanent")
    tracker.store.record_failure(record)

    read = tracker.reports.get_record(record.doc_id)

    assert read is not None
    assert (read.state, read.next_retry_at, read.worker_id) == ("dead", None, "w1")
    assert [r.doc_id for r in tracker.reports.get_failed_documents()] == [record.doc_id]
    assert [r.doc_id for r in tracker.reports.get_failed_documents(index=tracker.keys.dead)] == [
        record.doc_id
    ]


def test_a_new_failure_keeps_the_recovery_attempts_counted_so_far(
    tracker: Tracker,
) -> None:
    # Given a document resubmitted once by recovery (attempts = 1)
    record = failure("/docs/a.pdf", T0)
    tracker.store.record_failure(record)
    claim = tracker.claims.claim_due(10, now=T0 + 2 * HOUR)
    tracker.claims.settle(
        [Settlement(record.doc_id, "sent", "recovery-task-1")], token=claim.token, now=T0 + 2 * HOUR
    )
    before = tracker.reports.get_record(record.doc_id)
    assert claim.records
    assert before is not None
    assert before.recovery_attempts == 1

    # When that recovery run fails, reported as the worker's signal handler builds it
    # (a fresh record from the failed task: recovery_attempts=0)
    tracker.store.record_failure(
        failure("/docs/a.pdf", T0 + 3 * HOUR, task_id="recovery-task-1"), recovery_attempt=True
    )

    # Then the record still knows it was attempted once, so the next resubmission is
    # attempt 2 (bug: record_failure.lua DELs the hash and writes the new fields, so
    # `attempts` is reset to 0 on every failure)
    after = tracker.reports.get_record(record.doc_id)
    assert after is not None
    assert after.retry_count == 1
    assert after.recovery_attempts == 1


def test_a_documents_history_holds_each_failure_and_resubmission_in_order(
    tracker: Tracker,
) -> None:
    # Given a document that failed on w1, was resubmitted, and failed again on w2
    record = failure("/docs/h.pdf", T0, worker_id="w1", error_category="timeout", time_limit=300)
    tracker.store.record_failure(record)
    claim = tracker.claims.claim_due(10, now=T0 + 2 * HOUR)
    tracker.claims.settle(
        [Settlement(record.doc_id, "sent", "recovery-1")], token=claim.token, now=T0 + 2 * HOUR
    )
    tracker.store.record_failure(
        failure("/docs/h.pdf", T0 + 3 * HOUR, task_id="recovery-1", worker_id="w2"),
        recovery_attempt=True,
    )

    # Then its history tells each attempt: when, which task, where, why, its limit
    stored = tracker.reports.get_record(record.doc_id)
    assert stored is not None
    assert [(a.kind, a.task_id, a.worker, a.category) for a in stored.attempts] == [
        ("failed", record.task_id, "w1", "timeout"),
        ("resubmitted", "recovery-1", "", ""),
        ("failed", "recovery-1", "w2", "other"),
    ]
    assert stored.attempts[0].time_limit == 300
    assert [a.at for a in stored.attempts] == [T0, T0 + 2 * HOUR, T0 + 3 * HOUR]


def test_a_documents_history_keeps_its_last_twenty_attempts(tracker: Tracker) -> None:
    for n in range(25):
        tracker.store.record_failure(failure("/docs/many.pdf", T0 + n, task_id=f"t{n}"))

    stored = tracker.reports.get_record(document_id("/docs/many.pdf"))
    assert stored is not None
    assert [a.task_id for a in stored.attempts] == [f"t{n}" for n in range(5, 25)]


def test_a_tab_or_newline_in_a_worker_name_does_not_split_a_history_line(
    tracker: Tracker,
) -> None:
    # Given failures reported by a worker whose name holds the history's separators
    for n in range(2):
        tracker.store.record_failure(
            failure("/docs/odd.pdf", T0 + n, task_id=f"t{n}", worker_id="w\t1\nx")
        )

    # Then each failure is one attempt, the name's separators turned to spaces
    stored = tracker.reports.get_record(document_id("/docs/odd.pdf"))
    assert stored is not None
    assert [(a.task_id, a.worker) for a in stored.attempts] == [("t0", "w 1 x"), ("t1", "w 1 x")]


def test_an_undecodable_value_at_a_record_key_is_replaced_with_a_warning(
    tracker: Tracker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    record = failure("/docs/a.pdf")
    redis_client.set(tracker.keys.record(record.doc_id), "garbage")

    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        outcome = tracker.store.record_failure(record)

    assert outcome.replaced_corrupt
    assert "replaced an undecodable value" in caplog.text
    assert redis_client.type(tracker.keys.record(record.doc_id)) == "hash"


# --- resolving ---------------------------------------------------------------------


def test_resolve_removes_the_record_every_index_entry_and_its_aggregates(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given two failed documents of one category, worker and query
    a = failure("/docs/a.pdf", error_category="import", worker_id="w1", query="q")
    b = failure("/docs/b.pdf", error_category="import", worker_id="w1", query="q")
    tracker.store.record_failure(a)
    tracker.store.record_failure(b)
    k = tracker.keys

    # When the first is processed
    done = tracker.store.resolve(a.doc_id, worker="w1", query="q", now=T0 + 60)
    took = done.recovery_seconds

    # Then its record and every index entry are gone, the counts drop by one
    assert took is None
    assert redis_client.exists(k.record(a.doc_id)) == 0
    for index in (k.due, k.failed, k.claimed, k.dead, k.waiting, k.imports):
        assert zscore(redis_client, index, a.doc_id) is None
    assert hash_of(redis_client, k.by_category) == {"import": "1"}
    assert hash_of(redis_client, k.by_worker) == {"w1": "1"}
    assert hash_of(redis_client, k.by_query) == {"q": "1"}

    # And when the second is, the aggregate fields are dropped, not left at 0
    tracker.store.resolve(b.doc_id, worker="w1", query="q", now=T0 + 60)
    assert hash_of(redis_client, k.by_category) == {}
    assert hash_of(redis_client, k.by_worker) == {}
    assert hash_of(redis_client, k.by_query) == {}
    # two failures and two successes ran on w1
    assert hash_of(redis_client, k.worker_failures) == {"w1": "2"}
    assert hash_of(redis_client, k.worker_successes) == {"w1": "2"}
    stats = tracker.reports.status(now=T0)["recovery_metrics"]
    assert (stats["resolved"], stats["successful_recoveries"]) == (2, 0)
    assert stats["total_failed_documents"] == 0


def test_a_query_and_a_worker_named_0_are_kept_and_counted_out_when_resolved(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a failure whose query and worker are both "0"
    record = failure("/docs/zero.pdf", query="0", worker_id="0")
    tracker.store.record_failure(record)

    # Then its record keeps both, so it reads back under the id they make
    stored = tracker.reports.get_record(record.doc_id)
    assert stored is not None
    assert (stored.query, stored.worker_id, stored.doc_id) == ("0", "0", record.doc_id)
    assert stored.args == record.args
    claim = tracker.claims.claim_due(10, now=T0 + DAY)
    assert [r.doc_id for r in claim.records] == [record.doc_id]

    # And when it is resolved, nothing stays counted under "0"
    tracker.store.resolve(record.doc_id, worker="0", query="0", now=T0 + DAY)
    k = tracker.keys
    assert hash_of(redis_client, k.by_worker) == {}
    assert hash_of(redis_client, k.by_query) == {}


def test_a_success_replayed_after_a_newer_failure_of_another_run_leaves_it_tracked(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a document whose run task-2 failed at T0 + 10, recorded live
    record = failure("/docs/a.pdf", T0 + 10, task_id="task-2")
    tracker.store.record_failure(record)

    # When a success of an earlier run, task-1 at T0, is replayed from a host's spool
    took = tracker.store.resolve(record.doc_id, worker="w1", task_id="task-1", now=T0)

    # Then the newer failure stands: still tracked and due; the success counts for
    # its worker only
    assert not took.tracked
    assert redis_client.zscore(tracker.keys.due, record.doc_id) is not None
    assert hash_of(redis_client, tracker.keys.worker_successes) == {"w1": "1"}
    # And a success of task-2 itself, or of a later run, still resolves it
    assert tracker.store.resolve(record.doc_id, task_id="task-3", now=T0 + 20).tracked


def test_a_replayed_success_applied_again_changes_nothing_not_even_a_later_run(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a tracked document whose run task-1's success was replayed from a spool,
    # and a redelivery of task-1 that has checked in since
    record = failure("/docs/a.pdf", T0, task_id="task-1")
    tracker.store.record_failure(record)
    report = partial(
        tracker.store.resolve, record.doc_id, worker="w1", task_id="task-1", now=T0 + 10, event="e1"
    )
    assert report().tracked
    call = RunCall("task-1", "tasks.process_document", "/docs/a.pdf")
    assert tracker.store.begin(record.doc_id, call, 100, T0 + 20)[0] == "run"

    # When the same report is applied again (a replay cut off after Redis applied it)
    again = report()

    # Then it is a duplicate: its run counted once, the redelivery still in flight
    assert (again.tracked, again.duplicate) == (False, True)
    assert hash_of(redis_client, tracker.keys.worker_successes) == {"w1": "1"}
    assert redis_client.zscore(tracker.keys.inflight, "task-1") is not None


def test_a_failure_sent_again_after_its_reply_was_lost_counts_once(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a document that failed once (the failure script is loaded)
    tracker.store.record_failure(failure("/docs/a.pdf", T0, worker_id="w1"))

    # When its next failure, reported with no event id (as the Python API's
    # track_failure reports one), is applied and the connection drops before the reply
    # is read, so redis-py sends it again
    again = failure("/docs/a.pdf", T0 + HOUR, worker_id="w1")
    with interrupted_at("parse_response", redis.ConnectionError, within="record_failure"):
        outcome = tracker.store.record_failure(again)

    # Then it counts once (bug: a retry the document never had was used up, and its
    # failure counted twice everywhere)
    assert outcome.retry_count == 1
    record = tracker.reports.get_record(again.doc_id)
    assert record is not None
    assert (record.retry_count, record.failure_count, len(record.attempts)) == (1, 2, 2)
    assert hash_of(redis_client, tracker.keys.worker_failures) == {"w1": "2"}
    assert redis_client.hget(tracker.keys.stats, "failures_recorded") == "2"


def test_a_replayed_failure_and_success_applied_again_leave_the_document_resolved(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a spool's failure of a document and its later success, both replayed
    record = failure("/docs/a.pdf", T0, task_id="task-1")
    fail = partial(tracker.store.record_failure, record, event="f1")
    succeed = partial(
        tracker.store.resolve, record.doc_id, worker="w1", task_id="task-2", now=T0 + 10, event="s1"
    )
    assert fail().state == "failed"
    assert succeed().tracked

    # When the same replay is applied again (its file put back whole): the failure's
    # event id went with the record the success removed, so it is recorded again
    fail()
    again = succeed()

    # Then the success, a duplicate, still resolves it, counting nothing twice (bug:
    # the document stayed tracked as failed, and a run resent a processed document)
    assert again.duplicate
    assert tracker.reports.get_record(record.doc_id) is None
    assert redis_client.zscore(tracker.keys.due, record.doc_id) is None
    assert hash_of(redis_client, tracker.keys.worker_successes) == {"w1": "1"}
    assert redis_client.hget(tracker.keys.stats, "resolved") == "1"


def test_resolving_a_recovery_attempt_counts_a_success_and_its_duration(
    tracker: Tracker,
) -> None:
    record = failure("/docs/a.pdf", T0)
    tracker.store.record_failure(record)
    claim = tracker.claims.claim_due(10, now=T0 + 2 * HOUR)
    tracker.claims.settle(
        [Settlement(record.doc_id, "sent", "new-task")], token=claim.token, now=T0 + 2 * HOUR
    )

    took = tracker.store.resolve(
        record.doc_id, recovery_attempt=True, now=T0 + 2 * HOUR + 42
    ).recovery_seconds

    assert took == pytest.approx(42.0)
    metrics = tracker.reports.status(now=T0 + 3 * HOUR)["recovery_metrics"]
    assert metrics["successful_recoveries"] == 1
    assert metrics["average_recovery_time"] == pytest.approx(42.0)
    assert metrics["recovery_success_rate"] == 1.0


def test_resolving_a_claimed_document_outside_recovery_counts_no_recovery(
    tracker: Tracker,
) -> None:
    # Given a document resubmitted by recovery that the pipeline then processed on its
    # own (a user resubmitted it by hand: no docrecovery header)
    record = failure("/docs/a.pdf", T0)
    tracker.store.record_failure(record)
    claim = tracker.claims.claim_due(10, now=T0 + 2 * HOUR)
    tracker.claims.settle(
        [Settlement(record.doc_id, "sent", "new-task")], token=claim.token, now=T0 + 2 * HOUR
    )

    took = tracker.store.resolve(
        record.doc_id, recovery_attempt=False, now=T0 + 3 * HOUR
    ).recovery_seconds

    # Then it is no longer tracked, but no recovery success or time is counted
    metrics = tracker.reports.status(now=T0 + 3 * HOUR)["recovery_metrics"]
    assert took is None
    assert tracker.reports.get_record(record.doc_id) is None
    assert (metrics["resolved"], metrics["successful_recoveries"]) == (1, 0)
    assert metrics["average_recovery_time"] == 0.0


def test_resolving_a_document_that_is_not_tracked_only_counts_the_run(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    took = tracker.store.resolve(
        document_id("/docs/fine.pdf"), worker="w1", query="q", now=T0
    ).recovery_seconds

    assert took is None
    assert hash_of(redis_client, tracker.keys.worker_successes) == {"w1": "1"}
    assert hash_of(redis_client, tracker.keys.query_successes) == {"q": "1"}
    assert redis_client.hget(tracker.keys.stats, "resolved") is None


# --- claiming, settling, leases ----------------------------------------------------


def seed_due(tracker: Tracker, due: int, future: int = 0) -> list[str]:
    """``due`` documents failed at ``T0 + n`` (due an hour later) and ``future`` failed
    a day later."""
    ids = []
    for n in range(due):
        record = failure(f"/docs/due-{n}.pdf", T0 + n)
        tracker.store.record_failure(record)
        ids.append(record.doc_id)
    for n in range(future):
        tracker.store.record_failure(failure(f"/docs/later-{n}.pdf", T0 + DAY))
    return ids


def test_claim_returns_at_most_the_batch_and_only_due_documents(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given 5 documents due and 2 due only tomorrow
    ids = seed_due(tracker, due=5, future=2)
    now = T0 + 2 * HOUR

    # When a run claims a batch of 3
    claim = tracker.claims.claim_due(3, now=now)

    # Then it gets the 3 that were due first, each claimed with a lease
    k = tracker.keys
    lease = now + tracker.config.claim_lease_seconds
    assert [r.doc_id for r in claim.records] == ids[:3]
    for record in claim.records:
        assert record.state == "claimed"
        assert record.last_recovery_at == now
        assert zscore(redis_client, k.claimed, record.doc_id) == lease
        assert zscore(redis_client, k.due, record.doc_id) is None
    assert int(redis_client.zcard(k.due)) == 4
    assert (claim.corrupt, claim.undecodable) == ([], [])


def test_claiming_a_batch_and_reading_status_cost_a_fixed_number_of_round_trips(
    redis_url: str,
) -> None:
    client = counting_client(redis_url)
    tracker = Tracker(redis_url, RecoveryConfig(retry_jitter=0.0), client=client)
    try:
        seed_due(tracker, due=60)
        # each call loads its scripts first, as any earlier one in the process would
        tracker.claims.claim_due(1, now=T0 + 2 * HOUR)
        tracker.reports.status(now=T0)
        tracker.reports.analysis(now=T0)

        # one read-only script for the candidates, one script call to take them all
        assert round_trips(lambda: tracker.claims.claim_due(50, now=T0 + 2 * HOUR)) == 2
        # one pipeline, whatever the number of records
        assert round_trips(lambda: tracker.reports.status(now=T0)) == 1
        assert round_trips(lambda: tracker.reports.analysis(now=T0)) == 1
    finally:
        client.close()


def test_claim_never_returns_a_document_twice(tracker: Tracker, redis_client: redis.Redis) -> None:
    ids = seed_due(tracker, due=5, future=2)
    now = T0 + 2 * HOUR

    first = tracker.claims.claim_due(10, now=now)
    second = tracker.claims.claim_due(10, now=now)

    assert sorted(r.doc_id for r in first.records) == sorted(ids)
    assert second.records == []
    assert int(redis_client.zcard(tracker.keys.due)) == 2
    assert tracker.reports.status(now=now)["in_recovery"] == 5


def test_a_claim_sent_again_after_its_reply_was_lost_answers_what_it_took(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given three due documents, a fourth whose record is no hash, and a dead one, the
    # claim script loaded (as by any earlier run)
    *ids, garbage = seed_due(tracker, due=4)
    redis_client.set(tracker.keys.record(garbage), "not a hash")
    dead = failure("/docs/corrupt.pdf", error_category="permanent")
    tracker.store.record_failure(dead)
    redis_client.script_load(tracker.connection.scripts.claim.source)
    now = T0 + 2 * HOUR

    # When a run's claim, then an operator's retry of the dead one, is applied and the
    # connection drops before the reply is read, so redis-py sends it again
    with interrupted_at("parse_response", redis.ConnectionError, within="_claim"):
        batch = tracker.claims.claim_due(10, now=now)
    with interrupted_at("parse_response", redis.ConnectionError, within="_claim"):
        retry = tracker.claims.claim_ids([dead.doc_id], now=now)

    # Then each gets what it took (bug: the second call found them taken and answered
    # none, so nobody sent them, and they stayed claimed until the lease ran out)
    assert sorted(r.doc_id for r in batch.records) == sorted(ids)
    assert [r.doc_id for r in retry.records] == [dead.doc_id]
    assert {r.state for r in batch.records + retry.records} == {"claimed"}
    assert redis_client.zrange(tracker.keys.corrupt, 0, -1) == [garbage]
    # And each settles what it took
    sent = [Settlement(doc, "sent", f"new-{doc}") for doc in ids]
    assert tracker.claims.settle(sent, token=batch.token, now=now) == 3
    again = [Settlement(dead.doc_id, "sent", "manual")]
    assert tracker.claims.settle(again, token=retry.token, now=now) == 1
    assert tracker.reports.status(now=now)["recovery_metrics"]["recovery_attempts"] == 4


def test_a_run_lock_taken_again_after_its_reply_was_lost_is_held_and_released(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given a tracker and another that starts a run while the first holds the lock
    tracker, other = make_tracker(), make_tracker()

    # When the first takes the run lock and the connection drops before the reply is
    # read, so redis-py sends the SET NX again and it finds the key already set
    with (
        interrupted_at("parse_response", redis.ConnectionError, within="exclusive"),
        tracker.exclusive(30) as acquired,
    ):
        # Then it holds the lock (bug: it was skipped as if another run held it, and
        # the lock it did hold stayed until it expired, skipping every run meanwhile)
        assert acquired
        # And another run is still skipped
        with other.exclusive(30) as also:
            assert not also
    # And the lock is released when the run ends
    assert not redis_client.exists(tracker.keys.run_lock)


def test_the_runs_maximum_decides_a_lower_one_destroys_nothing_a_higher_one_revives(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given a document with 2 retries used under max_retry_count=5
    generous = make_tracker(max_retry_count=5)
    for n in range(3):
        generous.store.record_failure(failure("/docs/a.pdf", T0 + n))
    doc = document_id("/docs/a.pdf")

    # When a run configured with max_retry_count=2 claims
    strict = make_tracker(max_retry_count=2)
    claim = strict.claims.claim_due(10, now=T0 + DAY)

    # Then it is not resubmitted, and nothing about it changed
    assert claim.records == []
    assert zscore(redis_client, strict.keys.dead, doc) is None
    assert redis_client.hget(strict.keys.record(doc), "state") == "failed"
    assert strict.reports.status(now=T0 + DAY)["exhausted"] == 1
    # While a run with max_retry_count=5 takes it
    assert [r.doc_id for r in generous.claims.claim_due(10, now=T0 + DAY).records] == [doc]


def test_settling_sent_marks_it_sent_and_counts_an_attempt(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    ids = seed_due(tracker, due=2)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)

    sent = tracker.claims.settle(
        [Settlement(doc, "sent", f"new-{doc}") for doc in ids], token=claim.token, now=now + 5
    )

    assert sent == 2
    for doc in ids:
        record = tracker.reports.get_record(doc)
        assert record is not None
        assert (record.state, record.recovery_attempts, record.task_id) == (
            "sent",
            1,
            f"new-{doc}",
        )
        # held until the new task checks in, or the resend bound passes
        until = now + 5 + tracker.config.resend_after_hours * HOUR
        assert zscore(redis_client, tracker.keys.claimed, doc) == until
    metrics = tracker.reports.status(now=now)["recovery_metrics"]
    assert metrics["recovery_attempts"] == 2
    assert metrics["recovery_runs"] == 1
    assert metrics["last_recovery_run"] == now + 5


def test_a_settle_applied_again_under_its_claim_changes_and_counts_nothing_twice(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a run that settled its claim: two sent, one given back, one held
    ids = seed_due(tracker, due=4)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    outcomes = [
        Settlement(ids[0], "sent", "new-0"),
        Settlement(ids[1], "sent", "new-1"),
        Settlement(ids[2], "release", "broker down"),
        Settlement(ids[3], "wait", "file missing"),
    ]
    assert tracker.claims.settle(outcomes, token=claim.token, now=now) == 2
    records = {doc: hash_of(redis_client, tracker.keys.record(doc)) for doc in ids}

    # When it is applied again, its reply lost (redis-py's retry on a dropped
    # connection), then its sent part once more (the run's guard, cut off as it settled)
    again = tracker.claims.settle(outcomes, token=claim.token, now=now + 1)
    tracker.claims.settle(outcomes[:2], token=claim.token, now=now + 2)

    # Then it answers as it did, and the run and its resubmissions count once (bug:
    # each settle counted its sent items and the run again, 6 attempts in 3 runs)
    assert again == 2
    assert {doc: hash_of(redis_client, tracker.keys.record(doc)) for doc in ids} == records
    metrics = tracker.reports.status(now=now)["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["recovery_runs"]) == (2, 1)
    assert metrics["last_recovery_run"] == now
    assert sum(b.resubmitted for b in tracker.reports.recoveries_over_time()) == 2


def test_settling_a_resubmission_whose_task_already_reported_counts_its_attempt_once(
    tracker: Tracker,
) -> None:
    # Given a claimed document whose resubmission a worker took at once and failed
    # before the run settled: its report carries the message's attempt, 1
    record = failure("/docs/gone.pdf", T0)
    tracker.store.record_failure(record)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    report = failure("/docs/gone.pdf", now + 1, task_id="new-task", recovery_attempts=1)
    tracker.store.record_failure(report, recovery_attempt=True, now=now + 1)

    # When the run settles it as sent
    sent = tracker.claims.settle(
        [Settlement(record.doc_id, "sent", "new-task")], token=claim.token, now=now + 2
    )

    # Then the attempt is counted once, so the next resubmission is attempt 2 (bug:
    # settle counted it again, and the next one said attempt 3)
    assert sent == 1
    read = tracker.reports.get_record(record.doc_id)
    assert read is not None
    assert (read.state, read.retry_count, read.recovery_attempts) == ("failed", 1, 1)


def test_settling_release_puts_the_document_back_to_due(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    [doc] = seed_due(tracker, due=1)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)

    tracker.claims.settle([Settlement(doc, "release", "broker down")], token=claim.token, now=now)

    # Then it is back where it was, nothing used up: the next run may take it at once
    record = tracker.reports.get_record(doc)
    assert record is not None
    assert (record.state, record.state_reason, record.retry_count) == ("failed", "broker down", 0)
    assert zscore(redis_client, tracker.keys.due, doc) == T0
    assert zscore(redis_client, tracker.keys.claimed, doc) is None
    assert tracker.claims.claim_due(10, now=now + 1).records[0].doc_id == doc


def test_a_run_that_outlived_its_lease_changes_nothing_another_run_has_claimed_since(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a document claimed by a run that outlives its lease, then claimed again by
    # another run once the lease ran out
    [doc] = seed_due(tracker, due=1)
    now = T0 + 2 * HOUR
    lease = tracker.config.claim_lease_seconds
    late = tracker.claims.claim_due(10, now=now)
    assert tracker.claims.release_expired(now=now + lease) == [doc]
    other = tracker.claims.claim_due(10, now=now + lease)
    assert [r.doc_id for r in other.records] == [doc]
    before = hash_of(redis_client, tracker.keys.record(doc))

    # When the late run settles it as sent, then gives it back
    tracker.claims.settle([Settlement(doc, "sent", "late-task")], token=late.token, now=now + lease)
    assert tracker.claims.release([doc], token=late.token, now=now + lease) == []

    # Then it is still the other run's claim, unchanged (bug: the late settle marked it
    # sent as its own task, and the give-back put it in due while the other sent it)
    assert hash_of(redis_client, tracker.keys.record(doc)) == before
    assert zscore(redis_client, tracker.keys.claimed, doc) == now + 2 * lease
    # And the other run settles it as its own
    tracker.claims.settle([Settlement(doc, "sent", "new-task")], token=other.token, now=now + lease)
    stored = hash_of(redis_client, tracker.keys.record(doc))
    assert (stored["state"], stored["task_id"]) == ("sent", "new-task")
    assert "claim" not in stored


def test_a_resubmission_that_never_started_is_neither_resent_nor_counted_until_the_bound(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a document resubmitted whose new task is still queued (workers down)
    [doc] = seed_due(tracker, due=1)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    tracker.claims.settle([Settlement(doc, "sent", "queued-task")], token=claim.token, now=now)
    bound = now + tracker.config.resend_after_hours * HOUR

    # When runs come and go before the resend bound, nothing is released or claimed
    assert tracker.claims.release_expired(now=bound - 1) == []
    assert tracker.claims.claim_due(10, now=bound - 1).records == []

    # And once it passes, the document is due again where it was, nothing counted
    assert tracker.claims.release_expired(now=bound) == [doc]
    record = tracker.reports.get_record(doc)
    assert record is not None
    assert (record.state, record.retry_count) == ("failed", 0)
    assert "never started" in record.state_reason
    assert zscore(redis_client, tracker.keys.due, doc) == T0
    assert tracker.reports.status(now=bound)["recovery_metrics"]["failed_recoveries"] == 0
    # And resent: the queued message, should it ever run, is a stale duplicate
    claim = tracker.claims.claim_due(10, now=bound)
    assert [r.doc_id for r in claim.records] == [doc]
    tracker.claims.settle([Settlement(doc, "sent", "resent-task")], token=claim.token, now=bound)
    assert zscore(redis_client, tracker.keys.superseded, "queued-task") == bound


def test_a_late_failure_of_a_run_recovery_replaced_does_not_reopen_its_document(
    tracker: Tracker,
) -> None:
    # Given a document whose run was resubmitted as a newer task, which then succeeded
    path = "/docs/partitioned.pdf"
    tracker.store.record_failure(failure(path, task_id="cut-off-task"))
    doc = document_id(path)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    tracker.claims.settle([Settlement(doc, "sent", "newer-task")], token=claim.token, now=now)
    tracker.store.resolve(doc, recovery_attempt=True, task_id="newer-task")

    # When the replaced run's failure arrives late (a host back from a partition, or
    # its spool replayed)
    outcome = tracker.store.record_failure(failure(path, now + 60, task_id="cut-off-task"))

    # Then it is dropped as stale and counted: the document stays processed
    assert outcome.state == "stale"
    assert tracker.reports.get_record(doc) is None
    metrics = tracker.reports.status(now=now + 60)["recovery_metrics"]
    assert (metrics["dropped_stale"], metrics["resolved"]) == (1, 1)


def test_an_expired_lease_of_a_crashed_run_returns_to_due_without_a_retry(
    tracker: Tracker,
) -> None:
    [doc] = seed_due(tracker, due=1)
    tracker.claims.claim_due(10, now=T0 + 2 * HOUR)

    released = tracker.claims.release_expired(now=T0 + DAY)

    record = tracker.reports.get_record(doc)
    assert released == [doc]
    assert record is not None
    assert (record.state, record.retry_count) == ("failed", 0)


def test_a_lease_that_has_not_expired_is_left_alone(tracker: Tracker) -> None:
    seed_due(tracker, due=1)
    tracker.claims.claim_due(10, now=T0 + 2 * HOUR)

    assert tracker.claims.release_expired(now=T0 + 2 * HOUR + 1) == []


def test_a_resubmitted_run_that_starts_late_keeps_its_claim_until_its_own_deadline(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a document resubmitted at `now`, held until the resend bound
    [doc] = seed_due(tracker, due=1)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    tracker.claims.settle([Settlement(doc, "sent", "new-task")], token=claim.token, now=now)
    config = tracker.config
    bound = now + config.resend_after_hours * HOUR

    # When its task waited in the queue and checks in 10 s before that bound
    started = bound - 10
    limit = config.claim_lease_seconds
    call = RunCall("new-task", "tasks.process_document", "/docs/due-0.pdf")
    assert tracker.store.begin(doc, call, limit, started) == ("run", "sent")

    # Then it is recovering, and a recovery run a minute later does not hand the
    # running document out again: its claim now ends with the run's own deadline
    read = tracker.reports.get_record(doc)
    assert read is not None
    assert read.state == "recovering"
    assert tracker.claims.release_expired(now=bound + 60) == []
    assert zscore(redis_client, tracker.keys.claimed, doc) == started + limit


@pytest.mark.parametrize(
    "undone", ["the broker refused it", "it never started", "the operator's run crashed"]
)
def test_a_manual_retry_of_a_dead_document_that_did_not_happen_leaves_it_dead(
    tracker: Tracker, redis_client: redis.Redis, undone: str
) -> None:
    # Given a permanent failure, dead at once
    record = failure("/docs/corrupt.pdf", error_category="permanent")
    tracker.store.record_failure(record)
    doc, keys = record.doc_id, tracker.keys
    reason = hash_of(redis_client, keys.record(doc))["reason"]
    now = T0 + HOUR
    bound = now + tracker.config.resend_after_hours * HOUR

    # When an operator's retry claims it, and the retry does not happen
    claim = tracker.claims.claim_ids([doc], now=now)
    assert [r.doc_id for r in claim.records] == [doc]
    if undone == "the broker refused it":
        tracker.claims.settle(
            [Settlement(doc, "release", "resubmission failed")], token=claim.token, now=now
        )
    elif undone == "it never started":
        tracker.claims.settle([Settlement(doc, "sent", "lost-task")], token=claim.token, now=now)
        assert tracker.claims.release_expired(now=bound) == [doc]
    else:
        assert tracker.claims.release_expired(now=bound) == [doc]

    # Then it is dead as before, where it was in dead, with its reason (bug: it was
    # put in due as 'failed', and every periodic run resent the permanent failure)
    stored = hash_of(redis_client, keys.record(doc))
    assert (stored["state"], stored["reason"]) == ("dead", reason)
    assert "dead" not in stored
    assert zscore(redis_client, keys.dead, doc) == T0
    assert zscore(redis_client, keys.due, doc) is None
    assert zscore(redis_client, keys.claimed, doc) is None
    assert tracker.claims.claim_due(10, now=bound + DAY, force=True).records == []
    # And an operator may retry it again
    assert [r.doc_id for r in tracker.claims.claim_ids([doc], now=bound + DAY).records] == [doc]


# --- retention -----------------------------------------------------------------------


def test_cleanup_removes_records_past_retention_with_index_entries_and_aggregates(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given one document first failed 8 days ago and one an hour ago, retention 7 days
    tracker = make_tracker(failed_docs_retention_days=7)
    now = T0 + 30 * DAY
    old = failure("/docs/old.pdf", now - 8 * DAY, error_category="import", worker_id="w1")
    new = failure("/docs/new.pdf", now - HOUR, error_category="memory", worker_id="w2")
    tracker.store.record_failure(old)
    tracker.store.record_failure(new)

    # When cleanup runs
    removed = tracker.maintenance.cleanup(now=now)

    # Then the old one is gone everywhere and counted; the new one stays
    k = tracker.keys
    assert removed == {"expired": 1, "dead_trimmed": 0}
    assert redis_client.exists(k.record(old.doc_id)) == 0
    assert zscore(redis_client, k.due, old.doc_id) is None
    assert zscore(redis_client, k.failed, old.doc_id) is None
    assert hash_of(redis_client, k.by_category) == {"memory": "1"}
    assert hash_of(redis_client, k.by_worker) == {"w2": "1"}
    assert tracker.reports.get_record(new.doc_id) is not None
    assert tracker.reports.status(now=now)["recovery_metrics"]["expired"] == 1


def test_cleanup_trims_the_oldest_dead_beyond_dead_max_with_a_warning_and_a_metric(
    make_tracker: TrackerFactory, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given four dead documents and room for two
    tracker = make_tracker(dead_max=2)
    dead = [failure(f"/docs/{n}.exe", T0 + n, error_category="permanent") for n in range(4)]
    for record in dead:
        tracker.store.record_failure(record)

    # When cleanup runs
    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        removed = tracker.maintenance.cleanup(now=T0 + 10)

    # Then the two that died first are removed, loudly
    assert removed["dead_trimmed"] == 2
    assert [str(m) for m in redis_client.zrange(tracker.keys.dead, 0, -1)] == [
        dead[2].doc_id,
        dead[3].doc_id,
    ]
    assert redis_client.exists(tracker.keys.record(dead[0].doc_id)) == 0
    assert "dead_max=2" in caplog.text
    assert "removed the 2 oldest dead documents" in caplog.text
    assert tracker.reports.status(now=T0)["recovery_metrics"]["dead_trimmed"] == 2
    assert hash_of(redis_client, tracker.keys.by_category) == {"permanent": "2"}


def test_retention_bounds_dead_documents_too_which_stay_visible_until_then(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given two dead documents, first failed 8 and 6 days ago, retention 7 days
    tracker = make_tracker(failed_docs_retention_days=7)
    now = T0 + 100 * DAY
    gone = failure("/docs/gone.exe", now - 8 * DAY, error_category="permanent")
    kept = failure("/docs/kept.exe", now - 6 * DAY, error_category="permanent")
    tracker.store.record_failure(gone)
    tracker.store.record_failure(kept)

    removed = tracker.maintenance.cleanup(now=now)

    # Then the older is gone with every trace, the other still listed as dead
    assert removed == {"expired": 1, "dead_trimmed": 0}
    assert redis_client.exists(tracker.keys.record(gone.doc_id)) == 0
    assert zscore(redis_client, tracker.keys.dead, gone.doc_id) is None
    assert zscore(redis_client, tracker.keys.dead, kept.doc_id) == now - 6 * DAY
    assert [r.doc_id for r in tracker.reports.get_failed_documents()] == [kept.doc_id]


# --- garbage under our prefix ------------------------------------------------------


def test_garbage_at_record_keys_is_skipped_and_reported_by_claim(
    tracker: Tracker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a good due document and three kinds of garbage indexed as due and failed
    good = failure("/docs/good.pdf", T0)
    tracker.store.record_failure(good)
    k = tracker.keys
    redis_client.set(k.record("plainstring"), "not a hash")
    redis_client.hset(k.record("missingfields"), mapping={"path": "/x", "first": str(T0)})
    fields: dict[Any, Any] = {**failure("/docs/bad.pdf").to_redis(), "retries": "many"}
    redis_client.hset(k.record("badretries"), mapping=fields)
    garbage = ["plainstring", "missingfields", "badretries"]
    redis_client.zadd(k.due, dict.fromkeys(garbage, T0))
    redis_client.zadd(k.failed, dict.fromkeys(garbage, T0))

    # When a run claims
    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        claim = tracker.claims.claim_due(10, now=T0 + 2 * HOUR)

    # Then the good document is claimed and each piece of garbage reported, no exception
    assert [r.doc_id for r in claim.records] == [good.doc_id]
    assert sorted(claim.corrupt + claim.undecodable) == sorted(garbage)
    for doc in garbage:
        assert k.record(doc) in caplog.text
    assert redis_client.get(k.record("plainstring")) == "not a hash"
    # And moved aside where status counts it and delete can remove it, out of every
    # later run's way
    assert sorted(redis_client.zrange(k.corrupt, 0, -1)) == sorted(garbage)
    assert tracker.reports.status(now=T0 + 2 * HOUR)["corrupt"] == 3
    assert tracker.claims.claim_due(10, now=T0 + 3 * HOUR).corrupt == []
    assert tracker.maintenance.delete(garbage) == 3
    assert tracker.reports.status(now=T0 + 3 * HOUR)["corrupt"] == 0


def test_garbage_at_record_keys_is_skipped_and_reported_by_listing(
    tracker: Tracker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = failure("/docs/good.pdf", T0 + 10)
    tracker.store.record_failure(good)
    k = tracker.keys
    redis_client.set(k.record("plainstring"), "not a hash")
    redis_client.hset(k.record("missingfields"), mapping={"path": "/x"})
    bad: dict[Any, Any] = {**good.to_redis(), "retries": "x"}
    redis_client.hset(k.record("badretries"), mapping=bad)
    redis_client.zadd(k.failed, dict.fromkeys(["plainstring", "missingfields", "badretries"], T0))

    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        records = tracker.reports.get_failed_documents()

    assert [r.doc_id for r in records] == [good.doc_id]
    assert k.record("plainstring") in caplog.text
    assert "missing field(s)" in caplog.text
    assert "'retries'" in caplog.text


def test_get_record_raises_corrupt_record_for_garbage(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    redis_client.set(tracker.keys.record("x"), "not a hash")

    with pytest.raises(CorruptRecord, match="holds a string"):
        tracker.reports.get_record("x")
    assert tracker.reports.get_record("nothing-here") is None


def test_listing_zero_documents_lists_none(tracker: Tracker) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf"))

    # bug: stop = offset + limit - 1 = -1, and ZRANGE 0 -1 is the whole index
    assert tracker.reports.get_failed_documents(limit=0) == []


def test_a_record_removed_by_its_ttl_leaves_no_count_behind_once_cleaned(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a record whose safety-net TTL fired (beat was stopped for longer than the
    # retention): Redis expires the hash, its index entries and aggregates stay
    record = failure("/docs/a.pdf", error_category="import", worker_id="w1", query="q")
    tracker.store.record_failure(record)
    redis_client.pexpire(tracker.keys.record(record.doc_id), 1)
    while redis_client.exists(tracker.keys.record(record.doc_id)):
        time.sleep(0.005)

    # When cleanup runs after the retention
    tracker.maintenance.cleanup(now=T0 + 30 * DAY)

    # Then the index entries are gone and the aggregates count nothing (bug: untrack
    # decrements the aggregates only from the hash's fields, which expired with it,
    # so by-category, by-worker and by-query stay at 1 forever)
    assert tracker.reports.status(now=T0 + 30 * DAY)["total_failed_documents"] == 0
    assert hash_of(redis_client, tracker.keys.by_category) == {}
    assert hash_of(redis_client, tracker.keys.by_worker) == {}
    assert hash_of(redis_client, tracker.keys.by_query) == {}


def test_listing_pages_oldest_failure_first(tracker: Tracker) -> None:
    for n in (3, 1, 2, 0):
        tracker.store.record_failure(failure(f"/docs/{n}.pdf", T0 + n))

    page = tracker.reports.get_failed_documents(limit=2, offset=1)

    assert [r.document_path for r in page] == ["/docs/1.pdf", "/docs/2.pdf"]


# --- status and analysis -------------------------------------------------------------

#: (path, age in hours, category, worker, query): one document per age bucket.
DATA_SET = [
    ("/docs/a.pdf", 0.5, "import", "w1", "q1"),
    ("/docs/b.pdf", 3.0, "import", "w1", "q1"),
    ("/docs/c.pdf", 12.0, "import", "w2", "q1"),
    ("/docs/d.pdf", 48.0, "memory", "w1", "q2"),
    ("/docs/e.pdf", 100.0, "memory", "w2", "q2"),
    ("/docs/f.pdf", 200.0, "timeout", "w1", "q2"),
]


def seed_data_set(tracker: Tracker, now: float) -> None:
    for path, age, category, worker, query in DATA_SET:
        tracker.store.record_failure(
            failure(path, now - age * HOUR, error_category=category, worker_id=worker, query=query)
        )
    # and four successful runs on w1 / q1 of documents that never failed
    for n in range(4):
        tracker.store.resolve(document_id(f"/docs/ok-{n}.pdf"), worker="w1", query="q1", now=now)


def test_analysis_of_a_known_data_set_gives_exact_numbers(make_tracker: TrackerFactory) -> None:
    tracker = make_tracker(failed_docs_retention_days=30)
    now = T0 + 30 * DAY
    seed_data_set(tracker, now)

    analysis = tracker.reports.analysis(now=now)

    assert analysis["age_distribution"] == {
        "<1h": 1, "1-6h": 1, "6-24h": 1, "1-3d": 1, "3-7d": 1, ">7d": 1,
    }  # fmt: skip
    assert analysis["error_categories"] == {"import": 3, "memory": 2, "timeout": 1}
    assert list(analysis["error_categories"]) == ["import", "memory", "timeout"]
    assert analysis["workers"] == {
        "w1": {"tracked": 4, "failures": 4, "processed": 8, "failure_rate": 0.5},
        "w2": {"tracked": 2, "failures": 2, "processed": 2, "failure_rate": 1.0},
    }
    assert analysis["queries"] == {
        "q1": {"tracked": 3, "failures": 3, "processed": 7, "failure_rate": 3 / 7},
        "q2": {"tracked": 3, "failures": 3, "processed": 3, "failure_rate": 1.0},
    }


def test_a_document_exactly_one_hour_old_is_counted_in_one_bucket_only(
    tracker: Tracker,
) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf", T0 - HOUR))

    ages = tracker.reports.analysis(now=T0)["age_distribution"]

    assert sum(ages.values()) == 1


def test_status_of_a_known_data_set_gives_exact_counts(make_tracker: TrackerFactory) -> None:
    tracker = make_tracker(failed_docs_retention_days=30, min_retry_interval_hours=1.0)
    now = T0 + 30 * DAY
    seed_data_set(tracker, now)

    status = tracker.reports.status(now=now)

    # every document but the half-hour-old one has waited out its 1 h backoff
    assert status["total_failed_documents"] == 6
    assert status["eligible_for_recovery"] == 5
    assert (status["scheduled"], status["exhausted"]) == (1, 0)
    assert (status["in_recovery"], status["dead"], status["corrupt"]) == (0, 0, 0)
    metrics = status["recovery_metrics"]
    assert metrics["total_failed_documents"] == 6
    assert metrics["documents_eligible_for_retry"] == 5
    assert metrics["failures_recorded"] == 6
    assert metrics["recovery_success_rate"] == 0.0
    assert metrics["last_recovery_run"] is None


def test_recovery_metrics_give_the_success_rate_and_average_recovery_time(
    tracker: Tracker,
) -> None:
    # Given three documents resubmitted at `now`
    ids = seed_due(tracker, due=3)
    now = T0 + 2 * HOUR
    claim = tracker.claims.claim_due(10, now=now)
    tracker.claims.settle(
        [Settlement(doc, "sent", f"new-{doc}") for doc in ids], token=claim.token, now=now
    )

    # When two succeed after 30 s and 90 s and the third fails again
    tracker.store.resolve(ids[0], recovery_attempt=True, now=now + 30)
    tracker.store.resolve(ids[1], recovery_attempt=True, now=now + 90)
    tracker.store.record_failure(failure("/docs/due-2.pdf", now + 60), recovery_attempt=True)

    # Then
    metrics = tracker.reports.status(now=now + 100)["recovery_metrics"]
    assert metrics["recovery_attempts"] == 3
    assert metrics["successful_recoveries"] == 2
    assert metrics["failed_recoveries"] == 1
    assert metrics["recovery_success_rate"] == pytest.approx(2 / 3)
    assert metrics["average_recovery_time"] == pytest.approx(60.0)
    assert metrics["last_recovery_run"] == now
    assert metrics["total_failed_documents"] == 1


# --- Redis away ----------------------------------------------------------------------


def test_a_stopped_server_gives_tracker_unavailable_not_a_redis_error(
    tracker: Tracker, redis_server: RedisServer
) -> None:
    tracker.store.record_failure(failure("/docs/a.pdf"))
    redis_server.stop()

    with pytest.raises(TrackerUnavailable) as caught:
        tracker.store.record_failure(failure("/docs/b.pdf"))
    assert isinstance(caught.value.__cause__, redis.RedisError)
    assert "record failure failed on redis://127.0.0.1" in str(caught.value)

    for call in (
        lambda: tracker.reports.status(),
        lambda: tracker.claims.claim_due(10),
        lambda: tracker.reports.get_failed_documents(),
        lambda: tracker.store.resolve("x"),
        lambda: tracker.maintenance.cleanup(),
    ):
        with pytest.raises(TrackerUnavailable):
            call()


def test_a_tracker_keeps_working_after_redis_restarts_with_its_data(
    tracker: Tracker, redis_server: RedisServer
) -> None:
    # Given a tracked failure, on a server with append-only persistence
    first = failure("/docs/a.pdf")
    tracker.store.record_failure(first)

    # When the server restarts (its script cache is empty afterwards)
    redis_server.stop()
    redis_server.start()

    # Then the record is still there and the scripts load again on first use
    assert tracker.store.record_failure(failure("/docs/b.pdf")).state == "failed"
    listed = {r.doc_id for r in tracker.reports.get_failed_documents()}
    assert listed == {first.doc_id, document_id("/docs/b.pdf")}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_unavailable_message_never_shows_the_password() -> None:
    url = f"redis://admin:hunter2-secret@127.0.0.1:{closed_port()}/0"
    tracker = FailedDocumentsTracker(url, RecoveryConfig())
    try:
        with pytest.raises(TrackerUnavailable) as caught:
            tracker.reports.status()
        with pytest.raises(TrackerUnavailable) as caught_script:
            tracker.store.record_failure(failure("/docs/a.pdf"))
    finally:
        tracker.close()

    for exc in (caught.value, caught_script.value):
        assert "hunter2-secret" not in str(exc)
        assert "hunter2-secret" not in repr(exc)
        assert "admin:***@127.0.0.1" in str(exc)


def test_a_database_the_server_does_not_have_is_a_refusal_a_worker_spools(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a tracker whose URL names a database past the server's `databases`
    databases = int(str(redis_client.config_get("databases")["databases"]))
    tracker = Tracker(redis_url.rpartition("/")[0] + f"/{databases}", RecoveryConfig())
    spool = Spool(tmp_path / "spool")
    try:
        # When it reports and records (before: a TrackerFailed, "DB index is out of
        # range", and a worker's failure event was rejected for good)
        with pytest.raises(TrackerRefused, match="fewer databases than the URL's") as caught:
            tracker.reports.status()
        Reporter(spool).deliver(tracker, FailureEvent(failure("/docs/a.pdf"), True, False))
    finally:
        tracker.close()

    # Then it is refused, as a wrong password is, and the worker's event waits in the spool
    assert "DB index is out of range" in str(caught.value)
    assert spool.count() == 1
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


#: A script's call that met a read-only replica or too few replicas, as redis-py gives
#: Redis 6.2's and 7's answers (read off both servers; it drops 6.2's "ERR "), also one
#: a script caught and returned; and a script's own error.
SCRIPT_ERRORS = [
    (
        "Error running script (call to f_a2cf28b3ba496f8b7c5b44756406784df4c5ce09): "
        "@user_script:1: @user_script: 1: -READONLY You can't write against a read only "
        "replica.",
        TrackerRefused,
    ),
    (
        "Error running script (call to f_88c923858e73954cede057e8a25f614a3552b177): "
        "@user_script:1: @user_script: 1: -NOREPLICAS Not enough good replicas to write.",
        TrackerBusy,
    ),
    (
        "NOREPLICAS Not enough good replicas to write. script: "
        "88c923858e73954cede057e8a25f614a3552b177, on @user_script:1.",
        TrackerBusy,
    ),
    # 6.2's answer caught by the script (redis.pcall) and returned as it came
    ("@user_script: 51: -NOREPLICAS Not enough good replicas to write.", TrackerBusy),
    (
        "Error running script (call to f_1): @user_script:3: Script attempted to "
        "access nonexistent global variable 'x'",
        TrackerFailed,
    ),
]


@pytest.mark.parametrize(("reply", "kind"), SCRIPT_ERRORS)
def test_an_error_a_scripts_call_met_is_told_by_its_code_on_redis_6_2_as_on_7(
    reply: str, kind: type[Exception]
) -> None:
    # Given a tracker, when a call gets one of these replies, it raises the kind the
    # code means (before: on 6.2 a refusal or a busy server inside a script was a
    # failure of the command, and the worker's event was rejected for good)
    tracker = FailedDocumentsTracker(f"redis://127.0.0.1:{closed_port()}/0", RecoveryConfig())
    try:
        with pytest.raises(kind), tracker.connection.errors("record failure"):
            raise redis.ResponseError(reply)
    finally:
        tracker.close()


def test_a_write_with_too_few_replicas_is_busy_for_now(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a server that takes writes only with a replica, and has none
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        # When a failure is recorded, then Redis is busy for now, not the command wrong
        with pytest.raises(TrackerBusy, match="NOREPLICAS"):
            tracker.store.record_failure(failure("/docs/a.pdf"))
    finally:
        redis_client.config_set("min-replicas-to-write", 0)


# --- the client ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "f" * 40, 2, "rec", "due", 1.5, 0, "a", b"\x00body", "\u00e9"),
        ("SCRIPT LOAD", "return 1"),
        ("SET", memoryview(b"key"), bytearray(b"value")),
    ],
    ids=["a-script-call", "a-two-word-command", "buffers"],
)
def test_the_trackers_packer_sends_what_redis_pys_own_would(command: tuple[Any, ...]) -> None:
    assert Packer().pack(*command) == HiredisRespSerializer().pack(*command)


def test_the_trackers_client_refuses_what_redis_py_refuses_and_sends_buffers(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    client = tracker.store.connection.client
    assert isinstance(client, redis.Redis)
    with pytest.raises(redis.DataError, match="must be str, int, float or bytes"):
        client.set("key", None)  # type: ignore[arg-type]
    client.set(memoryview(b"buffered"), bytearray(b"value"))
    assert redis_client.get("buffered") == "value"


def test_a_call_cut_off_before_its_reply_leaves_nothing_for_the_next_to_read(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a tracker that has recorded a failure (its script is loaded) and answered
    tracker.store.record_failure(failure("/docs/first.pdf"))
    assert tracker.reports.status()["total_failed_documents"] == 1

    # When an exception cuts a call off after its command went out, before its reply
    # is read
    with pytest.raises(Interrupted), interrupted_at("parse_response"):
        tracker.store.record_failure(failure("/docs/a.pdf"))

    # Then the command that went out is applied (Redis may read it after the next
    # call's, which comes on a new connection), and each later call reads its own reply
    key = f"{{docrecovery}}:doc:{document_id('/docs/a.pdf')}"
    wait_for(lambda: redis_client.exists(key), 10, "the cut-off call to be applied")
    assert tracker.reports.status()["total_failed_documents"] == 2
    assert tracker.store.record_failure(failure("/docs/b.pdf")).state == "failed"
    assert tracker.reports.status()["total_failed_documents"] == 3


def _record_in_child(tracker: Tracker, replies: Connection) -> None:
    outcome = tracker.store.record_failure(failure("/docs/child.pdf", task_id="child"))
    client = tracker.store.connection.client
    assert isinstance(client, redis.Redis)
    replies.send((outcome.state, client.client_id()))


def test_a_forked_child_talks_to_redis_on_a_connection_of_its_own(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a tracker whose client the parent has used (a prefork worker's parent
    # registers its environment before replacing a child)
    tracker.store.record_failure(failure("/docs/parent.pdf", task_id="parent"))
    client = tracker.store.connection.client
    assert isinstance(client, redis.Redis)
    parent_id = client.client_id()

    # When a forked child records a failure through the tracker it inherited
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_record_in_child, args=(tracker, send)
    )
    child.start()
    assert receive.poll(30), "the child did not answer"
    state, child_id = receive.recv()
    child.join(30)

    # Then it did so on a connection of its own, and the parent's still answers it alone
    assert child.exitcode == 0
    assert state == "failed"
    assert child_id != parent_id
    assert client.client_id() == parent_id
    assert tracker.reports.status()["total_failed_documents"] == 2
    assert redis_client.exists(f"{{docrecovery}}:doc:{document_id('/docs/child.pdf')}")


# --- the async face -------------------------------------------------------------------


def test_the_async_face_runs_the_same_code(redis_url: str) -> None:
    config = RecoveryConfig(retry_jitter=0.0)
    record = failure("/docs/a.pdf", T0, worker_id="w1")

    async def scenario() -> tuple[Any, ...]:
        tracker = FailedDocumentsTracker(redis_url, config)
        try:
            outcome = await tracker.track_failure(record)
            listed = await tracker.get_failed_documents()
            one = await tracker.get_record(record.doc_id)
            metrics = await tracker.get_metrics()
            claim = await tracker.claim_due(10, now=T0 + 2 * HOUR)
            await tracker.mark_success(record.doc_id, worker="w1", now=T0 + 3 * HOUR)
            after = await tracker.get_status(now=T0 + 3 * HOUR)
            return outcome, listed, one, metrics, claim, after
        finally:
            tracker.close()

    outcome, listed, one, metrics, claim, after = asyncio.run(scenario())

    assert outcome.state == "failed"
    assert [r.doc_id for r in listed] == [record.doc_id]
    assert one is not None
    assert one.document_path == "/docs/a.pdf"
    assert one.get_failure_age_hours(now=T0 + HOUR) == 1.0
    assert metrics["total_failed_documents"] == 1
    assert [r.doc_id for r in claim.records] == [record.doc_id]
    assert after["total_failed_documents"] == 0
    assert after["recovery_metrics"]["resolved"] == 1


def test_the_async_face_files_a_record_that_names_no_category_by_its_error(
    redis_url: str,
) -> None:
    # Given records as the seed makes them (no category), and one that names its own
    config = RecoveryConfig(category_overrides={"DocxError": "permanent"})
    given = {
        "missing": ("", "FileNotFoundError: [Errno 2] No such file or directory: '/x'"),
        "memory": ("MemoryError", "document too large"),
        "override": ("DocxError", "cannot read the document"),
    }
    records = {
        name: failure(f"/docs/{name}.pdf", error_type=etype, error_message=message)
        for name, (etype, message) in given.items()
    }
    named = failure("/docs/named.pdf", error_type="MemoryError", error_category="network")

    async def track() -> dict[str, str]:
        tracker = FailedDocumentsTracker(redis_url, config)
        try:
            for record in (*records.values(), named):
                await tracker.track_failure(record)
            stored = {n: await tracker.get_record(r.doc_id) for n, r in records.items()}
            stored["named"] = await tracker.get_record(named.doc_id)
            return {n: r.error_category for n, r in stored.items() if r is not None}
        finally:
            tracker.close()

    # When they are tracked through the API, then each is filed by its error, so its
    # category's handling applies (bug: all were 'other'), and a named one keeps its own
    assert asyncio.run(track()) == {
        "missing": "file_not_found",
        "memory": "memory",
        "override": "permanent",
        "named": "network",
    }
    assert records["missing"].error_category == "other"  # the caller's record unchanged


def test_the_async_face_accepts_the_seeds_config_dict(redis_url: str) -> None:
    tracker = FailedDocumentsTracker(redis_url, {"max_retry_count": 0, "recovery_batch_size": 5})
    try:
        assert tracker.config.max_retry_count == 0

        async def fail() -> tuple[str, int]:
            state = (await tracker.track_failure(failure("/docs/a.pdf"))).state
            return state, (await tracker.get_status(now=T0 + DAY))["exhausted"]

        # with no retry allowed, the failure is tracked and past this config's maximum
        assert asyncio.run(fail()) == ("failed", 1)
    finally:
        tracker.close()


def test_the_async_face_keeps_the_retries_a_tracked_record_already_used(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given failures imported from another system with the retries each used (one at
    # the maximum of 3, one below it), and a document that failed here twice already
    tracker = FailedDocumentsTracker(redis_url, RecoveryConfig(retry_jitter=0.0, max_retry_count=3))
    spent = failure("/docs/spent.pdf", retry_count=3)
    left = failure("/docs/left.pdf", retry_count=2)
    here = [failure("/docs/here.pdf", T0 + n) for n in range(3)]
    try:

        async def track() -> list[int]:
            counts = [(await tracker.track_failure(r)).retry_count for r in (spent, left)]
            for record in here[:2]:
                await tracker.track_failure(record)
            # its third failure, imported with fewer retries than it used here
            imported = replace(here[2], retry_count=1)
            return [*counts, (await tracker.track_failure(imported)).retry_count]

        # When they are tracked through the API, then each keeps the larger of its own
        # count and the one kept here (bug: a given retry_count was ignored, so the
        # spent one started again at 0 and was resubmitted)
        assert asyncio.run(track()) == [3, 2, 2]
        assert zscore(redis_client, tracker.keys.due, spent.doc_id) == 3 * LEVEL + T0
        claim = tracker.claims.claim_due(10, now=T0 + DAY)
        assert {r.doc_id for r in claim.records} == {left.doc_id, here[0].doc_id}
        assert tracker.reports.status(now=T0 + DAY)["exhausted"] == 1
    finally:
        tracker.close()


def test_mark_success_resolves_a_path_that_looks_like_an_id_and_counts_each_run_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a file named by 20 hex digits that failed, and two other documents
    client = counting_client(redis_url)
    tracker = FailedDocumentsTracker(redis_url, RecoveryConfig(retry_jitter=0.0), client=client)
    named, by_id, by_path = (
        failure(path, worker_id="w1") for path in ("0123456789abcdef0123", "/docs/b", "/docs/c")
    )
    redis_client.script_load(scripts.source("resolve"))
    try:
        for record in (named, by_id, by_path):
            tracker.store.record_failure(record)

        def mark(document: str, **details: Any) -> tuple[bool, int]:
            done: list[bool] = []
            details = {"worker": "w1", "now": T0 + HOUR, **details}
            success = tracker.mark_success(document, **details)
            trips = round_trips(lambda: done.append(asyncio.run(success)))
            return done[0], trips

        # When each is marked processed — by its path, by its id (after a success of
        # an older run, which a newer failure outdates), by its path — then the first again
        marks = [
            mark(named.document_path),
            mark(by_id.doc_id, task_id="older-run", now=T0 - 1),
            mark(by_id.doc_id),
            mark(by_path.document_path),
            mark(named.document_path),
        ]
        left = tracker.reports.status(now=T0 + HOUR)["total_failed_documents"]
    finally:
        client.close()

    # Then the path that looks like an id resolves its document (bug: it was taken for
    # an id, nothing matched, and the document stayed to be resubmitted) in two round
    # trips, an id or another path in one as before, and the last call matches nothing
    assert marks == [(True, 2), (False, 1), (True, 1), (True, 1), (False, 2)]
    assert left == 0
    # And each run counted once (bug: a call that matched nothing counted its run, so
    # trying again by the path counted it twice)
    assert hash_of(redis_client, tracker.keys.worker_successes) == {"w1": "5"}
    assert hash_of(redis_client, tracker.keys.query_successes) == {"(no query)": "5"}
    assert redis_client.hget(tracker.keys.stats, "resolved") == "3"


def test_a_sweep_does_not_report_a_run_whose_entry_was_renewed_after_it_read_it(
    make_tracker: TrackerFactory, redis_client: redis.Redis
) -> None:
    # Given a run in flight until T0 + 100 (a redelivery that checked in again)
    tracker = make_tracker()
    doc = document_id("/docs/a.pdf")
    call = RunCall("t1", "tasks.process_document", "/docs/a.pdf")
    assert tracker.store.begin(doc, call, 100, T0)[0] == "run"
    lost = failure("/docs/a.pdf", T0 + 60, task_id="t1", error_category="worker_lost")

    # When a sweep that read entries due by T0 + 50 reports it
    outcome = tracker.store.record_failure(lost, lost_run=T0 + 50, now=T0 + 60)

    # Then nothing is recorded and the run stays in flight
    assert outcome.state == "skipped"
    assert tracker.reports.get_record(doc) is None
    assert zscore(redis_client, tracker.keys.inflight, "t1") == T0 + 100
    # While a sweep past its deadline records it once
    assert tracker.store.record_failure(lost, lost_run=T0 + 200, now=T0 + 200).state == "failed"
    assert tracker.store.record_failure(lost, lost_run=T0 + 200, now=T0 + 200).state == "skipped"


def test_a_check_in_sent_again_after_its_reply_was_lost_is_the_run_not_a_lost_one(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a tracked document and a new run of it about to check in, the check-in
    # script loaded (as by any earlier run)
    record = failure("/docs/a.pdf", T0, task_id="t0")
    tracker.store.record_failure(record)
    redis_client.script_load(tracker.connection.scripts.begin.source)
    call = RunCall("t1", "tasks.process_document", "/docs/a.pdf")

    # When its check-in is applied and the connection drops before the reply is read,
    # so redis-py sends it again
    with interrupted_at("parse_response", redis.ConnectionError, within="begin"):
        verdict, _ = tracker.store.begin(record.doc_id, call, 100, T0 + 10)

    # Then it is this run's check-in, in flight once (bug: the second call found the
    # first's entry and answered 'lost', which a worker records as a worker_lost failure)
    assert verdict == "run"
    assert list(hash_of(redis_client, tracker.keys.inflight_tasks)) == ["t1"]
    assert zscore(redis_client, tracker.keys.inflight, "t1") == T0 + 110
    assert redis_client.hget(tracker.keys.record(record.doc_id), "state") == "recovering"
    # And a redelivery of the run (its worker died) checks in anew and finds it lost
    assert tracker.store.begin(record.doc_id, call, 100, T0 + 20)[0] == "lost"


def test_a_fractional_time_limit_round_trips(make_tracker: TrackerFactory) -> None:
    tracker = make_tracker()
    tracker.store.record_failure(failure("/docs/a.pdf", T0, time_limit=2.5))

    record = tracker.reports.get_record(document_id("/docs/a.pdf"))

    assert record is not None
    assert record.time_limit == 2.5


def test_cleanup_keeps_only_the_busiest_names_in_the_run_counters(
    make_tracker: TrackerFactory, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given failures under five queries, query n failing n + 1 times, and q0 with ten
    # successful runs besides (the busiest by runs)
    monkeypatch.setattr("recovery.store.maintenance.RATE_ENTRIES", 3)
    tracker = make_tracker()
    for n in range(5):
        for attempt in range(n + 1):
            tracker.store.record_failure(failure(f"/docs/{n}-{attempt}.pdf", T0, query=f"q{n}"))
    for n in range(10):
        tracker.store.resolve(document_id(f"/docs/ok-{n}.pdf"), query="q0", now=T0)

    # When cleanup runs
    tracker.maintenance.cleanup(now=T0)

    # Then the three busiest queries by runs keep their counters, in both hashes
    k = tracker.keys
    assert set(hash_of(redis_client, k.query_failures)) == {"q0", "q3", "q4"}
    assert set(hash_of(redis_client, k.query_successes)) == {"q0"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@host:1/0", "redis://:***@host:1/0"),
        ("redis://user:s3cret@[::1]:6380/2", "redis://user:***@[::1]:6380/2"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("redis://:s3#cret@host:1/0", "redis://:***@host:1/0"),
        ("redis://u:s3/c?ret@host:1/0", "redis://u:***@host:1/0"),
        ("redis://:ab/cd==@host:1/0", "redis://:***@host:1/0"),
        ("redis://:pw@h:1/0?client_name=a@b", "redis://:***@h:1/0?client_name=a@b"),
        (
            "redis://redis:6379/0?client_name=celery@web1",
            "redis://redis:6379/0?client_name=celery@web1",
        ),
        (
            "rediss://h:6380/0?ssl_ca_certs=/ca@2024.pem",
            "rediss://h:6380/0?ssl_ca_certs=/ca@2024.pem",
        ),
        ("redis://:s3cret@[::1:6379/0", "redis://:***@[::1:6379/0"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_password_in_text_is_masked_with_a_slash_or_a_hash_in_it() -> None:
    text = "ConnectionError: redis://u:s3/c#ret@host:6379/0 refused"

    assert redact_text(text) == "ConnectionError: redis://u:***@host:6379/0 refused"


def test_text_keeps_a_url_whose_only_at_sign_is_in_its_query() -> None:
    text = "cannot reach redis://redis:6379/0?client_name=celery@web1 (refused)"

    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("field", "value"),
    [("failures:permanent", "abc"), ("dead_total", "x"), ("failures_recorded", "9" * 18)],
    ids=["its-categorys-count", "the-dead-count", "a-count-it-would-take-past-18-digits"],
)
def test_a_failure_refused_at_any_of_its_counts_keeps_none_of_them(
    tracker: Tracker, redis_client: redis.Redis, field: str, value: str
) -> None:
    # Given a count that a permanent failure makes after others (or first, but which it
    # would take past what a reader reads) holding what cannot be counted
    stats = tracker.keys.stats
    redis_client.hset(stats, mapping={"failures_recorded": "4", "dead_total": "2", field: value})
    before = hash_of(redis_client, stats)

    # When the failure meets it
    with pytest.raises(CorruptCounter) as refused:
        tracker.store.record_failure(failure("/docs/a.pdf", error_category="permanent"))

    # Then it is refused naming that field, and the counts made before it are taken
    # back with nothing else written (the counts are the script's first changes)
    assert (refused.value.field, refused.value.value) == (field, value)
    assert hash_of(redis_client, stats) == before
    assert redis_client.keys("*") == [stats]


@pytest.mark.parametrize(
    ("field", "value"),
    [("resolved", "x"), ("dropped_after_delete", "1.5"), ("recovery_time_total", "inf")],
    ids=["its-first-count", "its-last-count", "its-sum-of-seconds"],
)
def test_a_success_refused_at_any_counter_it_adds_to_leaves_the_document_tracked(
    tracker: Tracker, redis_client: redis.Redis, field: str, value: str
) -> None:
    # Given a tracked document and a counter its success adds to holding no number
    record = failure("/docs/a.pdf")
    tracker.store.record_failure(record)
    redis_client.hset(tracker.keys.stats, field, value)

    # When its success is reported, then it is refused naming that counter
    with pytest.raises(CorruptCounter) as refused:
        tracker.store.resolve(record.doc_id)

    # And the document is still tracked, as it was
    assert (refused.value.field, refused.value.value) == (field, value)
    assert tracker.reports.get_record(record.doc_id) is not None


def test_a_counter_past_what_redis_counts_is_refused_before_anything_changes(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a whole count past a 64-bit integer (HINCRBY refuses it) and a sum of
    # seconds that reads as infinity (HINCRBYFLOAT refuses it), set by hand
    stats = tracker.keys.stats
    redis_client.hset(stats, mapping={"failures_recorded": "9" * 20})
    record = failure("/docs/a.pdf")

    # When a failure meets the first, and a success the second
    with pytest.raises(CorruptCounter):
        tracker.store.record_failure(record)
    written = sorted(redis_client.keys("*"))
    redis_client.hset(stats, mapping={"failures_recorded": "0", "recovery_time_total": "1e5000"})
    tracker.store.record_failure(record)
    with pytest.raises(CorruptCounter):
        tracker.store.resolve(record.doc_id)

    # Then each is refused whole, as a word would be (bug: they passed the check, and
    # the script failed at the counter, keeping what it had written)
    assert written == [stats]
    assert tracker.reports.get_record(record.doc_id) is not None
