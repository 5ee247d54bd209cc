"""Every snippet of the seed's documentation runs as written.

The seed (``/work/shared/seeds``) shows its API in code blocks: the processor with its
config dict and ``await processor.start_worker()``, ``run_document_recovery`` with the
seed's dict and with ``{'verbose': True}``, the status print lines, and the failed
documents loop. Each runs here as the seed writes it; only the Redis URL (the test's
server) and the document paths are this test's own. ``start_worker`` starts a real
``celery -A tasks worker`` child process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from celery import Celery
from celery.result import AsyncResult

from recovery import ConfigError, FailedDocumentsTracker, RecoveryConfig, installed
from recovery.records import FailedDocumentRecord, document_id
from recovery.store import Tracker

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HOUR = 3600.0
TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def seed_environment(
    celery_app: Celery, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """REDIS_URL and the spool point at this test; what the snippets change globally
    (the app's recovery config, the ``recovery`` logger's level) is put back after."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DOCRECOVERY_SPOOL_DIR", str(tmp_path / "spool"))
    rec = installed(celery_app)
    config = rec.config
    logger = logging.getLogger("recovery")
    level = logger.level
    yield
    logger.setLevel(level)
    rec.configure(config)
    celery_app.conf.update(broker_url=redis_url, result_backend=redis_url)


@pytest.fixture
def tracker(redis_url: str) -> Iterator[Tracker]:
    """A tracker to set up failures with: default backoff (1 h), no jitter."""
    tracker = FailedDocumentsTracker(redis_url, RecoveryConfig(retry_jitter=0.0))
    yield tracker
    tracker.close()


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def restored(root: Path, name: str) -> Path:
    """A document that failed as missing and is now back in place."""
    return Path(shutil.copy(SAMPLES / "worker-lost.txt", root / name))


def failure(path: str | Path, at: float, query: str | None = None) -> FailedDocumentRecord:
    return FailedDocumentRecord(
        document_path=str(path),
        task_id=f"lost-{Path(path).name}",
        error_message=f"FileNotFoundError: [Errno 2] No such file or directory: '{path}'",
        failure_timestamp=at,
        query=query,
        args=[str(path), query, {}],
        error_type="FileNotFoundError",
        error_category="file_not_found",
    )


# --- "Integration with Distributed Processor" ---------------------------------------


def test_the_processor_snippet_recovers_then_runs_a_worker_that_processes_documents(
    redis_url: str, doc_root: Path, tracker: Tracker, celery_app: Celery
) -> None:
    from distributed_processor import DistributedProcessor

    # Given a document that failed two hours ago and whose file is back
    recovered = Path(shutil.copy(SAMPLES / "worker-lost.txt", doc_root / "back.txt"))
    tracker.store.record_failure(failure(recovered, time.time() - 2 * HOUR, "lease"))
    fresh = Path(shutil.copy(SAMPLES / "celery-retries.txt", doc_root / "fresh.txt"))

    async def snippet() -> tuple[list[dict[str, Any]], int]:
        processor = DistributedProcessor(worker_id="worker-1", redis_url=redis_url)
        processor.config.update(seed.PROCESSOR_CONFIG)
        manager = processor.recovery_manager
        assert isinstance(manager.tracker, FailedDocumentsTracker)
        manager.close()

        # When the worker starts (a recovery attempt first, then the worker)
        worker = asyncio.create_task(processor.start_worker())
        try:
            ids = processor.submit([str(fresh)], query="retry")
            results = await asyncio.to_thread(
                lambda: [AsyncResult(i, app=celery_app).get(timeout=TIMEOUT) for i in ids]
            )
            # The recovered document's success is recorded once the worker reports it
            await asyncio.to_thread(
                wait_for,
                lambda: tracker.reports.get_record(document_id(str(recovered), "lease")) is None,
                "the recovered document to be cleared",
            )
        finally:
            await asyncio.to_thread(wait_for, lambda: processor._process, "the worker")
            processor.stop()
            try:
                code = await asyncio.wait_for(worker, 30)
            finally:
                if processor._process and processor._process.returncode is None:
                    processor._process.send_signal(signal.SIGKILL)
        return results, code

    results, code = asyncio.run(snippet())

    # Then the worker processed the submitted document and the recovered one
    assert [r["path"] for r in results] == [str(fresh)]
    assert results[0]["type"] == "text"
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["successful_recoveries"]) == (1, 1)
    # And it stopped cleanly when asked
    assert code == 0


def test_the_processor_applies_the_seeds_config_keys(redis_url: str, celery_app: Celery) -> None:
    from distributed_processor import DistributedProcessor

    processor = DistributedProcessor(worker_id="worker-1", redis_url=redis_url)
    processor.config.update(seed.PROCESSOR_CONFIG)

    manager = processor.recovery_manager
    try:
        for key, value in seed.PROCESSOR_CONFIG.items():
            assert getattr(manager.config, key) == value
        assert manager.tracker.url == redis_url
        # And the worker it starts gets the same settings
        assert installed(celery_app).config == manager.config
    finally:
        manager.close()


def test_the_processor_keeps_its_manager_until_its_config_changes(redis_url: str) -> None:
    from distributed_processor import DistributedProcessor

    processor = DistributedProcessor(worker_id="worker-1", redis_url=redis_url)
    try:
        first = processor.recovery_manager
        assert processor.recovery_manager is first

        processor.config.update({"recovery_batch_size": 7})

        second = processor.recovery_manager
        assert second is not first
        assert second.config.recovery_batch_size == 7
        assert processor.recovery_manager is second
    finally:
        processor.stop()


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_retry_count", -1), ("recovery_batch_size", 0), ("max_retries", 3)],
)
def test_a_bad_processor_config_value_fails_naming_the_key_and_starts_no_worker(
    redis_url: str, key: str, value: Any
) -> None:
    from distributed_processor import DistributedProcessor

    processor = DistributedProcessor(worker_id="worker-1", redis_url=redis_url)
    processor.config.update(seed.PROCESSOR_CONFIG)
    processor.config[key] = value

    with pytest.raises(ConfigError, match=key) as raised:
        asyncio.run(processor.start_worker())
    assert raised.value.key == key
    assert processor._process is None
    with pytest.raises(ConfigError, match=key):
        _ = processor.recovery_manager


# --- "Standalone Recovery Function" and "Debugging" --------------------------------


def test_run_document_recovery_with_the_seeds_dict_resubmits_what_is_due(
    redis_url: str,
    doc_root: Path,
    tracker: Tracker,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from recovery_system import run_document_recovery

    # Given a failure two hours old and one just now, both files present again
    due = failure(restored(doc_root, "due.txt"), time.time() - 2 * HOUR)
    tracker.store.record_failure(due)
    tracker.store.record_failure(failure(restored(doc_root, "recent.txt"), time.time()))

    async def main() -> None:
        config = dict(seed.STANDALONE_CONFIG)
        result = await run_document_recovery(redis_url=redis_url, config=config)
        print(f"Recovery completed: {result}")

    asyncio.run(main())

    out = capsys.readouterr().out
    assert out.startswith("Recovery completed: {")
    assert f"'{doc_root / 'due.txt'}'" in out
    assert "recent.txt" not in out
    assert redis_client.llen("documents") == 1
    record = tracker.reports.get_record(due.doc_id)
    assert record is not None
    # sent, not started yet: no worker runs in this test
    assert record.state == "sent"


def test_run_document_recovery_verbose_uses_redis_url_from_the_environment_and_logs(
    doc_root: Path,
    tracker: Tracker,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from recovery_system import run_document_recovery

    path = restored(doc_root, "due.txt")
    tracker.store.record_failure(failure(path, time.time() - 2 * HOUR))

    result = asyncio.run(run_document_recovery(config={"verbose": True}))

    assert [item["path"] for item in result["resubmitted"]] == [str(path)]
    assert redis_client.llen("documents") == 1
    assert logging.getLogger("recovery").getEffectiveLevel() == logging.DEBUG
    assert any(
        r.name.startswith("recovery.") and "1 resubmitted" in r.getMessage() for r in caplog.records
    )


# --- "Recovery Status" and "Recovery State Inspection" ------------------------------


@pytest.fixture
def known_failures(tracker: Tracker) -> dict[str, float]:
    """Three tracked documents (one due), one recovered and one failed recovery."""
    now = time.time()
    first = {"/docs/a.pdf": now - 3 * HOUR, "/docs/d.pdf": now - 2 * HOUR, "/docs/b.pdf": now}
    tracker.store.record_failure(failure("/docs/a.pdf", first["/docs/a.pdf"]))
    tracker.store.record_failure(failure("/docs/b.pdf", first["/docs/b.pdf"]))
    tracker.store.record_failure(failure("/docs/d.pdf", first["/docs/d.pdf"]))
    # d's recovery failed half an hour later: a retry, not due for two more hours
    tracker.store.record_failure(failure("/docs/d.pdf", now - 1.5 * HOUR), recovery_attempt=True)
    # c was recovered
    tracker.store.record_failure(failure("/docs/c.pdf", now - 2 * HOUR))
    tracker.store.resolve(document_id("/docs/c.pdf"), recovery_attempt=True)
    return first


@pytest.mark.usefixtures("known_failures")
def test_the_status_snippet_prints_the_seeds_three_lines(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed_processor import DistributedProcessor

    processor = DistributedProcessor(worker_id="worker-1", redis_url=redis_url)
    recovery_manager = processor.recovery_manager

    async def main() -> None:
        status = await recovery_manager.get_recovery_status()

        print(f"Total failed documents: {status['total_failed_documents']}")
        print(f"Eligible for recovery: {status['eligible_for_recovery']}")
        print(f"Recovery success rate: {status['recovery_metrics']['recovery_success_rate']:.2%}")

    try:
        asyncio.run(main())
    finally:
        recovery_manager.close()

    assert capsys.readouterr().out.splitlines() == [
        "Total failed documents: 3",
        "Eligible for recovery: 1",
        "Recovery success rate: 50.00%",
    ]


def test_the_inspection_snippet_lists_each_failed_document_oldest_first(
    redis_url: str, known_failures: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> None:
    from recovery_system import DocumentRecoveryManager

    manager = DocumentRecoveryManager(redis_url)
    tracker = manager.tracker

    async def main() -> None:
        failed_docs = await tracker.get_failed_documents()

        for doc in failed_docs:
            print(f"Document: {doc.document_path}")
            print(f"Error: {doc.error_message}")
            print(f"Retry count: {doc.retry_count}")
            print(f"Age: {doc.get_failure_age_hours():.1f} hours")
            print("---")

    try:
        asyncio.run(main())
    finally:
        manager.close()

    expected = []
    for path, retries, age in (
        ("/docs/a.pdf", 0, 3.0),
        ("/docs/d.pdf", 1, 2.0),
        ("/docs/b.pdf", 0, 0.0),
    ):
        assert known_failures[path] == pytest.approx(time.time() - age * HOUR, abs=60)
        expected += [
            f"Document: {path}",
            f"Error: FileNotFoundError: [Errno 2] No such file or directory: '{path}'",
            f"Retry count: {retries}",
            f"Age: {age:.1f} hours",
            "---",
        ]
    assert capsys.readouterr().out.splitlines() == expected


def test_the_seed_import_lines_name_the_real_classes() -> None:
    import distributed_processor
    import recovery_system
    from recovery import DocumentRecoveryManager, FailedDocumentsTracker, run_document_recovery
    from tasks.processor import DistributedProcessor

    assert distributed_processor.DistributedProcessor is DistributedProcessor
    assert recovery_system.run_document_recovery is run_document_recovery
    assert recovery_system.DocumentRecoveryManager is DocumentRecoveryManager
    assert recovery_system.FailedDocumentsTracker is FailedDocumentsTracker
    assert os.path.basename(recovery_system.__file__ or "") == "recovery_system.py"
