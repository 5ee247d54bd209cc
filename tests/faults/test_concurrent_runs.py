"""Recovery runs at once never resubmit a document twice.

100 documents are due. Two beats' ``recovery.run`` (each behind the run lock), two
operators' ``recover`` without the lock, and a manual ``python main.py --recover`` in
its own process all run together. Each document must be sent exactly once: every
message waiting in the ``documents`` queue is counted by the ``docrecovery`` header.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from faults.support import (
    Doc,
    fast_config,
    header_doc_ids,
    stats,
    take_census,
    wait_for,
)
from recovery import installed
from recovery.api import DocumentRecoveryManager
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = 100
BATCH = 5


@pytest.fixture
def config(tmp_path: Path) -> RecoveryConfig:
    return fast_config(recovery_batch_size=BATCH, spool_dir=str(tmp_path / "spool"))


@pytest.fixture
def beat_recovery(celery_app: Celery, config: RecoveryConfig) -> Iterator[Callable[[], Any]]:
    """``recovery.run`` of the app, with this test's settings, restored afterwards."""
    rec = installed(celery_app)
    original = rec.config
    rec.configure(config)
    yield rec.run
    rec.configure(original)


def beat_until_idle(run: Callable[[], dict[str, Any]], sent: list[int]) -> None:
    """A beat firing ``recovery.run`` again and again until a run finds nothing due."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = run()
        if "skipped" not in summary:
            sent.append(len(summary["resubmitted"]))
            if not summary["claimed"]:
                return


def recover_all(manager: DocumentRecoveryManager, sent: list[int]) -> None:
    """An operator's ``recover``: batch after batch, without the run lock."""
    sent.append(len(manager.recover_all().resubmitted))


def run_in_threads(calls: Sequence[Callable[[], None]], timeout: float) -> list[BaseException]:
    """Run the calls at once, each in a thread; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a recovery run did not finish"
    return errors


def test_concurrent_beats_and_manual_runs_resubmit_each_due_document_exactly_once(
    redis_url: str,
    redis_client: redis.Redis,
    celery_app: Celery,
    config: RecoveryConfig,
    beat_recovery: Callable[[], dict[str, Any]],
) -> None:
    # Given 100 documents due for recovery
    managers = [DocumentRecoveryManager(redis_url, config, app=celery_app) for _ in range(2)]
    now = time.time()
    docs = [Doc(f"/docs/due-{n:03}.txt") for n in range(DOCUMENTS)]
    for n, doc in enumerate(docs):
        managers[0].tracker.store.record_failure(
            FailedDocumentRecord(
                document_path=doc.path,
                task_id=f"task-{n}",
                error_message="ConnectionResetError: upstream went away",
                failure_timestamp=now - 60,
                args=[doc.path],
            )
        )
    assert redis_client.zcount("{docrecovery}:due", "-inf", now) == DOCUMENTS

    # When a manual `python main.py --recover` starts, and as soon as it has claimed a
    # batch, two beats' recovery.run and two lock-less recover calls join it
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DOCRECOVERY_RECOVERY_BATCH_SIZE": str(BATCH),
        "DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS": "0",
        "DOCRECOVERY_RETRY_JITTER": "0",
        "DOCRECOVERY_SPOOL_DIR": config.spool_dir,
    }
    manual = subprocess.Popen(
        [sys.executable, "main.py", "--recover", "--redis-url", redis_url],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sent: list[int] = []
    calls = [partial(beat_until_idle, beat_recovery, sent) for _ in range(2)]
    calls += [partial(recover_all, m, sent) for m in managers]
    try:
        wait_for(lambda: stats(redis_client).get("recovery_runs"), 30, "the manual run")
        errors = run_in_threads(calls, timeout=60)
        output, _ = manual.communicate(timeout=60)
    finally:
        if manual.poll() is None:
            manual.kill()
        for manager in managers:
            manager.close()
    assert not errors, errors
    assert manual.returncode == 0, output

    # Then every document was resubmitted exactly once
    counts = header_doc_ids(redis_client)
    assert len(counts) == DOCUMENTS, f"{len(counts)} documents resubmitted"
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v > 1}
    assert redis_client.llen("documents") == DOCUMENTS
    assert "100 resubmitted" not in output, "the manual run did all the work alone"
    census = take_census(redis_client, "concurrent runs", docs)
    print(f"[concurrent runs] resubmitted by threads {sum(sent)}, manual: {output.splitlines()[0]}")
    assert (len(census.tracked), census.lost) == (DOCUMENTS, []), census.line()
    assert stats(redis_client)["recovery_attempts"] == DOCUMENTS
