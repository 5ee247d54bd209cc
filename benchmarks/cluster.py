"""What sharding and a Redis Cluster cost and buy, as ratios (nothing asserted).

    python benchmarks/cluster.py            # 1M records for the claim figure
    python benchmarks/cluster.py --quick    # 50k records, fewer failures per client

1. **claim at N records, 3 shards ÷ 1 shard** — the median latency of claiming 100
   due documents (then releasing them, untimed) from a store of N records on one
   redis-server, tracked with ``shards=3`` and with ``shards=1``. Every record is
   written by the real ``record_failure``.
2. **records/s, 3-primary cluster ÷ one node** — three client processes record
   failures as fast as they can, against a 3-primary cluster (``shards=3``) and
   against one redis-server (``shards=1``); the rate is all records over the slowest
   client's time, best of two rounds each.

Both sides of each ratio run here, on the same machine, one after the other.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.redis_cluster import LocalCluster
from recovery.redis_server import RedisServer
from recovery.store import Tracker

CLAIM = 100
CLIENTS = 3


def config(shards: int) -> RecoveryConfig:
    return RecoveryConfig(min_retry_interval_hours=0.0, retry_jitter=0.0, shards=shards)


def record(n: int, now: float, client: int = 0) -> FailedDocumentRecord:
    return FailedDocumentRecord(
        document_path=f"/bench/{client}/{n:09d}.pdf",
        task_id=f"bench-{client}-{n}",
        error_message="RuntimeError: benchmark failure",
        failure_timestamp=now,
        worker_id=f"w{n % 8}",
    )


def claim_ms(url: str, shards: int, records: int, repeat: int) -> float:
    """Median ms of claiming CLAIM documents from ``records`` tracked ones."""
    tracker = Tracker(url, config(shards))
    try:
        tracker.maintenance.drop_everything()
        now = time.time() - 3600
        for n in range(records):
            tracker.store.record_failure(record(n, now))
        samples = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            claim = tracker.claims.claim_due(CLAIM)
            samples.append(time.perf_counter() - start)
            tracker.claims.release([r.doc_id for r in claim.records], token=claim.token)
        tracker.maintenance.drop_everything()
        return statistics.median(samples[1:]) * 1000
    finally:
        tracker.close()


def _client(url: str, shards: int, client: int, count: int) -> float:
    tracker = Tracker(url, config(shards))
    now = time.time()
    tracker.reports.status()  # connect (and read a cluster's slot map) untimed
    start = time.perf_counter()
    for n in range(count):
        tracker.store.record_failure(record(n, now, client))
    elapsed = time.perf_counter() - start
    tracker.close()
    return elapsed


def records_per_second(url: str, shards: int, count: int) -> float:
    """Records/s of CLIENTS processes recording ``count`` failures each."""
    Tracker(url, config(shards)).maintenance.drop_everything()
    context = multiprocessing.get_context("spawn")
    with context.Pool(CLIENTS) as pool:
        times = pool.starmap(_client, [(url, shards, c, count) for c in range(CLIENTS)])
    return CLIENTS * count / max(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--records", type=int, help="records of the claim figure")
    options = parser.parse_args(argv)
    records = options.records or (50_000 if options.quick else 1_000_000)
    per_client = 3_000 if options.quick else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        with RedisServer(Path(tmp) / "single", appendonly=False) as server:
            one = claim_ms(server.url, 1, records, 30)
            three = claim_ms(server.url, 3, records, 30)
            print(
                f"1. claim {CLAIM} at {records:,} records: 1 shard {one:.2f} ms, "
                f"3 shards {three:.2f} ms; 3 shards / 1 shard = {three / one:.2f}"
            )
            single = max(records_per_second(server.url, 1, per_client) for _ in range(2))
        with LocalCluster(Path(tmp) / "cluster") as cluster:
            spread = max(records_per_second(cluster.url, 3, per_client) for _ in range(2))
            cluster_one = max(records_per_second(cluster.url, 1, per_client) for _ in range(2))
    print(
        f"2. records/s with {CLIENTS} client processes: one node {single:,.0f}, "
        f"3-primary cluster with 3 shards {spread:,.0f} (with 1 shard {cluster_one:,.0f}); "
        f"cluster / one node = {spread / single:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
