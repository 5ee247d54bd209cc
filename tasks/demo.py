"""``make demo``: the pipeline and its recovery, end to end, on the bundled samples.

It copies ``samples/`` to a work folder, holds two files back (their processing fails
with FileNotFoundError) and adds a corrupt PDF (a permanent failure), starts a real
worker and beat, submits every document, shows the results and what the recovery
system tracked, then restores the held-back files and waits for beat's
``recovery.run`` to resubmit them. Exit 0 when both recovered and the corrupt PDF is
dead (never retried), 1 otherwise. Everything started is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery.result import AsyncResult

from recovery import DocumentRecoveryManager, RecoveryConfig
from tasks.app import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HELD_BACK = ("worker-failures.csv", "visibility-timeout.pdf")
QUERY = "pipeline worker lost visibility timeout retry"
PREFIX = "docrecovery-demo"
WAIT_SECONDS = 60.0


def _environment(url: str, docs: Path, data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": url,
        "DOCRECOVERY_ROOTS": str(docs),
        "DOCRECOVERY_KEY_PREFIX": PREFIX,
        "DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS": "0",
        "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": "0.05",
        "DOCRECOVERY_SPOOL_DIR": str(data / "spool"),
    }


@contextlib.contextmanager
def _processes(env: dict[str, str], data: Path) -> Iterator[None]:
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    commands = {
        "worker": [
            *celery,
            "worker",
            "-Q",
            "documents,recovery,highmem",
            "-c",
            "2",
            "-n",
            "demo@%h",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": [*celery, "beat", "--loglevel=WARNING"],
    }
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            log = (data / f"{name}.log").open("wb")
            running[name] = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        yield
    finally:
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        for name, process in running.items():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in 20 s; killing it")
                process.kill()
                process.wait()


def _show(path: Path, result: AsyncResult) -> None:
    value: Any = result.result
    if result.successful():
        chunks: list[dict[str, Any]] = value["top_chunks"]
        best: dict[str, Any] = chunks[0] if chunks else {"score": 0.0, "preview": ""}
        print(
            f"  ok      {path.name:28} {value['type']:8} {value['characters']:6} chars"
            f"  best {best['score']:5.2f}  {best['preview'][:40]!r}"
        )
    else:
        print(f"  FAILED  {path.name:28} {type(value).__name__}: {str(value)[:70]}")


def _print_tracked(manager: DocumentRecoveryManager) -> None:
    for record in manager.tracker.reports.get_failed_documents():
        print(
            f"  {record.state:10} {Path(record.document_path).name:28} {record.error_category:15}"
            f" {record.error_type}, retries {record.retry_count}"
        )
    status = manager.status()
    m = status["recovery_metrics"]
    print(
        f"  tracked {status['total_failed_documents']}, dead {status['dead']}; "
        f"recoveries {m['successful_recoveries']}/{m['recovery_attempts']} succeeded, "
        f"average {m['average_recovery_time']:.2f} s"
    )


def _wait_for(manager: DocumentRecoveryManager, metric: str, expected: int) -> bool:
    """Poll the recovery metrics (handlers run just after a result is stored)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if manager.status()["recovery_metrics"][metric] >= expected:
            return True
        time.sleep(0.25)
    return False


def _reset(manager: DocumentRecoveryManager) -> None:
    """Forget an earlier demo's records: only the demo's own prefix is touched."""
    manager.tracker.maintenance.drop_everything()


def run_demo(url: str, data: Path) -> int:
    shutil.rmtree(data, ignore_errors=True)
    docs, held = data / "docs", data / "held-back"
    shutil.copytree(SAMPLES, docs, ignore=shutil.ignore_patterns("README.md"))
    held.mkdir()
    for name in HELD_BACK:
        (docs / name).rename(held / name)
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    paths = sorted(docs.iterdir()) + [docs / name for name in HELD_BACK]

    env = _environment(url, docs, data)
    os.environ.update(env)
    manager = DocumentRecoveryManager(url, RecoveryConfig.from_env(), app=app)
    _reset(manager)
    try:
        with _processes(env, data):
            print(f"\n1. submitting {len(paths)} documents: {len(HELD_BACK)} missing, 1 corrupt")
            results = [
                (p, app.send_task("tasks.process_document", args=[str(p), QUERY, {"demo": 1}]))
                for p in paths
            ]
            for path, result in results:
                result.get(timeout=WAIT_SECONDS, propagate=False)
                _show(path, result)

            print("\n2. what the recovery system tracked")
            _wait_for(manager, "total_failed_documents", len(HELD_BACK) + 1)
            _print_tracked(manager)

            print(f"\n3. restoring {', '.join(HELD_BACK)}; beat runs recovery.run every 3 s")
            for name in HELD_BACK:
                (held / name).rename(docs / name)
            recovered = _wait_for(manager, "successful_recoveries", len(HELD_BACK))

            print("\n4. after recovery")
            _print_tracked(manager)
            status = manager.status()
    finally:
        manager.close()
    ok = recovered and status["total_failed_documents"] == status["dead"] == 1
    print(f"\ndemo {'succeeded' if ok else 'FAILED'}; worker and beat logs in {data}")
    return 0 if ok else 1
