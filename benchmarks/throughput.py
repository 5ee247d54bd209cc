"""Figures 5 and 6: documents through a real prefork worker with tracking on and off,
and documents resubmitted by a recovery run against a bare send_task loop."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from benchmarks.bench import QUERY, REPO, Bench, ident, make_record
from benchmarks.measure import Figure, Paired, Sizes, against, interleaved, judged, paired
from recovery.api import DocumentRecoveryManager
from recovery.calls import HEADER


def pipeline_overhead(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Documents per second through a prefork worker, recovery tracking on vs. off:
    the workers run throughout, each on its own queue, and the rounds rotate between
    them (five of each; the median of the per-round ratios), so a burst of the
    machine's other load falls on every side alike instead of on one side's only run.
    A second worker with tracking off is the control (5b): what the same measurement
    gives two identical workers is the noise the 5% target must be read against."""
    docs = write_documents(bench.workdir / "docs", sizes.pipeline_docs)
    app = Celery("bench", broker=bench.server.url, backend=bench.server.url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])
    bench.flush()
    with contextlib.ExitStack() as workers:
        for side in SIDES:
            workers.enter_context(celery_worker(bench, app, side))
        rates = interleaved(
            5, **{side: functools.partial(process_all, app, docs, QUEUES[side]) for side in SIDES}
        )
    tracked, control = against(rates["on"], rates["off"]), against(rates["control"], rates["off"])

    def details(paired: Paired) -> dict[str, Any]:
        return {
            "documents": len(docs),
            "per_second": round(paired.measured, 1),
            "off_per_second": round(paired.baseline, 1),
            "extra_ms_per_document": round(1e3 / paired.measured - 1e3 / paired.baseline, 3),
            "ratios": paired.ratios,
        }

    return [
        judged(
            5, "pipeline: docs/s tracking on / off", tracked.ratio, ">= 0.95", **details(tracked)
        ),
        judged(
            5,
            "pipeline control: docs/s tracking off / off, another worker",
            control.ratio,
            "",
            "b",
            **details(control),
        ),
    ]


#: Figure 5's workers: tracking on, off, and off again (the control); each its queue.
SIDES = ("on", "off", "control")
QUEUES = {side: f"documents-{side}" for side in SIDES}


def write_documents(folder: Path, count: int) -> list[Path]:
    """``count`` 20 KB text documents of words the query can rank."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    words = (QUERY + " the of and a in to invoice margin forecast cost sales europe asia").split()
    words += [f"term{n}" for n in range(300)]
    paths = []
    for i in range(count):
        path = folder / f"doc-{i:05d}.txt"
        text = " ".join(rng.choices(words, k=4000))
        path.write_text(text[: 20 * 1024])
        paths.append(path)
    return paths


@contextlib.contextmanager
def celery_worker(bench: Bench, app: Celery, side: str) -> Iterator[None]:
    """A real ``celery -A tasks worker`` on the bench Redis, consuming figure 5's
    queue of its side (tracking on only for "on"), once it answers a ping of its own
    name."""
    env = {
        **os.environ,
        "REDIS_URL": bench.server.url,
        "DOCRECOVERY_ROOTS": str(bench.workdir / "docs"),
        "DOCRECOVERY_SPOOL_DIR": str(bench.workdir / "spool"),
    }
    if side != "on":
        env["DOCRECOVERY_TRACKED_TASKS"] = "none.such"
    queue = QUEUES[side]
    log = bench.workdir / f"worker-{queue}.log"
    name = f"bench-{queue}-{os.getpid()}@{socket.gethostname()}"
    command = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "2",
        "-Q", queue, "--without-heartbeat", "--without-mingle", "--without-gossip",
        "--loglevel", "WARNING", "-n", name,
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-1500:]}")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def process_all(app: Celery, docs: Sequence[Path], queue: str) -> float:
    """Documents per second through ``queue``: send them all, then wait for every
    result (after a warm-up of four, so both worker children have imported everything)."""

    def send(paths: Sequence[Path]) -> list[AsyncResult]:
        return [
            app.send_task("tasks.process_document", args=[str(p), QUERY], queue=queue)
            for p in paths
        ]

    for result in send(docs[:4]):
        result.get(timeout=120)
    start = time.perf_counter()
    for result in send(docs):
        result.get(timeout=300)
    return len(docs) / (time.perf_counter() - start)


def recovery_throughput(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Documents resubmitted per second by run_batch vs. a bare send_task loop. Each
    failed task has its FAILURE result stored, as a worker leaves it: a run names the
    replacement in it (lineage.link)."""
    count = sizes.recovery_docs
    manager = DocumentRecoveryManager(bench.server.url, bench.config)
    records = [make_record(ident(i), time.time()) for i in range(count)]
    timeout = bench.config.recovery_timeout
    runs_per_recovery: list[int] = []

    def recovered() -> float:
        bench.flush()
        bench.record_failures(count)
        for r in records:
            manager.app.backend.mark_as_failure(r.task_id, RuntimeError(r.error_type))
        sent, runs = 0, 0
        start = time.perf_counter()
        while sent < count:
            done = len(manager.run_batch().resubmitted)
            if not done:
                raise RuntimeError(f"recovery stalled after {sent} of {count} documents")
            sent, runs = sent + done, runs + 1
        rate = sent / (time.perf_counter() - start)
        if not AsyncResult(records[-1].task_id, app=manager.app).children:
            raise RuntimeError("recovery did not name the replacement in a replaced result")
        runs_per_recovery.append(runs)
        return rate

    def bare() -> float:
        bench.flush()
        start = time.perf_counter()
        for r in records:
            manager.app.send_task(
                r.task_name,
                args=r.args,
                kwargs=r.kwargs,
                queue=bench.config.resubmit_queue,
                time_limit=timeout,
                soft_time_limit=int(timeout * 0.9),
                headers={HEADER: {"doc_id": r.doc_id, "attempt": 1, "manual": False}},
            )
        return count / (time.perf_counter() - start)

    try:
        rates = paired(5, recovered, bare)
    finally:
        manager.close()
    return [
        judged(
            6,
            "recovery: resubmitted/s run_batch / bare send_task",
            rates.ratio,
            ">= 0.9",
            documents=count,
            batch_size=bench.config.recovery_batch_size,
            runs_per_recovery=runs_per_recovery[0],
            recovered_per_second=round(rates.measured),
            send_task_per_second=round(rates.baseline),
            extra_us_per_document=round(1e6 / rates.measured - 1e6 / rates.baseline, 1),
            ratios=rates.ratios,
        )
    ]
