"""Recovery runs against a real Redis and a real Celery app sending to the Redis broker.

Kombu's Redis transport keeps each queue as a list named after it, so a resubmitted
task is checked where a worker would find it: ``LRANGE documents``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from brokers import Broker
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from faults.support import Interrupted, at_call, interrupted_at

from recovery.api import DocumentRecoveryManager, FailedDocumentsTracker, run_document_recovery
from recovery.calls import HEADER
from recovery.codec import encode_body
from recovery.config import RecoveryConfig
from recovery.holds import UNDECODABLE
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_server import RedisServer
from recovery.resubmit import sender_app
from recovery.summaries import Held, RunSummary

HOUR = 3600.0
DAY = 86400.0
T0 = 1_700_000_000.0


ManagerFactory = Callable[..., DocumentRecoveryManager]


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[ManagerFactory]:
    """Factory of managers on the test's Redis (no jitter unless asked); closed after."""
    made: list[DocumentRecoveryManager] = []

    def create(app: Celery | None = None, **settings: Any) -> DocumentRecoveryManager:
        config = RecoveryConfig.from_mapping({"retry_jitter": 0.0, **settings})
        manager = DocumentRecoveryManager(redis_url, config, app=app)
        made.append(manager)
        return manager

    yield create
    for manager in made:
        manager.close()
        manager.app.close()


def failure(path: str, at: float = T0, **fields: Any) -> FailedDocumentRecord:
    fields.setdefault("task_id", f"task-{path}-{at}")
    fields.setdefault("error_message", "RuntimeError: boom")
    fields.setdefault("args", [path])
    return FailedDocumentRecord(document_path=path, failure_timestamp=at, **fields)


def due_now(manager: DocumentRecoveryManager, count: int) -> list[FailedDocumentRecord]:
    """``count`` documents failed two hours ago, due by the real clock (oldest first)."""
    now = time.time()
    records = [failure(f"/docs/{n}.pdf", now - 2 * HOUR + n) for n in range(count)]
    for record in records:
        manager.tracker.store.record_failure(record)
    return records


def stored_states(
    client: redis.Redis, manager: DocumentRecoveryManager, records: list[FailedDocumentRecord]
) -> set[str]:
    """The states the records' documents are stored in."""
    keys = manager.tracker.keys
    return {str(client.hget(keys.record(r.doc_id), "state")) for r in records}


def messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The kombu messages waiting in ``queue``, oldest first, with the body decoded."""
    raw: list[str] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
    decoded = []
    for item in reversed(raw):  # kombu LPUSHes, workers BRPOP
        message: dict[str, Any] = json.loads(item)
        message["decoded_body"] = json.loads(base64.b64decode(message["body"]))
        decoded.append(message)
    return decoded


def snapshot(redis_url: str) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key's serialized value and whether it has a TTL."""
    client = redis.Redis.from_url(redis_url)
    try:
        return {
            key: (client.dump(key), int(client.ttl(key)) > 0)
            for key in client.scan_iter(count=1000)
        }
    finally:
        client.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_broker_app() -> Celery:
    app = Celery("unreachable", broker=f"redis://127.0.0.1:{closed_port()}/0", set_as_current=False)
    app.conf.update(
        broker_connection_timeout=1,
        broker_connection_max_retries=0,
        task_publish_retry_policy={"max_retries": 0},
    )
    return app


# --- a recovery run ------------------------------------------------------------------


def test_a_run_resubmits_due_documents_to_their_queues_with_the_recovery_header(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given three due documents of different categories, and one not due yet
    manager = make_manager(recovery_timeout=300, lease_grace_seconds=60)
    tracker = manager.tracker
    plain = failure(
        "/docs/a.pdf", T0, args=["/docs/a.pdf", "revenue", {"src": "s3"}], query="revenue"
    )
    big = failure("/docs/big.pdf", T0 + 1, error_category="memory")
    slow = failure("/docs/slow.pdf", T0 + 2, error_category="timeout", time_limit=100)
    later = failure("/docs/later.pdf", T0 + DAY)
    for seeded in (plain, big, slow, later):
        tracker.store.record_failure(seeded)
    now = T0 + 2 * HOUR

    # When a run goes
    summary = manager.run_batch(now=now)

    # Then the three were claimed and sent, the memory one to the high-memory queue
    assert summary.claimed == 3
    assert [info.doc_id for info in summary.resubmitted] == [
        plain.doc_id,
        big.doc_id,
        slow.doc_id,
    ]
    assert (summary.released, summary.waiting, summary.corrupt) == ([], [], [])
    documents, highmem = messages(redis_client, "documents"), messages(redis_client, "highmem")
    assert len(documents) == 2
    assert len(highmem) == 1
    by_doc = {m["headers"][HEADER]["doc_id"]: m for m in documents + highmem}
    assert set(by_doc) == {plain.doc_id, big.doc_id, slow.doc_id}

    # And each message is the original call, by task name, with its docrecovery header
    first = by_doc[plain.doc_id]
    assert first["headers"]["task"] == "tasks.process_document"
    assert first["headers"][HEADER]["attempt"] == 1
    assert first["decoded_body"][:2] == [["/docs/a.pdf", "revenue", {"src": "s3"}], {}]
    assert first["properties"]["delivery_info"]["routing_key"] == "documents"
    assert by_doc[big.doc_id]["properties"]["delivery_info"]["routing_key"] == "highmem"

    # And its time limits come from recovery_timeout (a timed-out one gets twice its own)
    assert first["headers"]["timelimit"] == [300, 270]
    assert by_doc[big.doc_id]["headers"]["timelimit"] == [300, 270]
    assert by_doc[slow.doc_id]["headers"]["timelimit"] == [200, 180]

    # And each document is sent under the new task id, held until it starts or the
    # resend bound passes
    for doc, message in by_doc.items():
        record = tracker.reports.get_record(doc)
        assert record is not None
        assert (record.state, record.recovery_attempts) == ("sent", 1)
        assert record.task_id == message["headers"]["id"]
        bound = now + tracker.config.resend_after_hours * HOUR
        assert redis_client.zscore(tracker.keys.claimed, doc) == bound
    metrics = tracker.reports.status(now=now)["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["recovery_runs"]) == (3, 1)
    assert metrics["last_recovery_run"] == now
    assert redis_client.zscore(tracker.keys.due, later.doc_id) is not None


@pytest.mark.parametrize(("timeout", "limits"), [(120, [120, 108]), (10, [10, 9])])
def test_the_time_limits_of_a_resubmission_come_from_recovery_timeout(
    make_manager: ManagerFactory, redis_client: redis.Redis, timeout: int, limits: list[int]
) -> None:
    manager = make_manager(recovery_timeout=timeout)
    manager.tracker.store.record_failure(failure("/docs/a.pdf"))

    manager.run_batch(now=T0 + 2 * HOUR)

    [message] = messages(redis_client, "documents")
    assert message["headers"]["timelimit"] == limits


def test_a_run_takes_at_most_one_batch(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    manager = make_manager(recovery_batch_size=4)
    for n in range(10):
        manager.tracker.store.record_failure(failure(f"/docs/{n}.pdf", T0 + n))

    summary = manager.run_batch(now=T0 + 2 * HOUR)

    assert summary.claimed == 4
    assert int(redis_client.llen("documents")) == 4
    assert manager.tracker.reports.status(now=T0 + 2 * HOUR)["eligible_for_recovery"] == 6


def test_a_resubmission_that_fails_releases_the_document_back_to_due(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a due document and a Celery app whose broker cannot be reached
    manager = make_manager(app=unreachable_broker_app())
    record = failure("/docs/a.pdf")
    manager.tracker.store.record_failure(record)
    now = T0 + 2 * HOUR

    # When a run tries to resubmit it
    summary = manager.run_batch(now=now)

    # Then nothing was sent and the document is due again where it was, not lost, no
    # retry used
    assert summary.resubmitted == []
    assert summary.released == [record.doc_id]
    tracker = manager.tracker
    kept = tracker.reports.get_record(record.doc_id)
    assert kept is not None
    assert (kept.state, kept.retry_count, kept.recovery_attempts) == ("failed", 0, 0)
    assert kept.state_reason.startswith("resubmission failed")
    assert redis_client.zscore(tracker.keys.due, record.doc_id) == record.failure_timestamp
    assert redis_client.zscore(tracker.keys.claimed, record.doc_id) is None

    # And once the broker is back, a later run sends it
    working = make_manager()
    assert working.run_batch(now=now + DAY).claimed == 1
    assert int(redis_client.llen("documents")) == 1


def test_a_manual_retry_of_a_dead_document_the_broker_refuses_leaves_it_dead(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a permanent failure, dead at once, and an operator whose broker cannot be
    # reached
    operator = make_manager(app=unreachable_broker_app())
    record = failure("/docs/corrupt.pdf", error_category="permanent")
    operator.tracker.store.record_failure(record)

    # When the operator retries it
    result = operator.retry([record.doc_id])

    # Then nothing was sent, and it is dead as before, with its reason
    assert result.resubmitted == []
    kept = operator.tracker.reports.get_record(record.doc_id)
    assert kept is not None
    assert (kept.state, kept.state_reason) == ("dead", "permanent error: not retried")
    assert redis_client.zscore(operator.tracker.keys.dead, record.doc_id) == T0

    # And no periodic run resends the permanent failure (bug: the released retry put
    # it in due as 'failed', and every run resent it)
    summary = make_manager().run_batch(now=T0 + 2 * HOUR)
    assert (summary.claimed, summary.resubmitted) == (0, [])
    assert int(redis_client.llen("documents")) == 0


def test_a_batch_the_broker_refuses_is_released_whole_and_nothing_is_counted(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    # Given due documents and a broker that takes connections and declarations but
    # refuses to queue a message (its LPUSH): the batch's one publish fails at the end
    broker = RedisServer(tmp_path / "broker", appendonly=False)
    broker.start()
    try:
        admin = redis.Redis.from_url(broker.url)
        admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all", "-lpush"])
        admin.close()
        manager = make_manager(app=sender_app(broker.url))
        records = [failure(f"/docs/{n}.pdf") for n in range(3)]
        for record in records:
            manager.tracker.store.record_failure(record)

        # When a run resubmits them
        summary = manager.run_batch(now=T0 + 2 * HOUR)

        # Then none counts as sent: each is due again where it was, no attempt used
        assert summary.resubmitted == []
        assert sorted(summary.released) == sorted(r.doc_id for r in records)
        reports = manager.tracker.reports
        for record in records:
            kept = reports.get_record(record.doc_id)
            assert kept is not None
            assert (kept.state, kept.recovery_attempts) == ("failed", 0)
            assert kept.state_reason.startswith("resubmission failed")
        assert reports.status(now=T0 + 2 * HOUR)["recovery_metrics"]["recovery_attempts"] == 0
    finally:
        broker.stop()


def test_a_run_reports_garbage_keeps_it_visible_and_counts_itself_once(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a good due document, a string and an undecodable hash indexed as due
    manager = make_manager()
    tracker = manager.tracker
    good = failure("/docs/good.pdf", T0)
    tracker.store.record_failure(good)
    redis_client.set(tracker.keys.record("plainstring"), "not a hash")
    bad: dict[Any, Any] = {**failure("/docs/bad.pdf").to_redis(), "retries": "many"}
    redis_client.hset(tracker.keys.record("badretries"), mapping=bad)
    redis_client.zadd(tracker.keys.due, {"plainstring": T0, "badretries": T0})
    now = T0 + 2 * HOUR

    # When a run goes
    summary = manager.run_batch(now=now)

    # Then the good one is sent, the garbage reported, and the run counted once
    assert [info.doc_id for info in summary.resubmitted] == [good.doc_id]
    assert sorted(summary.corrupt) == ["badretries", "plainstring"]
    assert int(redis_client.llen("documents")) == 1
    assert tracker.reports.status(now=now)["recovery_metrics"]["recovery_runs"] == 1
    # and the undecodable record is kept for an operator, not retried at every run
    assert redis_client.exists(tracker.keys.record("badretries")) == 1
    assert manager.run_batch(now=now + 60).corrupt == []


def test_a_record_whose_body_holds_a_field_of_another_type_is_held_and_the_batch_goes(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given two due documents, the older one's body readable but its args not a list
    manager = make_manager()
    tracker = manager.tracker
    bad, good = failure("/docs/bad.pdf", T0), failure("/docs/good.pdf", T0 + 10)
    for record in (bad, good):
        tracker.store.record_failure(record)
    body = encode_body({"path": bad.document_path, "task": bad.task_name, "args": 5})
    redis_client.hset(tracker.keys.record(bad.doc_id), "body", body)
    now = T0 + 2 * HOUR

    # When two runs go
    summary = manager.run_batch(now=now)
    later = manager.run_batch(now=now + 60)

    # Then the first sends the good one and holds the bad one back, visible and
    # uncounted, and neither run fails on it
    assert [info.doc_id for info in summary.resubmitted] == [good.doc_id]
    assert summary.waiting == [Held(bad.doc_id, UNDECODABLE)]
    assert later.claimed == 0
    assert redis_client.hget(tracker.keys.record(bad.doc_id), "state") == "waiting"
    assert redis_client.zscore(tracker.keys.claimed, bad.doc_id) is None


def test_a_manual_retry_of_undecodable_records_leaves_them_as_they_were_not_sent(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a due and a dead document whose bodies cannot be decoded
    manager = make_manager()
    tracker, keys = manager.tracker, manager.tracker.keys
    due = failure("/docs/due.pdf", T0)
    dead = failure("/docs/dead.pdf", T0, error_category="permanent")
    for record in (due, dead):
        tracker.store.record_failure(record)
        body = encode_body({"path": record.document_path, "task": record.task_name, "args": 5})
        redis_client.hset(keys.record(record.doc_id), "body", body)

    # When an operator retries both
    result = manager.retry([due.doc_id, dead.doc_id])

    # Then neither is sent nor left claimed (bug: both stayed claimed until the lease
    # ended, and were reported as skipped): each is where it was, named as not sent
    assert (result.resubmitted, result.skipped) == ([], [])
    assert sorted(result.released) == sorted([due.doc_id, dead.doc_id])
    assert redis_client.zcard(keys.claimed) == 0
    assert redis_client.zscore(keys.due, due.doc_id) == T0
    assert redis_client.hget(keys.record(dead.doc_id), "state") == "dead"
    assert redis_client.zscore(keys.dead, dead.doc_id) == T0


def test_a_path_no_system_call_takes_is_held_and_the_batch_goes(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a permission failure whose path holds a NUL byte, and a good document
    manager = make_manager()
    odd = failure("/docs/a\x00b.pdf", T0, error_category="permission")
    good = failure("/docs/good.pdf", T0 + 10)
    for record in (odd, good):
        manager.tracker.store.record_failure(record)

    # When a run probes them
    summary = manager.run_batch(now=T0 + 2 * HOUR)

    # Then the odd one is held back saying why, and the good one is sent
    assert [info.doc_id for info in summary.resubmitted] == [good.doc_id]
    assert summary.waiting == [Held(odd.doc_id, "file cannot be checked: embedded null byte")]
    assert int(redis_client.llen("documents")) == 1


@pytest.mark.parametrize("raising", [Interrupted, SoftTimeLimitExceeded])
@pytest.mark.parametrize("function", ["producer_or_acquire", "send_task"])
def test_a_run_cut_off_between_claim_and_settle_gives_its_claim_back_uncounted(
    make_manager: ManagerFactory,
    redis_client: redis.Redis,
    function: str,
    raising: type[BaseException],
) -> None:
    # Given two due documents
    manager = make_manager()
    records = [failure(f"/docs/{n}.pdf", T0 + n) for n in range(2)]
    for record in records:
        manager.tracker.store.record_failure(record)
    now = T0 + 2 * HOUR

    # When the run is cut off as it takes a producer or sends the first, by a signal's
    # exception or its soft time limit (bug: the limit was taken for a broker's
    # failure, swallowed, and the run went on sending)
    with pytest.raises(raising), interrupted_at(function, raising):
        manager.run_batch(now=now)

    # Then nothing stays claimed: both are due again where they were, no attempt used
    keys = manager.tracker.keys
    assert redis_client.zcard(keys.claimed) == 0
    for record in records:
        assert redis_client.zscore(keys.due, record.doc_id) == record.failure_timestamp
        assert redis_client.hget(keys.record(record.doc_id), "state") == "failed"
    # And the next run sends both
    assert len(manager.run_batch(now=now + 60).resubmitted) == 2


@pytest.mark.parametrize("raising", [Interrupted, SoftTimeLimitExceeded])
def test_a_run_cut_off_midway_settles_what_it_sent_and_sends_each_document_once(
    make_manager: ManagerFactory,
    broker: Broker,
    redis_client: redis.Redis,
    raising: type[BaseException],
) -> None:
    # Given three due documents
    manager = make_manager()
    records = due_now(manager, 3)

    # When the run is cut off as it sends the third, by a signal's exception or its
    # soft time limit (RabbitMQ has published the first two; Redis's batch held them,
    # and drops them)
    with pytest.raises(raising), interrupted_at("send_task", raising, after=2):
        manager.run_batch()

    # Then none stays claimed (what left is sent, the rest due again), and the next
    # run sends only what had not left: each document waits in the queue once
    assert stored_states(redis_client, manager, records) <= {"sent", "failed"}
    manager.run_batch()
    assert sorted(broker.header_doc_ids()) == sorted(r.doc_id for r in records)


def test_a_run_cut_off_midway_whose_count_refuses_settles_what_it_sent_and_gives_back_the_rest(
    make_manager: ManagerFactory, rabbitmq: Broker, redis_client: redis.Redis
) -> None:
    # Given RabbitMQ, which publishes each message at once (Redis's batch, cut off,
    # sends none), three due documents, and the count of attempts set by hand to a word
    manager = make_manager()
    records = due_now(manager, 3)
    keys = manager.tracker.keys
    redis_client.hset(keys.stats, "recovery_attempts", "abc")

    # When the run is cut off as it sends the third
    with pytest.raises(Interrupted), interrupted_at("send_task", after=2):
        manager.run_batch()

    # Then the two sent are settled as sent (the settle refused only to count them), and
    # the third is due again at once, not left claimed until the lease runs out
    assert sorted(rabbitmq.header_doc_ids()) == sorted(r.doc_id for r in records[:2])
    states = sorted(str(redis_client.hget(keys.record(r.doc_id), "state")) for r in records)
    assert states == ["failed", "sent", "sent"]
    assert redis_client.zcard(keys.claimed) == 2
    assert redis_client.zcard(keys.due) == 1
    assert redis_client.hget(keys.stats, "recovery_attempts") == "abc"


def test_a_run_cut_off_as_it_settles_settles_what_it_sent_and_sends_it_once(
    make_manager: ManagerFactory, broker: Broker, redis_client: redis.Redis
) -> None:
    # Given two due documents
    manager = make_manager()
    records = due_now(manager, 2)

    # When the run is cut off as it settles, both sent
    with pytest.raises(Interrupted), interrupted_at("settle"):
        manager.run_batch()

    # Then both are settled as sent, no longer given back when the lease runs out
    # (bug: they stayed claimed, and the run after the lease sent them again)
    assert stored_states(redis_client, manager, records) == {"sent"}
    lease = manager.config.claim_lease_seconds
    assert manager.tracker.claims.release_expired(now=time.time() + 2 * lease) == []
    # And each waits in the queue once
    manager.run_batch()
    assert sorted(broker.header_doc_ids()) == sorted(r.doc_id for r in records)


def test_a_soft_time_limit_as_the_batch_is_flushed_stops_the_run_and_sends_none_twice(
    make_manager: ManagerFactory, broker: Broker, redis_client: redis.Redis
) -> None:
    # Given three due documents
    manager = make_manager()
    records = due_now(manager, 3)

    # When the run's soft time limit fires as its batch is flushed (Redis publishes the
    # batch there; RabbitMQ has published each message as it was sent)
    with (
        pytest.raises(SoftTimeLimitExceeded),
        interrupted_at("flush", SoftTimeLimitExceeded),
    ):
        manager.run_batch()

    # Then the limit stops the run, and each document counts as sent, none given back
    # to be sent again while its message may wait in the queue (bug: on Redis the limit
    # was taken for a failed flush, swallowed, and the whole batch given back); one
    # whose message never left is resent once the resend bound passes
    assert stored_states(redis_client, manager, records) == {"sent"}
    assert manager.run_batch().resubmitted == []
    waiting = broker.header_doc_ids()
    assert len(set(waiting)) == len(waiting)
    assert set(waiting) <= {r.doc_id for r in records}


def test_a_soft_time_limit_once_the_flushed_batch_left_stops_the_run_and_sends_it_once(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given three due documents, the test's Redis their broker
    manager = make_manager()
    records = due_now(manager, 3)

    # When the run's soft time limit fires as the batch's publish reads its replies:
    # every message has gone out (kombu reports the limit as an uncertain delivery)
    with (
        pytest.raises(SoftTimeLimitExceeded),
        interrupted_at("parse_response", SoftTimeLimitExceeded, within="flush"),
    ):
        manager.run_batch()

    # Then the limit stops the run and each document counts as sent (bug: all three
    # were given back to due, and the next run sent each a second time)
    assert stored_states(redis_client, manager, records) == {"sent"}
    assert manager.run_batch().resubmitted == []
    waiting = [m["headers"][HEADER]["doc_id"] for m in messages(redis_client, "documents")]
    assert sorted(waiting) == sorted(r.doc_id for r in records)


def test_a_publish_cut_off_leaves_no_reply_unread_for_the_next_run(
    make_manager: ManagerFactory, redis_url: str
) -> None:
    # Given a sender whose broker connections are checked (PING) after a second idle,
    # and a run cut off as its batch's publish reads its replies
    app = sender_app(redis_url)
    app.conf.broker_transport_options = {"health_check_interval": 1}
    manager = make_manager(app=app)
    due_now(manager, 2)
    with (
        pytest.raises(SoftTimeLimitExceeded),
        interrupted_at("parse_response", SoftTimeLimitExceeded, within="flush"),
    ):
        manager.run_batch()

    # When the next run, past that second, sends two more
    later = [failure(f"/docs/later-{n}.pdf", time.time() - 2 * HOUR) for n in range(2)]
    for record in later:
        manager.tracker.store.record_failure(record)
    time.sleep(1.2)
    summary = manager.run_batch()

    # Then it sends them (bug: the cut-off publish left its replies unread on a broker
    # connection kombu pools for every app of that broker; the next publish read them
    # as its own, and a check's PING a stale reply: "Bad response from PING health
    # check", the batch given back)
    assert sorted(s.doc_id for s in summary.resubmitted) == sorted(r.doc_id for r in later)


def test_a_run_cut_off_before_its_settles_reply_counts_its_resubmissions_once(
    make_manager: ManagerFactory, broker: Broker, redis_client: redis.Redis
) -> None:
    # Given two due documents, the settle script loaded (as by any earlier run)
    manager = make_manager()
    records = due_now(manager, 2)
    tracker = manager.tracker
    redis_client.script_load(tracker.connection.scripts.settle.source)

    # When the run is cut off after its settle went out, before its reply is read, and
    # its guard settles what it sent again
    with pytest.raises(Interrupted), interrupted_at("parse_response", within="settle"):
        manager.run_batch()

    # Then both are sent, once, and the run and its two resubmissions count once (bug:
    # the guard's settle counted them again: 4 attempts in 2 runs)
    assert stored_states(redis_client, manager, records) == {"sent"}
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["recovery_runs"]) == (2, 1)
    assert sum(b.resubmitted for b in tracker.reports.recoveries_over_time()) == 2
    assert sorted(broker.header_doc_ids()) == sorted(r.doc_id for r in records)


def test_a_run_that_outlived_its_lease_sends_none_of_what_another_run_took_since(
    make_manager: ManagerFactory, broker: Broker, redis_client: redis.Redis
) -> None:
    # Given three due documents and runs whose claims hold for one second
    late, other = (make_manager(recovery_timeout=1, lease_grace_seconds=0) for _ in range(2))
    records = due_now(late, 3)
    taken: list[RunSummary] = []

    def pause_then_another_run() -> None:
        time.sleep(1.1)
        taken.append(other.run_batch())

    # When a run pauses past its lease as it starts sending, and meanwhile another run
    # takes the documents whose claims ran out and sends them
    with at_call("_producer", pause_then_another_run):
        summary = late.run_batch()

    # Then the late run sends none of them (bug: each went to the queue twice)
    [taken_since] = taken
    assert len(taken_since.resubmitted) == 3
    assert (summary.resubmitted, sorted(summary.released)) == (
        [],
        sorted(r.doc_id for r in records),
    )
    assert sorted(broker.header_doc_ids()) == sorted(r.doc_id for r in records)
    # And each stays the other run's resubmission
    keys = late.tracker.keys
    for sent in taken_since.resubmitted:
        assert redis_client.hget(keys.record(sent.doc_id), "task_id") == sent.task_id


def test_undecodable_records_do_not_keep_other_held_documents_from_their_probe(
    make_manager: ManagerFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given four undecodable records held back, as many as a run of one probes, and
    # a document held after them because its file is missing
    manager = make_manager(recovery_batch_size=1)
    tracker = manager.tracker
    now = T0 + 2 * HOUR
    for n in range(4):
        bad = failure(f"/docs/bad{n}.pdf", T0 + n)
        tracker.store.record_failure(bad)
        redis_client.hset(tracker.keys.record(bad.doc_id), "body", b"not an lz4 frame")
    missing = failure(str(tmp_path / "missing.pdf"), T0 + 100, error_category="file_not_found")
    tracker.store.record_failure(missing)
    for n in range(5):
        manager.run_batch(now=now + n * 60)
    assert redis_client.hget(tracker.keys.record(missing.doc_id), "state") == "waiting"

    # When the file is back
    (tmp_path / "missing.pdf").write_bytes(b"%PDF")

    # Then within two runs it is probed, reopened and sent
    sent = [manager.run_batch(now=now + (5 + n) * 60).resubmitted for n in range(2)]
    assert [info.doc_id for batch in sent for info in batch] == [missing.doc_id]


def test_recover_all_runs_batches_until_nothing_is_due(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given 25 documents due now, in batches of 10
    manager = make_manager(recovery_batch_size=10)
    now = time.time()
    for n in range(25):
        manager.tracker.store.record_failure(failure(f"/docs/{n}.pdf", now - 2 * HOUR + n))

    # When everything is recovered
    totals = manager.recover_all()

    # Then 3 batches sent them all; the third was not full, so no empty 4th ran
    assert totals.batches == 3
    assert totals.claimed == 25
    assert len(totals.resubmitted) == 25
    assert int(redis_client.llen("documents")) == 25
    assert totals.status["eligible_for_recovery"] == 0
    assert totals.status["in_recovery"] == 25


def test_recover_all_sends_an_open_breakers_canaries_once_not_once_a_batch(
    make_manager: ManagerFactory,
) -> None:
    # Given 12 due memory failures, in batches of 4, whose category's last three
    # recoveries failed: its breaker is open
    manager = make_manager(
        recovery_batch_size=4, breaker_window=3, breaker_threshold=0.6, breaker_canary_size=1
    )
    now = time.time()
    for n in range(12):
        record = failure(f"/docs/{n}.pdf", now - 2 * HOUR + n, error_category="memory")
        manager.tracker.store.record_failure(record, recovery_attempt=n < 3)
    assert manager.breakers()["memory"]["state"] == "open"

    # When everything is recovered
    totals = manager.recover_all()

    # Then one canary was sent in all, and every other document held back once
    assert len(totals.resubmitted) == 1
    assert len(totals.waiting) == 11
    assert len({held.doc_id for held in totals.waiting}) == 11
    assert all("circuit open for memory" in held.reason for held in totals.waiting)


def test_recover_all_with_the_broker_down_stops_after_a_batch_that_sent_nothing(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given 4 due documents, in batches of 2, and a broker that cannot be reached
    manager = make_manager(app=unreachable_broker_app(), recovery_batch_size=2)
    now = time.time()
    for n in range(4):
        manager.tracker.store.record_failure(failure(f"/docs/{n}.pdf", now - 2 * HOUR + n))

    # When everything is to be recovered
    totals = manager.recover_all(max_batches=5)

    # Then it stops after the first batch, naming what it could not send, and every
    # document is due again, nothing claimed or counted
    assert (totals.batches, totals.resubmitted) == (1, [])
    assert len(totals.released) == 2
    keys = manager.tracker.keys
    assert (redis_client.zcard(keys.due), redis_client.zcard(keys.claimed)) == (4, 0)


def test_recover_all_with_a_lowered_limit_skips_exhausted_documents_and_destroys_none(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given 10 documents that used 2 retries while the limit was 5, due first, and
    # 5 fresh failures due after them
    now = time.time()
    generous = make_manager(max_retry_count=5).tracker
    for n in range(10):
        for attempt in range(3):
            generous.store.record_failure(failure(f"/docs/old-{n}.pdf", now - 3 * DAY + attempt))
    for n in range(5):
        generous.store.record_failure(failure(f"/docs/new-{n}.pdf", now - DAY + n))

    # When the limit is lowered to 2 and everything is recovered, batches of 10
    totals = make_manager(max_retry_count=2, recovery_batch_size=10).recover_all()

    # Then the 5 fresh ones are sent, and the 10 stay tracked, out of retries under
    # this limit (not dead: a run with the old limit would still take them)
    assert int(redis_client.llen("documents")) == 5
    status = totals.status
    assert (status["eligible_for_recovery"], status["exhausted"], status["dead"]) == (0, 10, 0)
    assert make_manager(max_retry_count=5).tracker.reports.status()["eligible_for_recovery"] == 10


# --- dry run ---------------------------------------------------------------------------


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(
    make_manager: ManagerFactory, redis_url: str, redis_client: redis.Redis
) -> None:
    # Given due, future, dead and recovering documents, and some stats
    manager = make_manager(recovery_batch_size=5)
    tracker = manager.tracker
    tracker.store.record_failure(failure("/docs/sent.pdf", T0 - DAY))
    manager.run_batch(now=T0 - 20 * HOUR)
    tracker.store.record_failure(failure("/docs/a.pdf", T0, error_category="memory", query="q"))
    tracker.store.record_failure(
        failure("/docs/b.pdf", T0 + 1, error_category="timeout", time_limit=50)
    )
    tracker.store.record_failure(failure("/docs/later.pdf", T0 + DAY))
    tracker.store.record_failure(failure("/docs/x.exe", T0, error_category="permanent"))
    before = snapshot(redis_url)
    queued = int(redis_client.llen("documents"))

    # When a dry run looks at the next batch
    preview = manager.run_batch(dry_run=True, now=T0 + 2 * HOUR)

    # Then no key changed and nothing was sent
    assert snapshot(redis_url) == before
    assert int(redis_client.llen("documents")) == queued == 1
    assert int(redis_client.llen("highmem")) == 0

    # And it lists what a real run would send, where, and why
    assert preview.dry_run is True
    plan = {item.path: item for item in preview.would_resubmit}
    assert set(plan) == {"/docs/a.pdf", "/docs/b.pdf"}
    assert plan["/docs/a.pdf"].queue == "highmem"
    assert plan["/docs/a.pdf"].doc_id == document_id("/docs/a.pdf", "q")
    assert plan["/docs/b.pdf"].time_limit == 100
    assert plan["/docs/b.pdf"].attempt == 1
    assert "timeout failure" in plan["/docs/b.pdf"].why


def test_a_dry_run_skips_a_corrupt_record_as_a_real_run_does(
    make_manager: ManagerFactory, redis_client: redis.Redis
) -> None:
    # Given a good due document and garbage indexed as due
    manager = make_manager()
    tracker = manager.tracker
    tracker.store.record_failure(failure("/docs/good.pdf", T0))
    redis_client.set(tracker.keys.record("garbage"), "not a hash")
    redis_client.zadd(tracker.keys.due, {"garbage": T0})

    # When a dry run looks, it plans the good one and does not raise (bug: preview
    # calls get_record, which raises CorruptRecord, so the dry run crashes where the
    # real run would skip and report the garbage)
    preview = manager.run_batch(dry_run=True, now=T0 + 2 * HOUR)

    assert [item.path for item in preview.would_resubmit] == ["/docs/good.pdf"]


def test_a_dry_run_leaves_out_documents_past_retention_as_the_runs_cleanup_does(
    make_manager: ManagerFactory,
) -> None:
    # Given a batch's worth of documents past retention, older than a batch's worth
    # of fresh ones (retention is lowered, or no run went for a while)
    manager = make_manager(recovery_batch_size=3, failed_docs_retention_days=7)
    store = manager.tracker.store
    for n in range(3):
        store.record_failure(failure(f"/docs/old{n}.pdf", T0 - 8 * DAY + n))
        store.record_failure(failure(f"/docs/new{n}.pdf", T0 + n))
    now = T0 + 2 * HOUR

    # When a dry run looks, then the run goes
    preview = manager.run_batch(dry_run=True, now=now)
    summary = manager.run_batch(now=now)

    # Then the dry run promised the fresh ones, which the run (after its cleanup) sent
    planned = [item.path for item in preview.would_resubmit]
    assert planned == [f"/docs/new{n}.pdf" for n in range(3)]
    assert [item.path for item in summary.resubmitted] == planned


def test_a_dry_run_does_not_promise_to_resend_a_document_whose_file_is_still_missing(
    make_manager: ManagerFactory, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Given two file-not-found failures: one file is back, the other is still missing
    manager = make_manager(probe_preconditions=True)
    back, missing = tmp_path / "back.txt", tmp_path / "missing.txt"
    back.write_text("restored")
    for path in (back, missing):
        manager.tracker.store.record_failure(failure(str(path), error_category="file_not_found"))
    now = T0 + 2 * HOUR

    # When a dry run and then a real run look at the batch
    preview = manager.run_batch(dry_run=True, now=now)
    summary = manager.run_batch(now=now)

    # Then the real run sends only the restored one and defers the other...
    assert [info.path for info in summary.resubmitted] == [str(back)]
    assert [item.doc_id for item in summary.waiting] == [document_id(str(missing))]
    assert int(redis_client.llen("documents")) == 1
    # ...and the dry run said so (bug: preview plans every due document without the
    # precondition probe or the circuit breaker the real run applies)
    assert [item.path for item in preview.would_resubmit] == [str(back)]


# --- the seed's entry points -------------------------------------------------------------


def test_run_document_recovery_with_the_seeds_config_returns_a_summary(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given three documents due now, tracked with the seed's settings
    tracker = FailedDocumentsTracker(redis_url, seed.STANDALONE_CONFIG)
    now = time.time()
    try:
        for n in range(3):
            tracker.store.record_failure(failure(f"/docs/{n}.pdf", now - 2 * HOUR))
    finally:
        tracker.close()

    # When the seed's standalone recovery function runs
    result = asyncio.run(run_document_recovery(redis_url=redis_url, config=seed.STANDALONE_CONFIG))

    # Then it reports what it did, and did it
    assert result["claimed"] == 3
    assert len(result["resubmitted"]) == 3
    # one batch: it took fewer than recovery_batch_size, so nothing more was due
    assert result["batches"] == 1
    assert result["status"]["eligible_for_recovery"] == 0
    assert int(redis_client.llen("documents")) == 3


def test_recovery_status_has_the_seeds_keys_and_metrics(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(**seed.STANDALONE_CONFIG)
    now = time.time()
    manager.tracker.store.record_failure(failure("/docs/a.pdf", now - 2 * HOUR))
    manager.tracker.store.record_failure(failure("/docs/b.pdf", now - 60))

    status = asyncio.run(manager.get_recovery_status())

    assert status["total_failed_documents"] == 2
    assert status["eligible_for_recovery"] == 1
    assert set(status["recovery_metrics"]) >= seed.METRICS
    assert status["recovery_metrics"]["documents_eligible_for_retry"] == 1
    assert status["recovery_metrics"]["recovery_success_rate"] == 0.0
    assert status["analysis"]["error_categories"] == {"other": 2}
    assert f"{status['recovery_metrics']['recovery_success_rate']:.2%}" == "0.00%"
