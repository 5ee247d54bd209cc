"""The hardening issue's scenarios that need a real Redis but no worker process.

Each test reproduces one reported failure against the session's redis-server and
says in a comment what the code before the fix did. Resubmissions go to the real
broker (the same Redis) and stay queued there: no worker consumes them, so the tests
count them on the ``documents`` list.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from faults.support import KEYS, TASK, fast_config

from recovery.api import DocumentRecoveryManager
from recovery.calls import RunCall
from recovery.errors import TrackerBusy
from recovery.events import FailureEvent, Reporter
from recovery.records import FailedDocumentRecord
from recovery.spool import Spool
from recovery.store import Selection, Settlement, Tracker


@pytest.fixture
def manager(redis_url: str, tmp_path: Path) -> Iterator[DocumentRecoveryManager]:
    """A manager whose failures are due at once, sending to the test Redis."""
    made = DocumentRecoveryManager(
        redis_url, fast_config(spool_dir=str(tmp_path / "spool"), network_retry_interval_hours=0)
    )
    yield made
    made.close()


def track(manager: DocumentRecoveryManager, path: Path, **fields: Any) -> FailedDocumentRecord:
    """Record a failure of a real file, due now."""
    path.write_text("a document")
    record = FailedDocumentRecord(
        document_path=str(path),
        task_id=f"t-{path.name}",
        failure_timestamp=time.time() - 10,
        args=[str(path), None, {}],
        error_category="network",
        **{"error_message": "boom", **fields},
    )
    manager.tracker.store.record_failure(record)
    return record


def tracked_indexes(client: redis.Redis, doc_id: str) -> list[str]:
    names = ("due", "failed", "claimed", "waiting", "dead", "corrupt", "imports")
    return [n for n in names if client.zscore(getattr(KEYS, n), doc_id) is not None]


# --- item 1: an in-flight entry that is not JSON ------------------------------------


def test_an_unreadable_in_flight_entry_is_dropped_and_the_run_completes(
    manager: DocumentRecoveryManager,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a due document and an in-flight entry whose JSON is garbage, past its
    # deadline (before: json.loads raised in the lost-run sweep, so every recovery run
    # died there and nothing was ever resubmitted again)
    good = track(manager, tmp_path / "good.txt")
    redis_client.hset(KEYS.inflight_tasks, "t-garbage", "{not json")
    redis_client.zadd(KEYS.inflight, {"t-garbage": time.time() - 60})

    # When a recovery run sweeps
    with caplog.at_level(logging.WARNING, logger="recovery.calls"):
        summary = manager.run_batch()

    # Then it logs and drops the entry, and goes on to resubmit the due document
    assert "in-flight entry of task t-garbage is unreadable" in caplog.text
    assert summary.lost_runs_recorded == 0
    assert [s.doc_id for s in summary.resubmitted] == [good.doc_id]
    assert redis_client.zscore(KEYS.inflight, "t-garbage") is None
    assert not redis_client.hexists(KEYS.inflight_tasks, "t-garbage")


# --- item 2: numbers Python takes and Redis refuses -----------------------------------


@pytest.mark.parametrize("bad", ["02", " 2", "1_0"])
def test_a_number_python_takes_but_redis_refuses_is_set_aside_not_sent(
    bad: str, manager: DocumentRecoveryManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given three due documents, one whose attempts field was corrupted in place
    docs = [track(manager, tmp_path / f"doc-{n}.txt") for n in range(3)]
    broken = docs[1]
    redis_client.hset(KEYS.record(broken.doc_id), "attempts", bad)

    # When a recovery run claims and resubmits (before: int() read the field, the run
    # sent all three, then settle's HINCRBY refused the value and the run raised with
    # its messages already queued — the next run sent the good ones again)
    summary = manager.run_batch()

    # Then exactly the two good documents were sent and settled
    sent = sorted(s.doc_id for s in summary.resubmitted)
    assert sent == sorted(d.doc_id for d in docs if d is not broken)
    assert redis_client.llen("documents") == 2
    for doc in docs:
        if doc is not broken:
            assert redis_client.hget(KEYS.record(doc.doc_id), "state") == "sent"
    # And the bad one is in the corrupt index only, counted once, never sent
    assert summary.corrupt == [broken.doc_id]
    assert tracked_indexes(redis_client, broken.doc_id) == ["corrupt"]
    status = manager.status()
    assert (status["corrupt"], status["total_failed_documents"]) == (1, 2)
    assert manager.run_batch().resubmitted == []
    assert redis_client.llen("documents") == 2


# --- item 5: every tracked id visible, counted once, removable ----------------------


def test_corrupt_records_are_listed_counted_once_and_purged_with_everything(
    manager: DocumentRecoveryManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given two due documents and one whose record a claim finds unreadable
    good = track(manager, tmp_path / "good.txt")
    broken = track(manager, tmp_path / "broken.txt")
    redis_client.hset(KEYS.record(broken.doc_id), "first", "yesterday")
    manager.run_batch()

    # Then status and selection agree on where each id is (before: the corrupt id stayed
    # in the failed index too, counted in total and in corrupt, and no selection could
    # show it, so `purge --everything` left it behind)
    status = manager.status()
    assert (status["total_failed_documents"], status["corrupt"]) == (1, 1)
    assert manager.select(Selection(corrupt=True)) == [broken.doc_id]
    assert manager.select(Selection(corrupt=False)) == [good.doc_id]
    assert sorted(manager.select()) == sorted([good.doc_id, broken.doc_id])
    assert manager.select(Selection(dead=True)) == []

    # When the operator purges everything
    assert manager.purge(dead_only=False) == 2

    # Then the corrupt one is gone too
    assert manager.status()["corrupt"] == 0
    assert redis_client.exists(KEYS.record(broken.doc_id)) == 0
    assert tracked_indexes(redis_client, broken.doc_id) == []


def test_an_index_entry_that_never_had_a_record_is_not_blamed_on_a_ttl(
    manager: DocumentRecoveryManager, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an id in the indexes that never had a record (written by hand)
    redis_client.zadd(KEYS.failed, {"stray": time.time()})
    redis_client.zadd(KEYS.due, {"stray": time.time()})

    # When it is deleted (before: "TTL fired before cleanup, was beat stopped?")
    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        assert manager.delete(["stray"]) == 1

    # Then the log says what it was, and nothing about a TTL
    assert "1 index entries had no record" in caplog.text
    assert "TTL fired" not in caplog.text
    assert tracked_indexes(redis_client, "stray") == []


def test_a_record_whose_ttl_fired_is_still_reported_as_such(
    manager: DocumentRecoveryManager,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a record first failed long ago whose safety-net TTL fired
    old = time.time() - 30 * 86400
    record = FailedDocumentRecord(
        document_path=str(tmp_path / "old.txt"),
        task_id="t-old",
        error_message="boom",
        failure_timestamp=old,
        error_category="network",
        query="q",
    )
    manager.tracker.store.record_failure(record)
    redis_client.delete(KEYS.record(record.doc_id))

    # When cleanup removes its index entries
    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        assert manager.tracker.maintenance.cleanup()["expired"] == 1

    # Then the TTL is named, and the aggregates it left behind are repaired
    assert "TTL fired before cleanup" in caplog.text
    assert "had no record" not in caplog.text
    assert redis_client.hgetall(KEYS.by_query) == {}


# --- item 4: a delete while the resubmission runs ------------------------------------


def test_the_success_of_a_run_whose_document_was_deleted_counts_nothing(
    manager: DocumentRecoveryManager, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a document resubmitted by a run, its new task checked in on a worker
    doc = track(manager, tmp_path / "doc.txt")
    [sent] = manager.run_batch().resubmitted
    store = manager.tracker.store
    call = RunCall(sent.task_id, TASK, doc.document_path, args=[doc.document_path, None, {}])
    assert store.begin(doc.doc_id, call, 60) == ("run", "sent")

    # When an operator deletes it, then the run succeeds (before: harmless here, but
    # see the failing run below; now both outcomes are dropped alike)
    assert manager.delete([doc.doc_id]) == 1
    done = store.resolve(doc.doc_id, recovery_attempt=True, task_id=sent.task_id)

    # Then nothing is counted but the drop, and nothing is left of the run
    metrics = manager.status()["recovery_metrics"]
    assert (done.tracked, done.recovery_seconds) == (False, None)
    assert (metrics["successful_recoveries"], metrics["resolved"]) == (0, 0)
    assert metrics["dropped_after_delete"] == 1
    assert redis_client.zcard(KEYS.inflight) == 0

    # And the same run's outcomes reported again (a redelivery, a spool's replay after
    # a failover) are dropped too, counted once (before: the first consumed the mark,
    # and a replayed failure tracked the deleted document again)
    again = replace(doc, task_id=sent.task_id)
    assert store.record_failure(again, recovery_attempt=True).state == "dropped"
    assert store.resolve(doc.doc_id, task_id=sent.task_id).tracked is False
    assert manager.tracker.reports.get_record(doc.doc_id) is None
    assert manager.status()["recovery_metrics"]["dropped_after_delete"] == 1

    # And a later failure of the same document under another task is tracked again
    assert store.record_failure(replace(doc, task_id="t-later")).state == "failed"
    assert manager.tracker.reports.get_record(doc.doc_id) is not None


def test_retention_trims_delete_marks_whether_spent_or_not(
    manager: DocumentRecoveryManager, redis_client: redis.Redis
) -> None:
    # Given delete marks older than retention (one spent by a dropped outcome) and
    # one that is new
    now = time.time()
    old = now - manager.tracker.config.retention_seconds - 60
    redis_client.zadd(KEYS.deleted, {"t-old": old, "t-old-spent": -old, "t-new": -now})

    # When cleanup runs, Then only the new mark is left
    manager.tracker.maintenance.cleanup()
    assert redis_client.zrange(KEYS.deleted, 0, -1) == ["t-new"]


def test_retention_trims_the_ids_of_replayed_successes(
    manager: DocumentRecoveryManager, redis_client: redis.Redis
) -> None:
    # Given the event ids of two replayed successes, one applied before retention
    now = time.time()
    old = now - manager.tracker.config.retention_seconds - 60
    redis_client.zadd(KEYS.replayed_successes, {"e-old": old, "e-new": now})

    # When cleanup runs, Then only the new one is left
    manager.tracker.maintenance.cleanup()
    assert redis_client.zrange(KEYS.replayed_successes, 0, -1) == ["e-new"]


def test_a_resubmission_that_checks_in_before_its_run_settles_is_recovering(
    manager: DocumentRecoveryManager, tmp_path: Path
) -> None:
    # Given a claimed document whose new task a worker took before the run settled it
    doc = track(manager, tmp_path / "doc.txt")
    store, claims = manager.tracker.store, manager.tracker.claims
    claim = claims.claim_due(10)
    assert [r.doc_id for r in claim.records] == [doc.doc_id]
    call = RunCall("t-new", TASK, doc.document_path, args=[doc.document_path, None, {}])
    assert store.begin(doc.doc_id, call, 60) == ("run", "claimed")

    # When the run settles it as sent (before: it stayed 'sent', as if still queued,
    # with a lease of resend_after_hours, while it ran)
    claims.settle([Settlement(doc.doc_id, "sent", "t-new")], token=claim.token)

    # Then it is an attempt under way, its lease the run's deadline
    record = manager.tracker.reports.get_record(doc.doc_id)
    assert record is not None
    assert (record.state, record.task_id) == ("recovering", "t-new")
    lease = manager.tracker.connection.client.zscore(KEYS.claimed, doc.doc_id)
    assert lease is not None
    assert lease == pytest.approx(manager.tracker.connection.server_time() + 60, abs=5)


# --- item 8: errors that are not about reachability ---------------------------------

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_scripts_user(redis_client: redis.Redis, redis_url: str) -> Iterator[str]:
    """A URL of an ACL user who may do everything but run scripts."""
    redis_client.acl_setuser(
        "noscripts",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@scripting"],
    )
    yield redis_url.replace("redis://", "redis://noscripts:pw@")
    redis_client.acl_deluser("noscripts")


def docrecovery(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_user_without_scripting_is_told_redis_refused_not_that_it_is_unreachable(
    no_scripts_user: str, tmp_path: Path
) -> None:
    done = docrecovery("status", "--redis-url", no_scripts_user, tmp_path=tmp_path)

    # before: "cannot reach Redis at ...", as for a server that is down
    assert done.returncode == 2
    assert "refused" in done.stderr
    assert "cannot reach" not in done.stderr
    assert "noscripts:***@" in done.stderr
    assert "pw@" not in done.stderr


def test_a_command_that_fails_on_the_server_is_reported_as_a_failure_there(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given a key of ours holding the wrong type (the stats hash as a string)
    redis_client.set(KEYS.stats, "not a hash")

    done = docrecovery("status", "--redis-url", redis_url, tmp_path=tmp_path)

    # before: "cannot reach Redis at ...", exit 2
    assert done.returncode == 1
    assert "failed:" in done.stderr
    assert "WRONGTYPE" in done.stderr
    assert "cannot reach" not in done.stderr


def test_a_failure_the_server_refuses_to_record_is_spooled_for_later(
    no_scripts_user: str, tmp_path: Path
) -> None:
    tracker = Tracker(no_scripts_user, fast_config())
    spool = Spool(tmp_path / "spool")
    try:
        record = FailedDocumentRecord("/docs/a.txt", "t1", "E: x")
        Reporter(spool).deliver(tracker, FailureEvent(record, True, False))
    finally:
        tracker.close()

    # kept to replay once an operator grants the permission, not set aside as rejected
    assert spool.count() == 1
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


@contextmanager
def busy_with_another_clients_script(redis_url: str, client: redis.Redis) -> Iterator[None]:
    """Another client runs a two-second Lua script, and the server answers every other
    command BUSY after 100 ms of it (``lua-time-limit``, 5 s by default: the name Redis
    6.2 knows, an alias of 7's ``busy-reply-threshold``)."""
    threshold = str(client.config_get("lua-time-limit")["lua-time-limit"])
    slow = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < 2 do end"
    other = redis.Redis.from_url(redis_url)
    script = threading.Thread(target=other.eval, args=(slow, 0))
    client.config_set("lua-time-limit", 100)
    try:
        script.start()
        time.sleep(0.5)
        yield
    finally:
        script.join()
        other.close()
        client.config_set("lua-time-limit", threshold)


@pytest.fixture
def warm_tracker(redis_url: str) -> Iterator[Tracker]:
    """A tracker that has recorded a failure already (its script is loaded), so the
    next failure meets the server's state rather than a first script load."""
    tracker = Tracker(redis_url, fast_config())
    tracker.store.record_failure(FailedDocumentRecord("/docs/warmup.txt", "t-warm", "E: x"))
    yield tracker
    tracker.close()


def spooled_then_replayed(spool: Spool, tracker: Tracker, record: FailedDocumentRecord) -> None:
    """The failure waits in the spool, not rejected, and a replay records it."""
    assert spool.count() == 1
    assert not (spool.directory / "rejected.jsonl").exists()
    assert Reporter(spool).replay(tracker) == 1
    assert tracker.reports.get_record(record.doc_id) is not None


def test_a_failure_that_meets_a_busy_server_is_spooled_and_replayed_not_rejected(
    redis_url: str, redis_client: redis.Redis, warm_tracker: Tracker, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    record = FailedDocumentRecord("/docs/busy.txt", "t-busy", "E: x")
    # Given a server busy running another client's long script
    with busy_with_another_clients_script(redis_url, redis_client):
        # When a failure is delivered, the server answers BUSY: busy for now
        Reporter(spool).deliver(warm_tracker, FailureEvent(record, True, False))
        with pytest.raises(TrackerBusy, match="BUSY"):
            warm_tracker.store.record_failure(record)

    # Then the failure was spooled, not rejected (before: BUSY was a TrackerFailed,
    # filed in rejected.jsonl, never replayed, the failure never recorded), and once
    # the script is done it is replayed into the tracker
    spooled_then_replayed(spool, warm_tracker, record)


def test_a_failure_interrupted_by_the_soft_time_limit_is_spooled_not_rejected(
    redis_client: redis.Redis, warm_tracker: Tracker, tmp_path: Path
) -> None:
    # Given a worker whose Redis does not answer (paused), and a soft time limit that
    # fires while the failure event waits for it (as on a worker cut off from Redis)
    spool = Spool(tmp_path / "spool")
    record = FailedDocumentRecord("/docs/late.txt", "t-late", "E: x")

    def soft_limit(*_: Any) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    try:
        redis_client.client_pause(2000, all=False)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        Reporter(spool).deliver(warm_tracker, FailureEvent(record, True, False))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        redis_client.client_unpause()

    # Then it waits in the spool (before: "failure event cannot be applied; rejected",
    # moved to rejected.jsonl), and once Redis answers it is replayed into the tracker
    spooled_then_replayed(spool, warm_tracker, record)


def test_a_selection_by_error_signature_takes_exactly_that_group(
    manager: DocumentRecoveryManager, tmp_path: Path
) -> None:
    # Given two documents failing with the same problem (numbers differ) and one other
    timeouts = [
        track(manager, tmp_path / f"t{n}.txt", error_message=f"read timed out after {n}0 s")
        for n in (1, 2)
    ]
    other = track(manager, tmp_path / "other.txt", error_message="connection refused")
    groups = {manager.tracker.reports.get_record(r.doc_id).signature for r in timeouts}  # type: ignore[union-attr]
    assert len(groups) == 1

    # Then selecting that group's signature returns both, and the other group only its own
    (group,) = groups
    assert sorted(manager.select(Selection(signature=group))) == sorted(r.doc_id for r in timeouts)
    theirs = manager.tracker.reports.get_record(other.doc_id).signature  # type: ignore[union-attr]
    assert manager.select(Selection(signature=theirs)) == [other.doc_id]
    assert manager.select(Selection(signature="no-such-group")) == []
