"""Issue 3's rules, checked through the real in-thread worker.

Every failure here is produced by ``tasks.process_document`` running in a real Celery
worker (``celery_worker``: solo pool, in a thread of the test process) against real
files and a real Redis; the recovery system's signal handlers record it, a recovery
batch resubmits it, and the same worker processes the resubmission. Nothing is mocked:
a missing optional extra is simulated the way Python itself reports one, by putting
``None`` in ``sys.modules``.

The worker reports each run through Celery's ``task_prerun`` / ``task_postrun``
signals; ``task_postrun`` is sent after the failure and success handlers returned, so
waiting for it (``Runs.wait``) is waiting for the recovery system to have written.
The worker a failure is filed under is the run's ``task.request.hostname``: a real
``celery worker`` sets it to its node name, Celery's in-thread test worker to the host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult
from celery.signals import task_postrun, task_prerun
from faults.support import interrupted_at, wait_for

from recovery import DocumentRecoveryManager, RecoveryConfig, TrackedTask, installed, integration
from recovery.calls import describe
from recovery.environment import fingerprint
from recovery.events import FailureEvent
from recovery.integration import Recovery
from recovery.keys import Keys
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_server import RedisServer
from recovery.spool import Spool
from recovery.store import Tracker
from recovery.summaries import Held
from tasks import app as pipeline_app
from tasks.documents import result_key as document_result_key

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TIMEOUT = 30.0
KEYS = Keys()
#: Every index a tracked document can be in.
INDEXES = (KEYS.due, KEYS.failed, KEYS.claimed, KEYS.dead, KEYS.waiting, KEYS.imports)
#: Lua keeps times as doubles printed with 14 significant digits: 1e-4 s at 1.7e9.
LUA_TIME = 1e-3

pytestmark = pytest.mark.usefixtures("redis_url", "celery_worker")

Setup = Callable[..., DocumentRecoveryManager]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def recovery_setup(celery_app: Celery, redis_url: str, tmp_path: Path) -> Iterator[Setup]:
    """Factory: ``recovery_setup(max_retry_count=2)`` configures the recovery system
    installed on the app (documents due at once, no jitter, a spool of this test) and
    returns a manager with the same settings; the app's config is restored after."""
    rec = installed(celery_app)
    original = rec.config
    made: list[DocumentRecoveryManager] = []

    def configure(tracker_url: str | None = None, **changes: Any) -> DocumentRecoveryManager:
        config = RecoveryConfig.from_mapping(
            {
                "min_retry_interval_hours": 0,
                "retry_jitter": 0,
                "enable_periodic_recovery": False,
                "spool_dir": str(tmp_path / "spool"),
                **changes,
            }
        )
        rec.configure(config, redis_url=tracker_url)
        manager = DocumentRecoveryManager(tracker_url or redis_url, config, app=celery_app)
        made.append(manager)
        return manager

    yield configure
    for manager in made:
        manager.close()
    rec.configure(original)


@dataclass
class Runs:
    """What the worker ran: the docrecovery header each run carried, and each finish."""

    headers: dict[str, Any] = field(default_factory=dict)
    #: The worker hostname each run had (``task.request.hostname``).
    hostnames: dict[str, str] = field(default_factory=dict)
    finished: list[tuple[str, str]] = field(default_factory=list)

    def states(self, task_id: str) -> list[str]:
        return [state for tid, state in list(self.finished) if tid == task_id]

    def wait(self, task_id: str, count: int = 1) -> str:
        """The state of the ``count``-th finished run of ``task_id``, once it finished."""
        wait_for(lambda: len(self.states(task_id)) >= count, TIMEOUT, f"run {count} of {task_id}")
        return self.states(task_id)[count - 1]


@pytest.fixture
def runs() -> Iterator[Runs]:
    seen = Runs()

    def on_prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
        seen.headers[task_id] = getattr(task.request, "docrecovery", None)
        seen.hostnames[task_id] = task.request.hostname

    def on_postrun(task_id: str = "", state: str = "", **_: Any) -> None:
        seen.finished.append((task_id, str(state)))

    task_prerun.connect(on_prerun, weak=False)
    task_postrun.connect(on_postrun, weak=False)
    yield seen
    task_prerun.disconnect(on_prerun)
    task_postrun.disconnect(on_postrun)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def recovery_log() -> Iterator[ListHandler]:
    """Messages the recovery system's Celery wiring logs in the worker (whose logging
    setup leaves only errors through, hence the level)."""
    handler = ListHandler()
    logger = logging.getLogger("recovery.integration")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.setLevel(level)
    logger.removeHandler(handler)


@pytest.fixture
def fresh_fingerprint() -> Iterator[None]:
    """Recompute the environment fingerprint after a test that changed sys.path."""
    yield
    fingerprint.cache_clear()


# --- helpers --------------------------------------------------------------------------


def submit(
    app: Celery,
    path: str | Path,
    query: str | None = None,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncResult:
    return app.send_task(
        "tasks.process_document", args=[str(path), query, metadata or {}], **options
    )


def copy_sample(name: str, dest: Path) -> Path:
    return Path(shutil.copy(SAMPLES / name, dest))


def record_of(tracker: Tracker, path: str | Path, query: str | None = None) -> FailedDocumentRecord:
    record = tracker.reports.get_record(document_id(str(path), query))
    assert record is not None, f"no record for {path}"
    return record


def indexes_holding(client: redis.Redis, doc_id: str) -> list[str]:
    return [key for key in INDEXES if client.zscore(key, doc_id) is not None]


def assert_dead(client: redis.Redis, doc_id: str) -> None:
    held = indexes_holding(client, doc_id)
    assert KEYS.dead in held
    assert not {KEYS.due, KEYS.claimed, KEYS.waiting, KEYS.imports} & set(held)


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every docrecovery key's type and content."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(match="{docrecovery}*", count=1000):
        kind = client.type(key)
        if kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = (kind, client.dump(key))
    return state


def fail_missing(app: Celery, runs: Runs, path: Path, query: str | None = None) -> AsyncResult:
    """Send a document that does not exist and wait until its failure is recorded."""
    assert not path.exists()
    result = submit(app, path, query)
    assert runs.wait(result.id) == "FAILURE"
    return result


@dataclass(frozen=True)
class Late:
    """A document whose file was missing when it ran and is in place now: due."""

    tracker: Tracker
    path: Path


@pytest.fixture
def late(recovery_setup: Setup, runs: Runs, doc_root: Path, celery_app: Celery) -> Late:
    """A document due for recovery, under the settings of ``recovery_setup()``."""
    tracker = recovery_setup().tracker
    path = doc_root / "late.txt"
    fail_missing(celery_app, runs, path)
    copy_sample("worker-lost.txt", path)
    return Late(tracker, path)


# --- what a failure record holds ------------------------------------------------------


def test_a_missing_file_is_recorded_with_every_field_needed_to_run_it_again(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    tracker = recovery_setup().tracker
    path = doc_root / "not-uploaded-yet.txt"
    metadata = {"source": "upload", "batch": 7}

    # When the worker fails to process a document that does not exist
    before = time.time()
    result = submit(celery_app, path, "visibility timeout", metadata)
    assert runs.wait(result.id) == "FAILURE"
    after = time.time()

    # Then its record holds the call, the error and where and when it failed
    record = record_of(tracker, path, "visibility timeout")
    assert record.document_path == str(path)
    assert record.task_id == result.id
    # the error itself (type: message), as the seed's error_message; the trace apart
    assert record.error_message.startswith("FileNotFoundError: [Errno 2] No such file")
    assert record.traceback.startswith("Traceback (most recent call last)")
    assert "FileNotFoundError" in record.error_message
    assert str(path) in record.error_message
    assert record.error_type == "FileNotFoundError"
    assert record.error_category == "file_not_found"
    assert record.query == "visibility timeout"
    assert record.worker_id == runs.hostnames[result.id]
    assert record.metadata == metadata
    assert record.task_name == "tasks.process_document"
    assert record.args == [str(path), "visibility timeout", metadata]
    assert before - LUA_TIME <= record.failure_timestamp <= after + LUA_TIME
    assert record.first_failure_timestamp == record.failure_timestamp
    assert record.retry_count == 0
    assert record.state == "failed"
    # And it is in the failed index and due (the minimum interval is 0 here)
    assert indexes_holding(redis_client, record.doc_id) == [KEYS.due, KEYS.failed]


def test_a_run_is_described_once_at_its_check_in_and_its_outcome_reads_that(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recovery_setup()
    described: list[str] = []

    def counted(task: Task, task_id: str, *args: Any, **kwargs: Any) -> Any:
        described.append(task_id)
        return describe(task, task_id, *args, **kwargs)

    monkeypatch.setattr(integration, "describe", counted)
    # When one run succeeds and another fails
    good = submit(celery_app, copy_sample("celery-retries.txt", doc_root / "good.txt"), "q")
    bad = submit(celery_app, doc_root / "missing.txt", "q")
    assert runs.wait(good.id) == "SUCCESS"
    assert runs.wait(bad.id) == "FAILURE"

    # Then each was described once, at its check-in: its report read that description
    assert sorted(described) == sorted([good.id, bad.id])


def test_a_missing_optional_extra_is_recorded_as_an_import_failure(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracker = recovery_setup().tracker
    path = copy_sample("document-pipeline.docx", doc_root)

    # Given python-docx cannot be imported, when the worker processes a .docx
    monkeypatch.setitem(sys.modules, "docx", None)
    result = submit(celery_app, path, "BM25", {"lang": "en"})
    assert runs.wait(result.id) == "FAILURE"

    # Then the failure is recorded as an import failure with its whole call
    record = record_of(tracker, path, "BM25")
    assert (record.error_type, record.error_category) == ("ModuleNotFoundError", "import")
    assert "docx" in record.error_message
    assert record.task_id == result.id
    assert record.worker_id == runs.hostnames[result.id]
    assert (record.query, record.metadata) == ("BM25", {"lang": "en"})
    assert record.args == [str(path), "BM25", {"lang": "en"}]
    assert (record.retry_count, record.state) == (0, "failed")
    assert record.fingerprint == fingerprint()
    # And it is indexed among the import failures an environment change may retry
    assert KEYS.imports in indexes_holding(redis_client, record.doc_id)


# --- recovery -------------------------------------------------------------------------


def test_a_recovered_document_is_cleared_from_every_index_and_counted_as_a_recovery(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    manager = recovery_setup()
    tracker = manager.tracker
    path = doc_root / "report.txt"
    fail_missing(celery_app, runs, path, "retry")
    doc_id = document_id(str(path), "retry")

    # Given the file is restored, when a recovery batch runs
    copy_sample("celery-retries.txt", path)
    summary = manager.run_batch()

    # Then the document is resubmitted and the worker processes it
    [sent] = summary.resubmitted
    assert sent.doc_id == doc_id
    assert runs.wait(sent.task_id) == "SUCCESS"
    assert AsyncResult(sent.task_id, app=celery_app).get(timeout=TIMEOUT)["type"] == "text"
    # And the message it ran from carried the docrecovery header
    assert runs.headers[sent.task_id] == {"doc_id": doc_id, "attempt": 1, "manual": False}
    # And the document is tracked nowhere any more
    assert tracker.reports.get_record(doc_id) is None
    assert redis_client.exists(KEYS.record(doc_id)) == 0
    assert indexes_holding(redis_client, doc_id) == []
    # And the success counted as a recovery, with its duration
    status = tracker.reports.status()
    metrics = status["recovery_metrics"]
    assert status["total_failed_documents"] == 0
    assert metrics["recovery_attempts"] == 1
    assert metrics["successful_recoveries"] == 1
    assert metrics["failed_recoveries"] == 0
    assert metrics["recovery_success_rate"] == 1.0
    assert metrics["average_recovery_time"] > 0


def test_a_recovery_that_fails_again_counts_a_retry_until_the_run_stops_retrying_it(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = recovery_setup(max_retry_count=2)
    tracker = manager.tracker
    path = copy_sample("document-pipeline.docx", doc_root)
    monkeypatch.setitem(sys.modules, "docx", None)
    first = submit(celery_app, path)
    assert runs.wait(first.id) == "FAILURE"
    doc_id = document_id(str(path))

    # When a recovery attempt fails again (the extra is still missing)
    [sent] = manager.run_batch().resubmitted
    assert runs.wait(sent.task_id) == "FAILURE"

    # Then one retry and one failed recovery are counted, and it is due again
    record = record_of(tracker, path)
    assert (record.state, record.retry_count) == ("failed", 1)
    assert record.task_id == sent.task_id
    assert record.recovery_attempts == 1
    assert record.failure_count == 2
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["failed_recoveries"]) == (1, 1), metrics
    assert metrics["successful_recoveries"] == 0

    # When the second (the last allowed) recovery fails too
    [again] = manager.run_batch().resubmitted
    assert runs.wait(again.task_id) == "FAILURE"
    assert runs.headers[again.task_id] == {"doc_id": doc_id, "attempt": 2, "manual": False}

    # Then its retries are used up under this config: tracked, not eligible, not dead
    record = record_of(tracker, path)
    assert (record.state, record.retry_count, record.next_retry_at) == ("failed", 2, None)
    status = tracker.reports.status()
    assert (status["exhausted"], status["eligible_for_recovery"], status["dead"]) == (1, 0, 0)
    assert status["recovery_metrics"]["failed_recoveries"] == 2

    # And a further run does not resubmit it
    summary = manager.run_batch()
    assert (summary.claimed, summary.resubmitted) == (0, [])
    assert redis_client.llen("documents") == 0
    assert runs.states(again.task_id) == ["FAILURE"]


def test_a_permanent_failure_is_dead_at_once_and_never_resubmitted(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    manager = recovery_setup()
    tracker = manager.tracker
    outside = tmp_path / "outside.txt"
    outside.write_text("not under the document root")
    corrupt = doc_root / "broken.pdf"
    corrupt.write_bytes(b"%PDF-1.4\nnothing else")

    # When the worker fails on a file outside the roots and on a corrupt PDF
    for path, error in ((outside, "DocumentOutsideRoots"), (corrupt, "CorruptedDocument")):
        result = submit(celery_app, path)
        assert runs.wait(result.id) == "FAILURE"

        # Then each is dead at once, with no retry counted
        record = record_of(tracker, path)
        assert (record.error_type, record.error_category) == (error, "permanent")
        assert (record.state, record.retry_count) == ("dead", 0)
        assert record.state_reason == "permanent error: not retried"
        assert_dead(redis_client, record.doc_id)

    # And a recovery run resubmits neither
    summary = manager.run_batch()
    assert (summary.claimed, summary.resubmitted) == (0, [])
    assert redis_client.llen("documents") == 0
    assert tracker.reports.status()["dead"] == 2


def test_a_message_the_tasks_signature_refuses_is_dead_after_one_failure(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    manager = recovery_setup()
    tracker = manager.tracker
    path = copy_sample("worker-lost.txt", doc_root)

    # When the worker gets a message for a document that exists, with an argument the
    # task does not take (a producer on another version of the pipeline)
    result = celery_app.send_task("tasks.process_document", args=[str(path)], kwargs={"pages": 3})
    assert runs.wait(result.id) == "FAILURE"

    # Then the first failure is the last: dead, filed as permanent, the cause on record
    record = record_of(tracker, path)
    assert (record.error_type, record.error_category) == ("TypeError", "permanent")
    assert (record.state, record.failure_count, record.retry_count) == ("dead", 1, 0)
    assert record.state_reason == "permanent error: not retried"
    assert "got an unexpected keyword argument 'pages'" in record.error_message
    assert_dead(redis_client, record.doc_id)

    # And a recovery run resubmits nothing
    summary = manager.run_batch()
    assert (summary.claimed, summary.resubmitted) == (0, [])
    assert redis_client.llen("documents") == 0


# --- recovery.run as a Celery task ----------------------------------------------------


def test_recovery_run_sent_as_a_task_resubmits_and_returns_a_json_summary(
    late: Late,
    runs: Runs,
    celery_app: Celery,
) -> None:
    tracker, path = late.tracker, late.path

    summary = celery_app.send_task("recovery.run").get(timeout=TIMEOUT)

    assert isinstance(summary, dict)
    assert json.loads(json.dumps(summary)) == summary
    assert (summary["claimed"], summary["spool_replayed"]) == (1, 0)
    [sent] = summary["resubmitted"]
    assert sent["path"] == str(path)
    assert runs.wait(sent["task_id"]) == "SUCCESS"
    assert tracker.reports.get_record(document_id(str(path))) is None


def test_recovery_run_is_skipped_while_another_run_holds_the_lock(
    late: Late,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    tracker, path = late.tracker, late.path

    # Given another recovery run holds the lock
    lock = redis_client.lock(KEYS.run_lock, timeout=60)
    assert lock.acquire(blocking=False)
    try:
        # When recovery.run is sent
        summary = celery_app.send_task("recovery.run").get(timeout=TIMEOUT)
    finally:
        lock.release()

    # Then it did nothing but say why
    assert list(summary) == ["skipped"]
    assert "lock" in summary["skipped"]
    assert record_of(tracker, path).state == "failed"
    assert redis_client.llen("documents") == 0


def test_recovery_run_as_a_dry_run_reports_the_plan_and_changes_nothing(
    late: Late,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    path = late.path
    before = snapshot(redis_client)

    summary = celery_app.send_task("recovery.run", kwargs={"dry_run": True}).get(timeout=TIMEOUT)

    assert summary["dry_run"] is True
    [plan] = summary["would_resubmit"]
    assert (plan["path"], plan["queue"], plan["attempt"]) == (str(path), "documents", 1)
    assert snapshot(redis_client) == before
    assert redis_client.llen("documents") == 0


def test_recovery_run_whose_soft_time_limit_fires_in_its_spool_replay_stops_there(
    late: Late,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a document due for recovery, and two failures of files still missing
    # spooled while Redis was away
    tracker, path = late.tracker, late.path
    spool = Spool(tmp_path / "spool")
    spooled = []
    for n in range(2):
        missing = str(doc_root / f"missing-{n}.txt")
        record = FailedDocumentRecord(
            missing, f"t{n}", "E: x", args=[missing, None, {}], error_category="file_not_found"
        )
        spooled.append(FailureEvent(record, True, False))
        spool.append(spooled[-1].to_json())

    # When recovery.run's soft time limit fires as its replay comes to the second
    with interrupted_at("from_json", SoftTimeLimitExceeded, after=1):
        result = celery_app.tasks["recovery.run"].apply()

    # Then the run ends there, failing with the soft time limit (before: it went on
    # to claim and resubmit a batch with no time left), the lock released
    assert result.failed()
    assert isinstance(result.result, SoftTimeLimitExceeded)
    assert record_of(tracker, path).state == "failed"
    assert not redis_client.exists(KEYS.run_lock)
    # And the event it did not apply stays spooled
    assert tracker.reports.get_record(spooled[0].record.doc_id) is not None
    assert spool.count() == 1
    # And the next run replays it and resubmits the document
    summary = celery_app.send_task("recovery.run").get(timeout=TIMEOUT)
    assert summary["spool_replayed"] == 1
    assert [sent["path"] for sent in summary["resubmitted"]] == [str(path)]


# --- Redis away: spooled, then replayed ------------------------------------------------


def test_a_failure_while_the_trackers_redis_is_down_is_spooled_and_replayed_later(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
) -> None:
    # Given the tracker uses a second Redis (the broker stays on the session's)
    second = RedisServer(tmp_path / "tracker-redis")
    second.start()
    try:
        manager = recovery_setup(tracker_url=second.url)
        tracker = manager.tracker
        spool = Spool(tmp_path / "spool")

        # When that Redis is down and a document fails
        second.stop()
        path = doc_root / "during-outage.txt"
        result = fail_missing(celery_app, runs, path, "outage")

        # Then the failure event waits in the spool
        assert spool.pending()
        events = [
            json.loads(line)
            for file in (tmp_path / "spool").glob("events-*.jsonl")
            for line in file.read_text().splitlines()
        ]
        [event] = [e for e in events if e["kind"] == "failure"]
        spooled = event["record"]
        assert (spooled["document_path"], spooled["task_id"]) == (str(path), result.id)
        failed_at = float(spooled["failure_timestamp"])

        # And the worker lives on: the next document runs, and as its result cannot be
        # kept by the tracker's store, it fails as a network failure, spooled too
        nxt = submit(celery_app, copy_sample("worker-lost.txt", doc_root), "lease")
        assert runs.wait(nxt.id) == "FAILURE"

        # When the Redis is back (same data, append-only) and another task runs
        restarted_at = time.time()
        second.start()
        after = submit(celery_app, copy_sample("celery-retries.txt", doc_root), "retry")
        assert runs.wait(after.id) == "SUCCESS"

        # Then the spooled failure was replayed with its original failure time
        record = record_of(tracker, path, "outage")
        assert record.task_id == result.id
        assert record.failure_timestamp == pytest.approx(failed_at, abs=LUA_TIME)
        assert record.failure_timestamp < restarted_at
        assert (record.state, record.error_category) == ("failed", "file_not_found")
        assert record_of(tracker, doc_root / "worker-lost.txt", "lease").error_category == "network"
        # And the spool is empty
        assert not spool.pending()
        assert spool.count() == 0
    finally:
        second.stop()


# --- stale duplicates -----------------------------------------------------------------


def test_a_stale_duplicate_of_a_resubmitted_message_is_dropped_by_the_worker(
    recovery_setup: Setup,
    runs: Runs,
    recovery_log: ListHandler,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    manager = recovery_setup()
    tracker = manager.tracker
    path = doc_root / "dup.txt"
    original = fail_missing(celery_app, runs, path, "dup")
    doc_id = document_id(str(path), "dup")

    # Given a recovery batch replaced the original task by a new one, which ran once
    copy_sample("worker-lost.txt", path)
    [sent] = manager.run_batch().resubmitted
    assert sent.task_id != original.id
    assert runs.wait(sent.task_id) == "SUCCESS"
    result_key = document_result_key(KEYS, doc_id)
    assert redis_client.exists(result_key) == 1
    redis_client.delete(result_key)

    # When a message with the ORIGINAL task id arrives again (a broker redelivery)
    submit(celery_app, path, "dup", task_id=original.id)

    # Then the worker drops it: the run is ignored, nothing is processed or written
    assert runs.wait(original.id, count=2) == "IGNORED"
    assert any(f"dropping task {original.id}" in m for m in recovery_log.messages)
    assert AsyncResult(original.id, app=celery_app).state == "IGNORED"
    assert redis_client.exists(result_key) == 0
    assert tracker.reports.get_record(doc_id) is None
    # And the resubmitted run was processed exactly once
    assert runs.states(sent.task_id) == ["SUCCESS"]
    assert tracker.reports.status()["recovery_metrics"]["successful_recoveries"] == 1


# --- a check-in sent twice ------------------------------------------------------------


@contextlib.contextmanager
def run_again(celery_app: Celery, runs: Runs, path: Path) -> Iterator[tuple[Recovery, Task]]:
    """A document that failed once, and the pipeline task about to run it again, as
    task ``run-2`` on worker ``w1``, with the app's recovery that checks it in."""
    fail_missing(celery_app, runs, path)
    task = celery_app.tasks["tasks.process_document"]
    task.push_request(
        id="run-2", args=[str(path), None, {}], kwargs={}, hostname="w1", called_directly=False
    )
    try:
        yield installed(celery_app), task
    finally:
        task.pop_request()


def test_a_check_in_sent_again_after_its_reply_was_lost_runs_and_records_no_lost_run(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a document that failed once, under a maximum of one retry, and a new run
    # of it about to check in (the check-in script loaded, as by any earlier run)
    tracker = recovery_setup(max_retry_count=1).tracker
    path = doc_root / "again.txt"
    with run_again(celery_app, runs, path) as (rec, task):
        redis_client.script_load(rec.tracker.connection.scripts.begin.source)

        # When its check-in is applied and the connection drops before the reply is
        # read, so redis-py sends it again
        with interrupted_at("parse_response", redis.ConnectionError, within="begin"):
            goes_ahead = rec.begin(task)

    # Then the run goes ahead, in flight once, and no failure or retry is counted (bug:
    # the second call answered 'lost', so the run was recorded as a worker_lost failure
    # that used up the last retry, and its message was dropped)
    assert goes_ahead
    assert redis_client.zrange(KEYS.inflight, 0, -1) == ["run-2"]
    record = record_of(tracker, path)
    assert (record.state, record.retry_count, record.failure_count) == ("recovering", 0, 1)
    assert record.error_category == "file_not_found"
    assert tracker.reports.status()["recovery_metrics"]["failures_recorded"] == 1


def test_a_lost_run_report_sent_again_after_its_reply_was_lost_still_ends_a_crash_loop(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    # Given a document that failed once, under a maximum of one retry, and a run of it
    # that checked in and died without a word (its entry left in flight)
    tracker = recovery_setup(max_retry_count=1).tracker
    path = doc_root / "loop.txt"
    with run_again(celery_app, runs, path) as (rec, task):
        assert rec.begin(task)

        # When the broker redelivers it and its check-in finds the run lost, and the
        # report of the lost run is applied and the connection drops before the reply
        # is read, so redis-py sends it again
        with interrupted_at("parse_response", redis.ConnectionError, within="record_failure"):
            goes_ahead = rec.begin(task)

    # Then the lost run, counted once, used up the last retry: the message is dropped
    # (bug: the second report found the entry gone and was skipped, answering no
    # retries, so the crash loop ran once more)
    assert not goes_ahead
    record = record_of(tracker, path)
    assert (record.retry_count, record.failure_count) == (1, 2)
    assert record.error_category == "worker_lost"
    assert redis_client.zcard(KEYS.inflight) == 0


# --- environment changes --------------------------------------------------------------


def fail_import(app: Celery, runs: Runs, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "docx", None)
        result = submit(app, path)
        assert runs.wait(result.id) == "FAILURE"


@pytest.mark.usefixtures("fresh_fingerprint")
def test_an_import_failure_is_retried_at_once_when_a_new_environment_appears(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
    celery_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the running worker's environment is known (worker_ready records it)
    manager = recovery_setup(min_retry_interval_hours=5)
    tracker = manager.tracker
    rec = installed(celery_app)
    rec.register_environment(celery_worker.hostname)
    # And an import failure that is not due for hours
    path = copy_sample("document-pipeline.docx", doc_root)
    fail_import(celery_app, runs, path, monkeypatch)
    record = record_of(tracker, path)
    assert record.error_category == "import"
    assert record.next_retry_at is not None
    assert record.next_retry_at > time.time() + 4 * 3600
    assert manager.run_batch().claimed == 0

    # When a worker starts with something new installed
    site = tmp_path / "site"
    site.mkdir()
    (site / "docrecovery_test_new_extra.py").write_text("INSTALLED = True\n")
    monkeypatch.syspath_prepend(str(site))
    old = fingerprint()
    rec.register_environment("w-new")
    assert fingerprint() != old

    # Then the next run resubmits the import failure at once, and it succeeds
    summary = manager.run_batch()
    assert summary.imports_promoted == 1
    [sent] = summary.resubmitted
    assert sent.doc_id == record.doc_id
    assert runs.wait(sent.task_id) == "SUCCESS"
    assert tracker.reports.get_record(record.doc_id) is None
    assert tracker.reports.status()["recovery_metrics"]["successful_recoveries"] == 1


def test_an_import_failure_keeps_its_backoff_when_the_environment_is_unchanged(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    celery_worker: Any,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = recovery_setup(min_retry_interval_hours=5)
    tracker = manager.tracker
    rec = installed(celery_app)
    rec.register_environment(celery_worker.hostname)
    path = copy_sample("document-pipeline.docx", doc_root)
    fail_import(celery_app, runs, path, monkeypatch)

    # When another worker starts with the same environment
    rec.register_environment("w-same")

    # Then nothing is promoted or resubmitted: the normal backoff applies
    summary = manager.run_batch()
    assert (summary.imports_promoted, summary.claimed, summary.resubmitted) == (0, 0, [])
    assert redis_client.llen("documents") == 0
    record = record_of(tracker, path)
    assert (record.state, record.retry_count) == ("failed", 0)


# --- preconditions: a missing file waits without using up retries ------------------------


def test_a_missing_file_waits_without_a_retry_counted_and_recovers_once_restored(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
) -> None:
    manager = recovery_setup()
    tracker = manager.tracker
    path = doc_root / "restored-later.txt"
    fail_missing(celery_app, runs, path)
    doc_id = document_id(str(path))

    # When a run finds the file still missing
    summary = manager.run_batch()

    # Then it reports the document as waiting, with the reason, and sends nothing
    assert summary.waiting == [Held(doc_id=doc_id, reason=f"file still missing: {path}")]
    assert summary.resubmitted == []
    assert redis_client.llen("documents") == 0
    record = record_of(tracker, path)
    assert (record.state, record.retry_count) == ("waiting", 0)
    assert record.state_reason == f"file still missing: {path}"
    assert KEYS.waiting in indexes_holding(redis_client, doc_id)
    # And status shows it tracked and waiting, not eligible
    status = manager.status()
    assert (status["total_failed_documents"], status["eligible_for_recovery"]) == (1, 0)
    assert status["waiting"] == 1
    assert manager.select() == [doc_id]
    # And a run while it is still missing probes it again, and holds it again
    again = manager.run_batch()
    assert (again.reopened, again.resubmitted) == (0, [])
    assert record_of(tracker, path).state == "waiting"

    # When the file is restored, the very next run probes it and sends it
    copy_sample("redis-persistence.md", path)
    summary = manager.run_batch()
    assert summary.reopened == 1

    # Then it is resubmitted and recovered, never having used a retry
    [sent] = summary.resubmitted
    assert sent.retry_count == 0
    assert runs.wait(sent.task_id) == "SUCCESS"
    assert tracker.reports.get_record(doc_id) is None
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["successful_recoveries"], metrics["failed_recoveries"]) == (1, 0)


# --- status and analysis --------------------------------------------------------------


def test_status_and_analysis_count_exactly_what_the_worker_recorded(
    recovery_setup: Setup,
    runs: Runs,
    doc_root: Path,
    celery_app: Celery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = recovery_setup()
    # Given three failures of two categories under two queries, and one success
    fail_missing(celery_app, runs, doc_root / "a.txt", "alpha")
    fail_missing(celery_app, runs, doc_root / "b.txt", "beta")
    docx = copy_sample("document-pipeline.docx", doc_root)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "docx", None)
        failed = submit(celery_app, docx, "alpha")
        assert runs.wait(failed.id) == "FAILURE"
    ok = submit(celery_app, copy_sample("worker-lost.txt", doc_root), "alpha")
    assert runs.wait(ok.id) == "SUCCESS"

    status = manager.status()

    assert status["total_failed_documents"] == 3
    assert status["eligible_for_recovery"] == 3
    assert (status["in_recovery"], status["dead"]) == (0, 0)
    metrics = status["recovery_metrics"]
    assert metrics["total_failed_documents"] == 3
    assert metrics["documents_eligible_for_retry"] == 3
    assert metrics["failures_recorded"] == 3
    assert (metrics["recovery_attempts"], metrics["recovery_success_rate"]) == (0, 0.0)
    analysis = status["analysis"]
    worker = runs.hostnames[ok.id]
    assert analysis["age_distribution"] == {
        "<1h": 3,
        "1-6h": 0,
        "6-24h": 0,
        "1-3d": 0,
        "3-7d": 0,
        ">7d": 0,
    }
    assert analysis["error_categories"] == {"file_not_found": 2, "import": 1}
    assert analysis["workers"] == {
        worker: {
            "tracked": 3,
            "failures": 3,
            "processed": 4,
            "failure_rate": 0.75,
        }
    }
    assert analysis["queries"] == {
        "alpha": {"tracked": 2, "failures": 2, "processed": 3, "failure_rate": 2 / 3},
        "beta": {"tracked": 1, "failures": 1, "processed": 1, "failure_rate": 1.0},
    }


# --- runs that end with neither success nor failure -----------------------------------


@pipeline_app.task(name="tests.retry_once", bind=True, base=TrackedTask, max_retries=1)  # type: ignore[untyped-decorator]
def retry_once(self: Task, document_path: str) -> str:
    """Fails its first run with a Celery retry (same task id), succeeds the second."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return document_path


def test_a_celery_retry_is_not_mistaken_for_a_run_that_died(
    recovery_setup: Setup, redis_client: redis.Redis
) -> None:
    # Given a tracked task that retries itself once under the same task id
    manager = recovery_setup(tracked_tasks=("tests.retry_once",))
    tracker = manager.tracker

    # When it runs: retry, then success
    assert retry_once.apply_async(args=["/docs/retry.txt"]).get(timeout=30) == "/docs/retry.txt"

    # Then the retried run was taken out of flight and not recorded as worker_lost
    assert redis_client.zcard(tracker.keys.inflight) == 0
    assert tracker.reports.status()["recovery_metrics"]["failures_recorded"] == 0
    assert tracker.reports.get_record(document_id("/docs/retry.txt")) is None
