"""Concurrent recovery runs, in threads and in processes, never send a document twice
and never lose one: the claim is one atomic script call per batch. The runs send to
Redis or to RabbitMQ as the broker (``CELERY_BROKER_URL``, which a manager built
without an app sends to), the tracker staying on Redis."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from typing import Any

import redis
from brokers import Broker

from recovery.api import DocumentRecoveryManager, FailedDocumentsTracker
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord, document_id

HOUR = 3600.0
T0 = 1_700_000_000.0
NOW = T0 + 2 * HOUR
DOCUMENTS = 200
BATCH = 10
SPAWN = multiprocessing.get_context("spawn")


def config(**settings: Any) -> RecoveryConfig:
    return RecoveryConfig(retry_jitter=0.0, recovery_batch_size=BATCH, **settings)


def seed_due_documents(redis_url: str, count: int = DOCUMENTS) -> set[str]:
    tracker = FailedDocumentsTracker(redis_url, config())
    try:
        for n in range(count):
            record = FailedDocumentRecord(
                f"/docs/{n}.pdf", f"t{n}", "boom", failure_timestamp=T0 + n, args=[f"/docs/{n}.pdf"]
            )
            tracker.store.record_failure(record)
    finally:
        tracker.close()
    return {document_id(f"/docs/{n}.pdf") for n in range(count)}


def recover_until_nothing_is_due(redis_url: str) -> int:
    """One recovery process or thread: run batches, with its own manager, until the
    due index is empty. Returns how many documents this one resubmitted."""
    manager = DocumentRecoveryManager(redis_url, config())
    sent = 0
    try:
        tracker = manager.tracker
        while True:
            summary = manager.run_batch(now=NOW)
            sent += len(summary.resubmitted)
            if not summary.claimed and not tracker.connection.client.zcount(
                tracker.keys.due, "-inf", NOW
            ):
                return sent
    finally:
        manager.close()
        manager.app.close()


def assert_each_sent_exactly_once(broker: Broker, expected: set[str]) -> None:
    sent = broker.header_doc_ids("documents")
    twice = [doc for doc, n in Counter(sent).items() if n > 1]
    assert twice == []
    assert len(sent) == len(expected)
    assert set(sent) == expected


def test_eight_threads_running_batches_send_every_document_exactly_once(
    redis_url: str, broker: Broker
) -> None:
    # Given 200 due documents
    expected = seed_due_documents(redis_url)
    start = threading.Barrier(8)
    counts: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(30)
            counts.append(recover_until_nothing_is_due(redis_url))
        except BaseException as exc:
            errors.append(exc)

    # When 8 threads run recovery batches of 10 at once, each with its own manager
    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then each document was sent once: 200 messages, no doc id twice
    assert errors == []
    assert sum(counts) == DOCUMENTS
    assert_each_sent_exactly_once(broker, expected)
    tracker = FailedDocumentsTracker(redis_url, config())
    try:
        status = tracker.reports.status(now=NOW)
        assert (status["in_recovery"], status["eligible_for_recovery"]) == (DOCUMENTS, 0)
        assert status["recovery_metrics"]["recovery_attempts"] == DOCUMENTS
    finally:
        tracker.close()


def process_main(redis_url: str, start: Any, results: Any) -> None:
    """Child process: wait for the others, then recover until nothing is due."""
    start.wait(60)
    results.put(recover_until_nothing_is_due(redis_url))


def test_four_processes_running_batches_send_every_document_exactly_once(
    redis_url: str, redis_client: redis.Redis, broker: Broker
) -> None:
    # Given 200 due documents
    expected = seed_due_documents(redis_url)
    start = SPAWN.Barrier(4)
    results = SPAWN.Queue()

    # When 4 processes run recovery batches of 10 at once
    procs = [SPAWN.Process(target=process_main, args=(redis_url, start, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    counts = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0

    # Then no document was resubmitted twice and none was lost
    assert sum(counts) == DOCUMENTS
    assert_each_sent_exactly_once(broker, expected)
    for doc in expected:
        assert redis_client.hget(f"{{docrecovery}}:doc:{doc}", "state") == "sent"
        assert redis_client.hget(f"{{docrecovery}}:doc:{doc}", "attempts") == "1"


def test_concurrent_failures_of_one_document_count_every_retry(redis_url: str) -> None:
    # Given one document failing 200 times at once from 8 threads
    tracker = FailedDocumentsTracker(redis_url, config(max_retry_count=99))
    start = threading.Barrier(8)

    def fail_25_times(worker: int) -> None:
        start.wait(30)
        for n in range(25):
            record = FailedDocumentRecord(
                "/docs/a.pdf",
                f"t{worker}-{n}",
                "boom",
                failure_timestamp=T0,
                worker_id=f"w{worker}",
            )
            tracker.store.record_failure(record)

    try:
        threads = [threading.Thread(target=fail_25_times, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        # Then no update was lost: 200 failures, 199 counted retries, one record
        record = tracker.reports.get_record(document_id("/docs/a.pdf"))
        assert record is not None
        assert (record.failure_count, record.retry_count) == (200, 199)
        assert tracker.reports.status(now=T0)["total_failed_documents"] == 1
        assert sum(tracker.reports.analysis(now=T0)["error_categories"].values()) == 1
    finally:
        tracker.close()
