"""The seed's recovery semantics, end to end: the recovery's config decides.

A real in-thread worker records failures with the recovery system's *default* settings
(a 1 h backoff), as a worker started with no ``DOCRECOVERY_*`` variables does; the
seed's own examples then run recovery with their own settings, and those decide.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from celery import Celery
from faults.support import wait_for

from recovery import RecoveryConfig, installed
from recovery.api import DocumentRecoveryManager, FailedDocumentsTracker, run_document_recovery
from recovery.records import FailedDocumentRecord, document_id

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TIMEOUT = 30.0
TASK = "tasks.process_document"

pytestmark = pytest.mark.usefixtures("redis_url", "celery_worker")


@pytest.fixture
def default_worker(celery_app: Celery, tmp_path: Path) -> Iterator[None]:
    """The worker's recovery with every default (1 h backoff, jitter, 3 retries)."""
    rec = installed(celery_app)
    original = rec.config
    rec.configure(RecoveryConfig(enable_periodic_recovery=False, spool_dir=str(tmp_path / "s")))
    yield
    rec.configure(original)


@pytest.fixture
def tracker(redis_url: str) -> Iterator[FailedDocumentsTracker]:
    made = FailedDocumentsTracker(redis_url, RecoveryConfig())
    yield made
    made.close()


def fail_missing(
    app: Celery, tracker: FailedDocumentsTracker, paths: list[Path]
) -> list[FailedDocumentRecord]:
    """Send documents whose files do not exist; their records once the worker has
    recorded each failure."""
    for path in paths:
        assert not path.exists()
        app.send_task(TASK, args=[str(path), None, {}])
    ids = [document_id(str(path)) for path in paths]
    wait_for(lambda: all(tracker.reports.get_record(i) for i in ids), TIMEOUT, "the failures")
    records = [tracker.reports.get_record(i) for i in ids]
    return [r for r in records if r is not None]


def restore(paths: list[Path]) -> None:
    for path in paths:
        shutil.copy(SAMPLES / "worker-lost.txt", path)


# --- the recovery's config decides -------------------------------------------------------


@pytest.mark.usefixtures("default_worker")
def test_the_seeds_standalone_example_recovers_what_a_default_worker_recorded(
    celery_app: Celery, redis_url: str, doc_root: Path, tracker: FailedDocumentsTracker
) -> None:
    # Given a worker with default settings recorded a missing file (its own backoff
    # would wait an hour), and the file is restored
    path = doc_root / "restored.txt"
    [record] = fail_missing(celery_app, tracker, [path])
    assert record.next_retry_at is not None
    assert record.next_retry_at > time.time() + 0.9 * 3600
    restore([path])

    # When the seed's standalone recovery runs with a zero minimum interval
    config = {**seed.STANDALONE_CONFIG, "min_retry_interval_hours": 0.0}
    result = asyncio.run(run_document_recovery(redis_url=redis_url, config=config))

    # Then it resubmits the document (bug: it resubmitted nothing, the worker's
    # one-hour due time decided), and the worker processes it
    assert [item["doc_id"] for item in result["resubmitted"]] == [record.doc_id]
    wait_for(lambda: tracker.reports.get_record(record.doc_id) is None, TIMEOUT, "the recovery")
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["successful_recoveries"]) == (1, 1)


@pytest.mark.usefixtures("default_worker")
def test_three_standalone_recoveries_at_once_resubmit_each_document_exactly_once(
    celery_app: Celery, redis_url: str, doc_root: Path, tracker: FailedDocumentsTracker
) -> None:
    paths = [doc_root / f"doc-{n}.txt" for n in range(5)]
    records = fail_missing(celery_app, tracker, paths)
    restore(paths)
    config = {**seed.STANDALONE_CONFIG, "min_retry_interval_hours": 0.0}

    async def three() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(run_document_recovery(redis_url=redis_url, config=config) for _ in range(3))
            )
        )

    results = asyncio.run(three())

    # Then the five were resubmitted once each across the three runs, and recovered
    sent = [item["doc_id"] for result in results for item in result["resubmitted"]]
    assert sorted(sent) == sorted(r.doc_id for r in records)
    wait_for(
        lambda: tracker.reports.status()["total_failed_documents"] == 0, TIMEOUT, "the recoveries"
    )
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["successful_recoveries"]) == (5, 5)


def test_runs_while_no_worker_takes_the_queue_neither_resend_nor_count_a_queued_document(
    redis_url: str, redis_client: redis.Redis, tracker: FailedDocumentsTracker
) -> None:
    # Given a failed document and a recovery whose queue no worker consumes (down)
    tracker.store.record_failure(
        FailedDocumentRecord("/docs/a.txt", "t1", "E: x", failure_timestamp=time.time() - 60)
    )
    parked = {"min_retry_interval_hours": 0.0, "resubmit_queue": "parked"}
    manager = DocumentRecoveryManager(redis_url, parked)
    try:
        # When three runs come one after the other
        sent = [len(manager.run_batch().resubmitted) for _ in range(3)]
    finally:
        manager.close()

    # Then it was sent once, counts one attempt and no retry, and is not dead (bug:
    # each run resent it, counted a retry, and the third marked it dead)
    assert sent == [1, 0, 0]
    assert redis_client.llen("parked") == 1
    record = tracker.reports.get_record(document_id("/docs/a.txt"))
    assert record is not None
    assert (record.state, record.retry_count, record.recovery_attempts) == ("sent", 0, 1)
    assert tracker.reports.status()["dead"] == 0


def test_a_timeout_under_default_settings_is_retried_with_a_longer_limit(
    redis_url: str, tracker: FailedDocumentsTracker
) -> None:
    # Given a run that timed out at the default 300 s limit
    tracker.store.record_failure(
        FailedDocumentRecord(
            "/docs/slow.pdf",
            "t1",
            "TimeLimitExceeded: 300",
            failure_timestamp=time.time() - 2 * 3600,
            error_type="TimeLimitExceeded",
            error_category="timeout",
            time_limit=300,
        )
    )

    # When a run with default settings looks at it, it gets twice the time (bug: both
    # limits default to 300 s, so the cap kept it at 300 and nothing grew)
    manager = DocumentRecoveryManager(redis_url, {})
    try:
        [plan] = manager.run_batch(dry_run=True).would_resubmit
    finally:
        manager.close()
    assert plan.time_limit == 600


# --- what the seed's API says -------------------------------------------------------------


@pytest.mark.usefixtures("default_worker")
def test_errors_are_grouped_by_similarity_with_a_count_an_example_and_when_seen(
    celery_app: Celery, doc_root: Path, tracker: FailedDocumentsTracker
) -> None:
    # Given five missing files and one unsupported document
    records = fail_missing(celery_app, tracker, [doc_root / f"x{n}23.txt" for n in range(5)])
    odd = doc_root / "odd.xyz"
    odd.write_text("?")
    celery_app.send_task(TASK, args=[str(odd), None, {}])
    wait_for(lambda: tracker.reports.get_record(document_id(str(odd))), TIMEOUT, "the odd failure")

    groups = tracker.reports.analysis()["error_signatures"]

    # Then the five form one group, the other its own
    assert [group["count"] for group in groups] == [5, 1]
    missing = groups[0]
    assert (missing["error_type"], missing["category"]) == ("FileNotFoundError", "file_not_found")
    assert missing["example"].startswith("FileNotFoundError: ")
    assert missing["first_seen"] <= missing["last_seen"]
    assert {r.signature for r in records} == {missing["signature"]}
    # And a record's error_message is the error itself, its traceback kept apart
    assert records[0].error_message.startswith("FileNotFoundError: ")
    assert "Traceback (most recent call last)" in records[0].traceback
    assert "Traceback" not in records[0].error_message


def test_worker_failure_rates_count_workers_that_never_failed(
    tracker: FailedDocumentsTracker,
) -> None:
    tracker.store.record_failure(FailedDocumentRecord("/a", "t1", "E: x", worker_id="w-bad"))
    tracker.store.resolve(document_id("/b"), worker="w-bad")
    for path in ("/c", "/d"):
        tracker.store.resolve(document_id(path), worker="w-good")

    workers = tracker.reports.analysis()["workers"]

    assert workers["w-good"] == {"tracked": 0, "failures": 0, "processed": 2, "failure_rate": 0.0}
    assert workers["w-bad"]["failure_rate"] == 0.5


def test_mark_success_takes_a_path_and_query_as_the_seeds_tracker_does(
    tracker: FailedDocumentsTracker,
) -> None:
    record = FailedDocumentRecord("/docs/a.pdf", "t1", "E: x", query="revenue")
    tracker.store.record_failure(record)

    async def scenario() -> tuple[bool, bool, bool]:
        wrong_query = await tracker.mark_success("/docs/a.pdf", "costs")
        by_path = await tracker.mark_success("/docs/a.pdf", "revenue")
        again = await tracker.mark_success(record.doc_id)
        return wrong_query, by_path, again

    # Then the path with its query matches, and a second call says nothing matched
    assert asyncio.run(scenario()) == (False, True, False)
    assert tracker.reports.get_record(record.doc_id) is None


def test_recovering_now_ignores_the_backoff_and_counts_as_usual(
    redis_url: str, celery_app: Celery, tracker: FailedDocumentsTracker
) -> None:
    # Given a failure a minute old under a one-hour backoff
    record = FailedDocumentRecord(
        "/docs/missing-for-good.txt", "t1", "E: x", failure_timestamp=time.time() - 60
    )
    tracker.store.record_failure(record)
    manager = DocumentRecoveryManager(redis_url, {"resubmit_queue": "parked"}, app=celery_app)
    try:
        # When a normal run looks, then recovery.run(force=True)
        assert manager.run_batch().resubmitted == []
        forced = manager.run_batch(force=True)
    finally:
        manager.close()

    # Then only the forced run sends it, as an attempt like any other
    assert [item.doc_id for item in forced.resubmitted] == [record.doc_id]
    read = tracker.reports.get_record(record.doc_id)
    assert read is not None
    assert (read.state, read.recovery_attempts, read.retry_count) == ("sent", 1, 0)


def test_a_verbose_run_logs_each_decision_at_debug(
    redis_url: str,
    doc_root: Path,
    tracker: FailedDocumentsTracker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    present = doc_root / "present.txt"
    restore([present])
    for path in (present, doc_root / "absent.txt"):
        tracker.store.record_failure(
            FailedDocumentRecord(
                str(path), "t", "E: x", failure_timestamp=time.time() - 60,
                error_category="file_not_found", args=[str(path)],
            )
        )  # fmt: skip
    config = {"verbose": True, "min_retry_interval_hours": 0.0, "resubmit_queue": "parked"}
    manager = DocumentRecoveryManager(redis_url, config)
    try:
        with caplog.at_level(logging.DEBUG, logger="recovery"):
            manager.run_batch()
    finally:
        manager.close()

    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(f"resubmitted {present}" in line and "to parked" in line for line in lines), lines
    assert any("file still missing" in line and "wait" in line for line in lines), lines
    assert not [r for r in caplog.records if r.name.startswith("redis")]
