"""Reads the dashboard pages on: cursor pages over the indexes and the bounded series of
recoveries over time, against the session's redis-server with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.store import Selection, Settlement, Tracker
from recovery.store import series as series_module
from recovery.store.listings import parse_cursor

HOUR = 3600.0
T0 = 1_700_000_000.0


@pytest.fixture
def tracker(redis_url: str) -> Iterator[Tracker]:
    tracker = Tracker(redis_url, RecoveryConfig.from_mapping({"retry_jitter": 0.0}))
    yield tracker
    tracker.close()


def failure(path: str, at: float, **fields: Any) -> FailedDocumentRecord:
    fields.setdefault("task_id", f"task-{path}-{at}")
    fields.setdefault("error_message", "RuntimeError: boom")
    return FailedDocumentRecord(document_path=path, failure_timestamp=at, **fields)


def all_pages(tracker: Tracker, selection: Selection, limit: int, **kw: Any) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = tracker.reports.page("failed", selection, after, limit, **kw)
        pages.append(page.ids)
        if page.next is None:
            return pages
        after = page.next


def test_pages_walk_the_index_in_order_without_gaps_or_repeats(tracker: Tracker) -> None:
    # Given 23 documents, three of them failing at the very same instant (a score tie)
    records = [failure(f"/d/{i:02}.txt", T0 + (i if i > 3 else 0)) for i in range(23)]
    for record in records:
        tracker.store.record_failure(record)
    expected = tracker.reports.select()

    # When the failed index is read 5 at a time, cursor after cursor
    pages = all_pages(tracker, Selection(), 5, now=T0 + HOUR)

    # Then the pages hold every id once, in the index's order, the last one short
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [doc for page in pages for doc in page] == expected


def test_a_page_filters_and_the_budget_bounds_what_it_examines(tracker: Tracker) -> None:
    # Given 40 documents of which every tenth is a timeout
    for i in range(40):
        category = "timeout" if i % 10 == 0 else "other"
        tracker.store.record_failure(failure(f"/d/{i:02}.txt", T0 + i, error_category=category))

    # When a page of timeouts may examine only 15 entries
    first = tracker.reports.page("failed", Selection(category="timeout"), limit=10, budget=15)

    # Then it stops there with the two matches it saw and a cursor to go on from
    assert first.examined == 15
    assert [r.document_path for r in first.records] == ["/d/00.txt", "/d/10.txt"]
    assert first.next is not None
    rest = tracker.reports.page("failed", Selection(category="timeout"), first.next)
    assert [r.document_path for r in rest.records] == ["/d/20.txt", "/d/30.txt"]
    assert rest.next is None


def test_a_page_of_the_dead_index_and_an_age_filter(tracker: Tracker) -> None:
    tracker.store.record_failure(failure("/d/old.txt", T0, error_category="permanent"))
    tracker.store.record_failure(failure("/d/new.txt", T0 + 5 * HOUR, error_category="permanent"))
    tracker.store.record_failure(failure("/d/live.txt", T0))

    dead = tracker.reports.page("dead", Selection(), now=T0 + 6 * HOUR)
    old = tracker.reports.page("dead", Selection(older_than_hours=3), now=T0 + 6 * HOUR)

    assert [r.document_path for r in dead.records] == ["/d/old.txt", "/d/new.txt"]
    assert [r.document_path for r in old.records] == ["/d/old.txt"]


@pytest.mark.parametrize("raw", ["", "abc", "1.5", "nan:abc", "inf:abc", "1.5:"])
def test_a_bad_cursor_is_refused_naming_the_form(raw: str) -> None:
    with pytest.raises(ValueError, match="expected '<score>:<document id>'"):
        parse_cursor(raw)


def recover_once(tracker: Tracker, record: FailedDocumentRecord, at: float, ok: bool) -> None:
    """One recovery attempt of a tracked document, sent at ``at``, ending a minute on."""
    claim = tracker.claims.claim_due(10, now=at, force=True)
    tracker.claims.settle([Settlement(record.doc_id, "sent", f"t-{at}")], token=claim.token, now=at)
    if ok:
        tracker.store.resolve(record.doc_id, recovery_attempt=True, now=at + 60)
    else:
        retried = failure(record.document_path, at + 60, task_id=f"t-{at}")
        tracker.store.record_failure(retried, recovery_attempt=True)


def test_recoveries_over_time_counts_sends_successes_and_failures_per_hour(
    tracker: Tracker,
) -> None:
    start = (T0 // HOUR) * HOUR
    a, b = failure("/d/a.txt", start - HOUR), failure("/d/b.txt", start - HOUR)
    tracker.store.record_failure(a)
    tracker.store.record_failure(b)

    # a fails its recovery in the first hour; both are recovered in the third
    recover_once(tracker, a, start + 10, ok=False)
    tracker.claims.settle([], token="", now=start + HOUR + 10)  # a run that sent nothing
    recover_once(tracker, a, start + 2 * HOUR + 10, ok=True)
    recover_once(tracker, b, start + 2 * HOUR + 20, ok=True)

    got = [
        (b.start - start, b.resubmitted, b.recovered, b.failed)
        for b in tracker.reports.recoveries_over_time()
    ]
    # the failure shows in the bucket of the next run that noted the count
    assert got == [(0, 1, 0, 0), (HOUR, 0, 0, 1), (2 * HOUR, 2, 2, 0)]


def test_recoveries_over_time_stays_bounded(
    tracker: Tracker, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(series_module, "KEEP", 3)
    start = (T0 // HOUR) * HOUR
    record = failure("/d/a.txt", start - HOUR)
    tracker.store.record_failure(record)
    for hour in range(6):
        recover_once(tracker, record, start + hour * HOUR + 10, ok=False)

    got = tracker.reports.recoveries_over_time()

    assert [b.start - start for b in got] == [3 * HOUR, 4 * HOUR, 5 * HOUR]
    # the oldest kept bucket still knows how many failed before it
    assert [b.failed for b in got] == [1, 1, 1]
    assert redis_client.hlen(tracker.keys.series) == 3 * 2 + 1
