"""Garbage in Redis and hostile paths: reported, never fatal.

Under our key prefix: a string where a record hash should be, a hash missing
required fields, fields that are not numbers, and a 10 MB error message. From
messages: a path that is not UTF-8, a path climbing out of the root with ``..`` and
a symlink pointing out of it. The worker keeps running, the recovery run finishes and
reports the corrupt records, and every submitted document is processed or tracked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery

from faults.support import (
    FAST_ENV,
    KEYS,
    TASK,
    Doc,
    Worker,
    describe,
    fast_config,
    log_tail,
    processed,
    record,
    settled,
    take_census,
    wait_steady,
    write_text,
)
from recovery.api import DocumentRecoveryManager
from recovery.records import FailedDocumentRecord

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]


def plant_garbage(client: redis.Redis, now: float) -> dict[str, str]:
    """Corrupt records, each due now; returns what each id holds."""
    garbage = {
        "garbage-string": "a string at a record key",
        "garbage-no-fields": "a hash without path, message, times or state",
        "garbage-bad-retries": "a hash whose retry count is not a number",
        "garbage-bad-time": "a hash whose first failure time is not a number",
    }
    client.set(KEYS.record("garbage-string"), "not a hash")
    client.hset(KEYS.record("garbage-no-fields"), mapping={"first": now, "task": TASK})
    stamp = str(now)
    client.hset(
        KEYS.record("garbage-bad-retries"),
        mapping={
            "path": "/x.txt",
            "task": TASK,
            "msg": "boom",
            "state": "failed",
            "first": stamp,
            "last": stamp,
            "retries": "lots",
        },
    )
    client.hset(
        KEYS.record("garbage-bad-time"),
        mapping={
            "path": "/y.txt",
            "task": TASK,
            "msg": "boom",
            "state": "failed",
            "first": "yesterday",
            "last": stamp,
        },
    )
    client.zadd(KEYS.due, dict.fromkeys(garbage, now - 1))
    return garbage


def test_garbage_records_and_hostile_paths_are_reported_and_the_worker_lives_on(
    worker_process: StartWorker,
    doc_root: Path,
    tmp_path: Path,
    celery_app: Celery,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = worker_process("w1", env=FAST_ENV)
    outside = tmp_path / "outside.txt"
    write_text(outside)
    os.symlink(outside, doc_root / "escape.txt")
    latin1 = os.fsencode(doc_root) + b"/caf\xe9-menu.txt"
    write_text(Path(os.fsdecode(latin1)))
    hostile = {
        "non_utf8": Doc(os.fsdecode(latin1), "retry"),
        "dotdot": Doc(f"{doc_root}/../outside.txt", "retry"),
        "symlink": Doc(str(doc_root / "escape.txt"), "retry"),
    }
    manager = DocumentRecoveryManager(redis_url, fast_config(), app=celery_app)
    now = time.time()

    # Given garbage under our prefix and a record with a 10 MB error message
    garbage = plant_garbage(redis_client, now)
    huge = "Traceback (most recent call last):\n" + "x" * 10_000_000 + "\nMemoryError: huge"
    manager.tracker.store.record_failure(
        FailedDocumentRecord(
            document_path=str(doc_root / "never-uploaded.txt"),
            task_id="t-huge",
            error_message=huge,
            failure_timestamp=now,
            args=[str(doc_root / "never-uploaded.txt")],
            error_category="file_not_found",
        )
    )
    stored = record(redis_client, Doc(str(doc_root / "never-uploaded.txt")).doc_id)["msg"]
    assert len(stored) <= fast_config().max_error_chars
    assert stored.startswith("Traceback")
    assert stored.endswith("MemoryError: huge")

    # When hostile paths are submitted to the worker
    for doc in hostile.values():
        celery_app.send_task(TASK, args=doc.args)
    docs = list(hostile.values())
    wait_steady(
        lambda: settled(redis_client, docs),
        30,
        "the hostile paths",
        lambda: describe(redis_client, docs) + log_tail(worker)(),
    )

    # Then the non-UTF-8 name is processed, the escapes are refused for good
    assert processed(redis_client, hostile["non_utf8"])
    for name in ("dotdot", "symlink"):
        fields = record(redis_client, hostile[name].doc_id)
        assert (fields["state"], fields["cat"], fields["etype"]) == (
            "dead",
            "permanent",
            "DocumentOutsideRoots",
        ), (name, fields)

    # And a recovery run over the garbage finishes and reports every corrupt record
    try:
        summary = manager.run_batch()
        status = manager.status()
    finally:
        manager.close()
    assert set(summary.corrupt) == set(garbage), summary
    assert status["dead"] == 2

    # And the worker is still alive and processing
    assert worker.process.poll() is None
    good = Doc(str(write_text(doc_root / "after.txt")), "retry")
    celery_app.send_task(TASK, args=good.args)
    wait_steady(lambda: processed(redis_client, good), 30, "the next document")
    census = take_census(redis_client, "bad input", [*docs, good])
    assert (len(census.processed), len(census.tracked), census.lost) == (2, 2, []), census.line()
