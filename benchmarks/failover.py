"""What a Sentinel failover costs the tracker: events lost or doubled, and what WAIT costs.

    python benchmarks/failover.py                 # 5 trials each way, 1000 events a trial
    python benchmarks/failover.py --trials 10 --events 1000

Each trial starts a primary, two replicas and three sentinels
(``recovery.sentinel_server.SentinelGroup``: failover after 1 s without an answer) and
four writer threads, each delivering failure events of documents of its own through
the worker's path (``recovery.events.Reporter``: apply, else spool). The primary is
SIGKILLed when a random share (10–90%) of the events has been delivered, whatever is
in flight. Once a replica is promoted, the spool is replayed, and every event's record
is read on the new primary:

- **lost**: no record (acknowledged by the old primary, never replicated);
- **doubled**: applied twice (the old primary applied and replicated it, but died
  before answering, so the writer spooled it and the replay applied it again).

It runs the trials without WAIT (``wait_replicas = 0``, Redis's default asynchronous
replication) and with ``wait_replicas = 1``, and prints both per 1,000 events. Then the
cost, as ratios measured back to back on one primary with one replica: failures
recorded/s by one client with WAIT ÷ without, and through Sentinel ÷ straight to the
primary. Nothing is asserted (``make test`` does not run it); the exit code is 0.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from recovery.config import RecoveryConfig
from recovery.events import FailureEvent, Reporter
from recovery.records import FailedDocumentRecord
from recovery.sentinel_server import SentinelGroup
from recovery.spool import Spool
from recovery.store import Tracker

WRITERS = 4
#: One record shape: a long path, a query and a 2 KB error, as a real failure has.
MESSAGE = "RuntimeError: the extraction service answered 503\n" + "  File x.py, line 1\n" * 100


def event(batch: str, number: int) -> FailureEvent:
    """The failure of document ``number`` of ``batch``: a document of its own."""
    path = f"/srv/ingest/2024/batches/{batch}/documents/{number:06}/annual-report-final.pdf"
    record = FailedDocumentRecord(
        document_path=path,
        task_id=f"task-{batch}-{number}",
        error_message=MESSAGE,
        query="visibility timeout",
        worker_id="celery@bench",
        args=[path, "visibility timeout"],
        error_type="RuntimeError",
        time_limit=300,
    )
    return FailureEvent(record, counted=True, recovery_attempt=False)


class CountingSpool(Spool):
    """The worker's spool, counting the events it takes in (a replay that fails again
    writes them back without counting them twice)."""

    appended = 0
    _lock = threading.Lock()

    def append(self, event: dict[str, Any]) -> Path:
        with self._lock:
            CountingSpool.appended += 1
        return super().append(event)


@dataclass(frozen=True)
class Outcome:
    events: int
    killed_after: int
    spooled: int
    lost: int
    doubled: int


def trial(batch: str, events: int, wait: int, rng: random.Random) -> Outcome:
    """One failover under ``events`` events from WRITERS threads; see the module doc."""
    with tempfile.TemporaryDirectory() as tmp, SentinelGroup(Path(tmp), replicas=2) as group:
        config = RecoveryConfig(wait_replicas=wait, spool_dir=str(Path(tmp) / "spool"))
        kill_at = rng.randint(events // 10, events * 9 // 10)
        CountingSpool.appended = 0
        delivered = [0]
        lock = threading.Lock()

        def write(offset: int) -> None:
            tracker = Tracker(group.url, config)
            reporter = Reporter(CountingSpool(config.spool_dir))
            for n in range(offset, events, WRITERS):
                reporter.deliver(tracker, event(batch, n))
                with lock:
                    delivered[0] += 1
            tracker.close()

        writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for writer in writers:
            writer.start()
        while delivered[0] < kill_at:
            time.sleep(0.0005)
        group.primary.kill()
        for writer in writers:
            writer.join()
        group.wait_failover(timeout=60)
        tracker = Tracker(group.url, config)
        client = tracker.connection.client
        assert isinstance(client, redis.Redis)
        _wait_for_a_replica(client, wait)
        reporter = Reporter(Spool(config.spool_dir))
        while Spool(config.spool_dir).count():
            reporter.replay(tracker)
        lost, doubled = _count(tracker, batch, events)
        tracker.close()
        return Outcome(events, kill_at, CountingSpool.appended, lost, doubled)


def _wait_for_a_replica(client: redis.Redis, wait: int, timeout: float = 60.0) -> None:
    """With WAIT, replay once the promoted primary has a replica again (Sentinel
    repoints the other one), or every replayed event waits out the timeout."""
    deadline = time.monotonic() + timeout
    while wait and int(client.info("replication")["connected_slaves"]) < wait:
        if time.monotonic() > deadline:
            raise TimeoutError("the promoted primary has no replica")
        time.sleep(0.05)


def _count(tracker: Tracker, batch: str, events: int) -> tuple[int, int]:
    """(events without a record, extra applications) on the current primary."""
    pipe = tracker.connection.pipeline()
    for n in range(events):
        pipe.hget(tracker.keys.record(event(batch, n).record.doc_id), "failures")
    failures = pipe.execute()
    lost = sum(1 for f in failures if f is None)
    doubled = sum(int(f) - 1 for f in failures if f is not None)
    return lost, doubled


def records_per_second(url: str, config: RecoveryConfig, batch: str, count: int) -> float:
    tracker = Tracker(url, config)
    records = [event(batch, n).record for n in range(count)]
    started = time.perf_counter()
    for record in records:
        tracker.store.record_failure(record, now="server")
    elapsed = time.perf_counter() - started
    tracker.close()
    return count / elapsed


def cost(rounds: int, count: int) -> dict[str, float]:
    """Median records/s of one client: direct, through Sentinel, with WAIT 1."""
    rates: dict[str, list[float]] = {"direct": [], "sentinel": [], "wait": []}
    with tempfile.TemporaryDirectory() as tmp, SentinelGroup(Path(tmp), replicas=1) as group:
        plain, waiting = RecoveryConfig(), RecoveryConfig(wait_replicas=1)
        for r in range(rounds):
            rates["direct"].append(records_per_second(group.primary.url, plain, f"d{r}", count))
            rates["sentinel"].append(records_per_second(group.url, plain, f"s{r}", count))
            rates["wait"].append(records_per_second(group.url, waiting, f"w{r}", count))
    return {side: statistics.median(values) for side, values in rates.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5, help="failovers per setting")
    parser.add_argument("--events", type=int, default=1000, help="failure events per trial")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the cost figure")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    # every spooled event logs an error: the table says how many there were
    logging.getLogger("recovery").setLevel(logging.CRITICAL)
    rng = random.Random(args.seed)

    print(
        f"{'WAIT':>6} {'trial':>5} {'killed after':>12} {'spooled':>8} {'lost':>5} {'doubled':>8}"
    )
    totals: dict[int, list[Outcome]] = {0: [], 1: []}
    for n in range(args.trials):
        for wait in (0, 1):
            outcome = trial(f"{wait}-{n}", args.events, wait, rng)
            totals[wait].append(outcome)
            print(
                f"{wait:>6} {n:>5} {outcome.killed_after:>12} {outcome.spooled:>8}"
                f" {outcome.lost:>5} {outcome.doubled:>8}"
            )
    for wait, outcomes in totals.items():
        events = sum(o.events for o in outcomes)
        lost = sum(o.lost for o in outcomes) * 1000 / events
        doubled = sum(o.doubled for o in outcomes) * 1000 / events
        print(
            f"wait_replicas={wait}: lost {lost:.2f} / doubled {doubled:.2f} per 1,000 events"
            f" ({len(outcomes)} failovers, {events} events)"
        )

    rates = cost(args.rounds, 2000)
    print(
        f"failures recorded/s, one client: WAIT 1 ÷ none {rates['wait'] / rates['sentinel']:.2f};"
        f" through Sentinel ÷ direct {rates['sentinel'] / rates['direct']:.2f}"
        f" (direct {rates['direct']:.0f}/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
