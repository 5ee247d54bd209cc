"""``shards`` > 1 on the session's Redis: documents spread over K hash-tagged key sets.

Every tracker operation routes by the document's shard or visits every shard; what
the tracker reports is the sum of its shards. The tags are chosen so K shards land on
K different primaries of an evenly split cluster (tests/test_cluster.py runs them on
one); here one server holds them all, which is all the routing needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import trackers
from faults.support import Interrupted, interrupted_at, wait_for

from recovery.calls import RunCall
from recovery.config import RecoveryConfig
from recovery.errors import ConfigError, CorruptCounter
from recovery.keys import SLOTS, Keys, shard_keys, shard_of, slot
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord, document_id
from recovery.store import Selection, Settlement, Tracker

T0 = 1_700_000_000.0
HOUR = 3600.0
SHARDS = 3


@pytest.fixture
def make_tracker(redis_url: str) -> Iterator[Callable[..., Tracker]]:
    with trackers(redis_url, min_retry_interval_hours=0.0, shards=SHARDS) as create:
        yield create


@pytest.fixture
def tracker(make_tracker: Callable[..., Tracker]) -> Tracker:
    return make_tracker()


def paths_in(shard: int, count: int, count_of: int = SHARDS) -> list[str]:
    """``count`` document paths whose ids fall in ``shard``."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        path = f"/docs/{n}.pdf"
        if shard_of(document_id(path), count_of) == shard:
            found.append(path)
        n += 1
    return found


def fail(tracker: Tracker, path: str, at: float = T0, **fields: Any) -> str:
    fields.setdefault("task_id", f"task-{path}-{at}")
    record = FailedDocumentRecord(
        document_path=path, failure_timestamp=at, error_message="RuntimeError: boom", **fields
    )
    tracker.store.record_failure(record)
    return record.doc_id


def shard_sizes(client: redis.Redis, tracker: Tracker, index: str = "failed") -> list[int]:
    return [int(client.zcard(getattr(s.keys, index))) for s in tracker.connection.shards]


# --- names ----------------------------------------------------------------------------


def test_one_shard_is_todays_layout_and_more_have_pinned_tags() -> None:
    assert shard_keys("docrecovery", 1) == (Keys(),)
    assert [k.prefix for k in shard_keys("docrecovery", 3)] == [
        "docrecovery:0.1",
        "docrecovery:1",
        "docrecovery:2.8",
    ]
    assert shard_keys("docrecovery", 3)[1].due == "{docrecovery:1}:due"


@pytest.mark.parametrize("count", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("prefix", ["docrecovery", "acme-prod"])
def test_each_shard_sits_mid_way_in_its_share_of_the_slots(prefix: str, count: int) -> None:
    width = SLOTS / count
    slots = [slot(keys.prefix) for keys in shard_keys(prefix, count)]

    for i, at in enumerate(slots):
        assert i * width + width / 4 <= at < i * width + 3 * width / 4


def test_three_shards_land_on_three_primaries_of_redis_cli_split() -> None:
    # redis-cli --cluster create gives 3 primaries 0-5460, 5461-10922, 10923-16383
    owners = {slot(k.prefix) * 3 // SLOTS for k in shard_keys("docrecovery", 3)}

    assert owners == {0, 1, 2}


def test_a_document_always_goes_to_the_same_shard_and_ids_spread_evenly() -> None:
    assert [shard_of(document_id(f"/d/{i}.pdf"), 3) for i in range(6)] == [2, 1, 0, 1, 1, 1]
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of(document_id(f"/spread/{i}.txt"), 3)] += 1
    assert all(900 < c < 1100 for c in counts)


@pytest.mark.parametrize("value", [0, -1, 257, "3"])
def test_a_bad_shard_count_is_refused_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="'shards'"):
        RecoveryConfig(shards=value)


def test_shards_is_read_from_the_environment() -> None:
    assert RecoveryConfig.from_env(environ={"DOCRECOVERY_SHARDS": "4"}).shards == 4


# --- writes and reports ---------------------------------------------------------------


def test_failures_spread_over_the_shards_and_status_counts_them_all(
    make_tracker: Callable[..., Tracker], redis_client: redis.Redis
) -> None:
    tracker = make_tracker(max_retry_count=1)
    for n in range(30):
        fail(tracker, f"/docs/{n}.pdf", worker_id=f"w{n % 2}", query="q")
    doomed = fail(tracker, "/docs/bad.pdf", error_category="permanent", worker_id="w0")

    sizes = shard_sizes(redis_client, tracker)
    assert sum(sizes) == 31
    assert all(size > 0 for size in sizes)
    assert redis_client.exists(tracker.connection.shard(doomed).keys.record(doomed)) == 1
    assert not redis_client.keys("{docrecovery}*")
    status, analysis = tracker.reports.overview()
    assert (status["total_failed_documents"], status["eligible_for_recovery"]) == (31, 30)
    assert status["dead"] == 1
    assert status["recovery_metrics"]["failures_recorded"] == 31
    assert analysis["age_distribution"][">7d"] == 31
    assert analysis["error_categories"] == {"other": 30, "permanent": 1}
    assert analysis["workers"]["w0"] == {
        "tracked": 16,
        "failures": 16,
        "processed": 16,
        "failure_rate": 1.0,
    }
    assert analysis["queries"]["q"]["tracked"] == 30
    [group] = analysis["error_signatures"]
    assert (group["count"], group["first_seen"]) == (31, T0)


def test_a_claim_deals_its_batch_among_the_shards_from_a_moving_start(
    tracker: Tracker,
) -> None:
    for shard in range(SHARDS):
        for path in paths_in(shard, 4):
            fail(tracker, path)

    def by_shard(records: list[FailedDocumentRecord]) -> list[int]:
        counts = [0] * SHARDS
        for record in records:
            counts[shard_of(record.doc_id, SHARDS)] += 1
        return counts

    first = tracker.claims.claim_due(4, now=T0 + HOUR)
    second = tracker.claims.claim_due(4, now=T0 + HOUR)

    assert by_shard(first.records) == [2, 1, 1]
    assert by_shard(second.records) == [1, 2, 1]
    assert not {r.doc_id for r in first.records} & {r.doc_id for r in second.records}


def test_a_claim_fills_its_batch_from_the_shards_that_have_documents(tracker: Tracker) -> None:
    for path in paths_in(0, 5) + paths_in(2, 1):
        fail(tracker, path)

    claim = tracker.claims.claim_due(4, now=T0 + HOUR)

    assert sorted(shard_of(r.doc_id, SHARDS) for r in claim.records) == [0, 0, 0, 2]


def test_a_run_settles_in_every_shard_and_is_counted_once(tracker: Tracker) -> None:
    ids = [fail(tracker, path) for shard in range(SHARDS) for path in paths_in(shard, 1)]
    claim = tracker.claims.claim_due(10, now=T0 + HOUR)
    assert sorted(r.doc_id for r in claim.records) == sorted(ids)

    sent = tracker.claims.settle(
        [Settlement(ids[0], "sent", "t-new"), Settlement(ids[1], "release", "no")],
        token=claim.token,
        now=T0 + HOUR,
    )
    tracker.claims.release([ids[2]], token=claim.token)

    assert sent == 1
    status = tracker.reports.status(now=T0 + HOUR)
    metrics = status["recovery_metrics"]
    assert (metrics["recovery_runs"], metrics["recovery_attempts"]) == (1, 1)
    assert metrics["last_recovery_run"] == T0 + HOUR
    assert (status["in_recovery"], status["eligible_for_recovery"]) == (1, 2)
    assert tracker.store.resolve(ids[0], task_id="t-new", recovery_attempt=True).tracked
    assert tracker.reports.status()["recovery_metrics"]["successful_recoveries"] == 1


def test_a_settle_cut_off_after_one_shards_part_counts_each_part_once_when_applied_again(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a claim of a document in each shard, the settle script loaded (as by any run)
    ids = [fail(tracker, path) for shard in range(SHARDS) for path in paths_in(shard, 1)]
    claim = tracker.claims.claim_due(10, now=T0 + HOUR)
    outcomes = [Settlement(doc, "sent", f"t-{doc}") for doc in ids]
    redis_client.script_load(tracker.connection.scripts.settle.source)

    # When the settle is cut off as it reads the first shard's reply (that shard's part
    # applied, the others not sent), and the run settles the same outcomes again
    with pytest.raises(Interrupted), interrupted_at("parse_response"):
        tracker.claims.settle(outcomes, token=claim.token, now=T0 + HOUR)
    first = tracker.keys.record(ids[0])
    wait_for(lambda: redis_client.hget(first, "state") == "sent", 10, "the first part applied")
    assert tracker.claims.settle(outcomes, token=claim.token, now=T0 + HOUR) == SHARDS

    # Then every part is applied and counted once, the run once (bug: the first shard's
    # part counted twice, and that shard the run twice)
    metrics = tracker.reports.status(now=T0 + HOUR)["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["recovery_runs"]) == (SHARDS, 1)
    states = {redis_client.hget(tracker.connection.shard(d).keys.record(d), "state") for d in ids}
    assert states == {"sent"}


def test_a_settle_one_shards_counter_refuses_still_settles_every_shards_documents(
    tracker: Tracker, redis_client: redis.Redis
) -> None:
    # Given a claim across every shard, and the first shard's count of attempts set by
    # hand to a word
    ids = [fail(tracker, path) for shard in range(SHARDS) for path in paths_in(shard, 1)]
    claim = tracker.claims.claim_due(10, now=T0 + HOUR)
    stats = [shard.keys.stats for shard in tracker.connection.shards]
    redis_client.hset(stats[0], "recovery_attempts", "abc")

    # When the run settles what it sent (before: the first shard's script failed at the
    # counter and the other shards were not settled: left claimed, their documents
    # would have been sent again once the lease ran out)
    with pytest.raises(CorruptCounter) as refused:
        tracker.claims.settle(
            [Settlement(doc_id, "sent", f"t-{doc_id}") for doc_id in ids],
            token=claim.token,
            now=T0 + HOUR,
        )

    # Then every document is marked sent, and only the refused count is left as it was
    assert (refused.value.key, refused.value.field, refused.value.value) == (
        stats[0],
        "recovery_attempts",
        "abc",
    )
    assert [state_of(tracker, doc_id) for doc_id in ids] == ["sent"] * SHARDS
    assert [redis_client.hget(key, "recovery_attempts") for key in stats] == ["abc", "1", "1"]


def state_of(tracker: Tracker, doc_id: str) -> str:
    record = tracker.reports.get_record(doc_id)
    assert record is not None
    return record.state


def test_an_operators_retry_claims_across_shards(tracker: Tracker) -> None:
    ids = [fail(tracker, path) for shard in range(SHARDS) for path in paths_in(shard, 2)]

    claim = tracker.claims.claim_ids([*ids, "not-tracked"])

    assert sorted(r.doc_id for r in claim.records) == sorted(ids)
    assert tracker.claims.claim_ids(ids).records == []


def test_lost_runs_are_found_and_ended_in_their_documents_shards(tracker: Tracker) -> None:
    # Given a run checked in for a document of each shard, each past its deadline
    calls = [
        RunCall(f"t{shard}", "tasks.process_document", path, worker="w1")
        for shard in range(SHARDS)
        for path in paths_in(shard, 1)
    ]
    for call in calls:
        assert tracker.store.begin(document_id(call.path), call, 0, now=T0)[0] == "run"

    # Then a sweep finds all of them, and one ended by task id is gone from its shard
    assert sorted(c.task_id for c in tracker.store.lost_runs(T0 + 1)) == ["t0", "t1", "t2"]
    assert tracker.store.end_run("t1") is True
    assert tracker.store.end_run("t1") is False
    manager = RecoveryManager(tracker=tracker)
    assert manager.sweep_lost(now=T0 + 1) == 2
    assert tracker.store.lost_runs(T0 + 1) == []
    lost = tracker.reports.get_record(document_id(calls[0].path))
    assert lost is not None
    assert lost.error_category == "worker_lost"


def test_listing_holding_and_selecting_read_every_shard_in_order(tracker: Tracker) -> None:
    ids = [fail(tracker, f"/docs/{n}.pdf", at=T0 + n) for n in range(9)]

    assert [r.doc_id for r in tracker.reports.get_failed_documents()] == ids
    page = tracker.reports.get_failed_documents(limit=3, offset=2)
    assert [r.doc_id for r in page] == ids[2:5]
    assert tracker.reports.select(Selection(limit=4)) == ids[:4]
    dead = fail(tracker, "/docs/dead.pdf", at=T0 + 20, error_category="permanent")
    by_key = tracker.reports.get_failed_documents(index=tracker.keys.dead)
    assert [r.doc_id for r in by_key] == [dead]
    claim = tracker.claims.claim_due(9, now=T0 + HOUR)
    tracker.claims.settle(
        [Settlement(r.doc_id, "wait", "file missing") for r in claim.records], token=claim.token
    )
    assert sorted(r.doc_id for r in tracker.reports.held(20)) == sorted(ids)
    assert tracker.claims.reopen([(doc_id, None) for doc_id in ids]) == 9


def test_maintenance_cleans_every_shard(
    make_tracker: Callable[..., Tracker], redis_client: redis.Redis
) -> None:
    tracker = make_tracker(failed_docs_retention_days=1, dead_max=3)
    for n in range(6):
        fail(tracker, f"/old/{n}.pdf", at=T0 - 2 * 86400)
    dead = [
        fail(tracker, f"/dead/{n}.pdf", at=T0 + n, error_category="permanent") for n in range(9)
    ]
    kept = [fail(tracker, f"/new/{n}.pdf") for n in range(6)]

    removed = tracker.maintenance.cleanup(now=T0 + HOUR)

    # dead_max is each shard's share (1 of 3 here): the oldest dead of every shard go
    assert removed == {"expired": 6, "dead_trimmed": 6}
    assert sorted(shard_sizes(redis_client, tracker, "dead")) == [1, 1, 1]
    assert len({shard_of(d, SHARDS) for d in dead}) == SHARDS
    assert tracker.maintenance.delete(kept) == 6
    assert tracker.reports.status()["total_failed_documents"] == 3
    assert tracker.reports.analysis()["error_categories"] == {"permanent": 3}
    assert tracker.maintenance.drop_everything() > 0
    assert redis_client.keys("*") == []


def test_environments_and_import_failures_live_in_every_shard(tracker: Tracker) -> None:
    assert tracker.store.register_environment("w1", "fp-old") == (1, True)
    ids = [
        fail(tracker, path, error_category="import", fingerprint="fp-old")
        for shard in range(SHARDS)
        for path in paths_in(shard, 1)
    ]

    assert tracker.store.register_environment("w2", "fp-new") == (2, True)

    assert sorted(tracker.store.promote_imports()) == sorted(ids)
    assert tracker.reports.environments() == {"w1": 1, "w2": 2}


def test_circuit_breakers_see_every_shards_recent_outcomes(tracker: Tracker) -> None:
    # Given one recovery that failed in shard 0 and two that succeeded in shard 1
    fail(tracker, paths_in(0, 1)[0], recovery_attempts=1)
    for path in paths_in(0, 1):
        tracker.store.record_failure(
            FailedDocumentRecord(path, "t-again", "RuntimeError: boom", failure_timestamp=T0),
            recovery_attempt=True,
        )
    for path in paths_in(1, 2):
        doc_id = fail(tracker, path)
        tracker.store.resolve(doc_id, recovery_attempt=True, task_id="t")

    # Then the breaker window holds all three, the newest of each shard last
    assert tracker.reports.breaker_windows() == {"other": "101"}


def test_scripts_reload_after_a_script_flush(tracker: Tracker, redis_client: redis.Redis) -> None:
    fail(tracker, "/docs/a.pdf")
    assert tracker.reports.status()["total_failed_documents"] == 1

    redis_client.script_flush()
    assert tracker.reports.status()["total_failed_documents"] == 1

    redis_client.script_flush()
    fail(tracker, "/docs/b.pdf")
    assert tracker.reports.status()["total_failed_documents"] == 2

    redis_client.script_flush()
    assert len(tracker.claims.claim_due(5, now=T0 + HOUR).records) == 2
