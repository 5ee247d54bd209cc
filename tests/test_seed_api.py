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
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from brokers import Broker
from celery import Celery
from celery.result import AsyncResult
from faults.support import wait_for

from recovery import ConfigError, FailedDocumentsTracker, RecoveryConfig, installed
from recovery.keys import Keys
from recovery.records import FailedDocumentRecord, document_id
from recovery.store import Tracker

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HOUR = 3600.0
TIMEOUT = 60.0
#: A periodic recovery interval short enough to watch several runs: 1.2 s.
INTERVAL_MINUTES = 0.02


@pytest.fixture(autouse=True)
def seed_environment(
    celery_app: Celery, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """REDIS_URL and the spool point at this test; what the snippets change globally
    (the app's recovery config, the ``recovery`` logger's level) is put back after."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DOCRECOVERY_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("DOCRECOVERY_DATA_DIR", str(tmp_path / "data"))
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
    redis_url: str, doc_root: Path, tracker: Tracker, celery_app: Celery, broker: Broker
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
                TIMEOUT,
                "the recovered document to be cleared",
            )
        finally:
            await asyncio.to_thread(wait_for, lambda: processor._process, TIMEOUT, "the worker")
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
    # And it stopped cleanly when asked, leaving nothing on the broker
    assert code == 0
    assert broker.idle()


@contextlib.asynccontextmanager
async def working(processor: Any) -> AsyncIterator[None]:
    """``processor.start_worker()`` running for the block: entered once the start-up
    recovery run is done and the worker process exists. On the way out the worker is
    stopped and must exit 0 with every process it started (pool, embedded beat) gone."""
    worker = asyncio.create_task(processor.start_worker())
    try:
        while processor._process is None:
            if worker.done():
                raise AssertionError(f"start_worker() ended without a worker: {worker.result()}")
            await asyncio.sleep(0.05)
        yield
    finally:
        children = descendants(processor._process.pid) if processor._process else []
        processor.stop()
        try:
            code = await asyncio.wait_for(worker, 30)
        finally:
            if processor._process and processor._process.returncode is None:
                processor._process.send_signal(signal.SIGKILL)
    assert code == 0
    await asyncio.to_thread(
        wait_for, lambda: not any(map(running, children)), 10, "the worker's children to exit"
    )


def descendants(pid: int) -> list[int]:
    found = []
    path = Path(f"/proc/{pid}/task/{pid}/children")
    for child in map(int, path.read_text().split() if path.exists() else []):
        found += [child, *descendants(child)]
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def holds(condition: Callable[[], bool], what: str, seconds: float) -> None:
    """Fail as soon as ``condition`` stops holding within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.05)


def test_the_processor_recovers_periodically_while_its_worker_runs(
    redis_url: str, doc_root: Path, tracker: Tracker, redis_client: redis.Redis
) -> None:
    from distributed_processor import DistributedProcessor

    # Given a failure whose file is still missing when the worker starts
    doc_id = document_id(str(doc_root / "late.txt"))
    tracker.store.record_failure(failure(doc_root / "late.txt", time.time() - 2 * HOUR))

    async def scenario() -> None:
        processor = DistributedProcessor(worker_id="periodic", redis_url=redis_url, concurrency=1)
        processor.config.update(
            {"min_retry_interval_hours": 0, "recovery_interval_minutes": INTERVAL_MINUTES}
        )
        async with working(processor):
            # the start-up run found it missing and held it back
            assert tracker.reports.status()["waiting"] == 1
            # When the file is back, and nobody calls a run
            restored(doc_root, "late.txt")
            # Then a periodic run resubmits it and the worker processes it
            await asyncio.to_thread(
                wait_for,
                lambda: tracker.reports.get_record(doc_id) is None,
                TIMEOUT,
                "a periodic run to recover the document",
            )

    asyncio.run(scenario())

    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["successful_recoveries"]) == (1, 1)
    assert metrics["recovery_runs"] >= 2
    # And the embedded beat (RedBeat) kept its schedule in Redis, under docrecovery's prefix
    assert redis_client.exists(Keys().beat + "docrecovery-recovery-run")


def test_the_processor_runs_no_periodic_recovery_when_it_is_disabled(
    redis_url: str, doc_root: Path, tracker: Tracker, celery_app: Celery
) -> None:
    from distributed_processor import DistributedProcessor

    # Given a failure whose file is still missing when the worker starts
    doc_id = document_id(str(doc_root / "late.txt"))
    tracker.store.record_failure(failure(doc_root / "late.txt", time.time() - 2 * HOUR))
    fresh = restored(doc_root, "fresh.txt")

    async def scenario() -> None:
        processor = DistributedProcessor(worker_id="no-beat", redis_url=redis_url, concurrency=1)
        processor.config.update(
            {
                "min_retry_interval_hours": 0,
                "recovery_interval_minutes": INTERVAL_MINUTES,
                "enable_periodic_recovery": False,
            }
        )
        async with working(processor):
            assert tracker.reports.status()["recovery_metrics"]["recovery_runs"] == 1
            # When the file is back, and the worker is consuming
            restored(doc_root, "late.txt")
            [task_id] = processor.submit([str(fresh)])
            result = AsyncResult(task_id, app=celery_app)
            await asyncio.to_thread(result.get, timeout=TIMEOUT)

            # Then for four intervals no run starts and the document stays held back
            def untouched() -> bool:
                record = tracker.reports.get_record(doc_id)
                runs = tracker.reports.status()["recovery_metrics"]["recovery_runs"]
                return record is not None and record.state == "waiting" and runs == 1

            await asyncio.to_thread(holds, untouched, "no recovery run", 4 * INTERVAL_MINUTES * 60)

    asyncio.run(scenario())


def test_config_updated_after_construction_is_what_the_worker_starts_with(
    redis_url: str, celery_app: Celery
) -> None:
    from distributed_processor import DistributedProcessor

    # Given a processor whose config is changed after it was built
    processor = DistributedProcessor(worker_id="configured", redis_url=redis_url, concurrency=1)
    changes = {"max_retry_count": 7, "recovery_batch_size": 4, "recovery_interval_minutes": 0.5}
    assert all(processor.config[key] != value for key, value in changes.items())
    processor.config.update(changes)
    node = f"configured@{socket.gethostname()}"

    async def scenario() -> tuple[dict[str, str], dict[str, Any]]:
        async with working(processor):
            assert processor._process is not None
            raw = Path(f"/proc/{processor._process.pid}/environ").read_bytes()
            await asyncio.to_thread(
                wait_for,
                lambda: celery_app.control.ping([node], timeout=0.5),
                TIMEOUT,
                "the worker",
            )
            replies = await asyncio.to_thread(
                lambda: celery_app.control.inspect([node], timeout=5).conf(with_defaults=False)
            )
        environ = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
        return environ, replies[node]

    environ, conf = asyncio.run(scenario())

    # Then the worker was started with the updated settings
    started = RecoveryConfig.from_env(environ=environ)
    assert started == processor.recovery_config
    assert {key: getattr(started, key) for key in changes} == changes
    # And its embedded beat runs recovery at the updated interval
    entry = conf["beat_schedule"]["docrecovery-recovery-run"]
    assert (entry["task"], entry["schedule"]) == ("recovery.run", "0:00:30")


def test_the_processor_worker_consumes_the_recovery_queue_only_with_its_embedded_beat(
    redis_url: str,
) -> None:
    from distributed_processor import DistributedProcessor

    processor = DistributedProcessor("docs-only", redis_url, queues=["documents"])

    periodic = processor.worker_command()
    processor.config["enable_periodic_recovery"] = False
    plain = processor.worker_command()

    assert periodic[periodic.index("-Q") + 1] == "documents,recovery"
    assert "--beat" in periodic
    assert plain[plain.index("-Q") + 1] == "documents"
    assert "--beat" not in plain


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

    # listed oldest first failure first; the age is that of the last failure
    # (failure_timestamp): d first failed 2 h ago, and failed again 1.5 h ago
    expected = []
    for path, retries, first, age in (
        ("/docs/a.pdf", 0, 3.0, 3.0),
        ("/docs/d.pdf", 1, 2.0, 1.5),
        ("/docs/b.pdf", 0, 0.0, 0.0),
    ):
        assert known_failures[path] == pytest.approx(time.time() - first * HOUR, abs=60)
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
