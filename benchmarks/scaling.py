"""Figures 2 and 3: a claim's and a status's latency as the store grows, and a
status against RQ's count of its failed jobs."""

from __future__ import annotations

from benchmarks import peers
from benchmarks.bench import RQ_DB, Bench, payload, peer_url
from benchmarks.measure import (
    Figure,
    Paired,
    Sizes,
    against,
    interleaved,
    judged,
    median_ms,
    note,
    seconds,
)
from recovery.api import DocumentRecoveryManager
from recovery.store import ClaimResult

CLAIM_BATCH = 100


def claim_scaling(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Latency of claiming a batch of 100 due documents as the store grows."""
    claims = bench.tracker.claims
    latency: dict[int, float] = {}
    load_seconds: dict[int, float] = {}
    claimed: set[int] = set()

    def claim() -> ClaimResult:
        result = claims.claim_due(CLAIM_BATCH)
        claimed.add(len(result.records))
        return result

    def release(claim: ClaimResult) -> None:
        claims.release([r.doc_id for r in claim.records], token=claim.token)

    for count in sizes.claim_sizes:
        load_seconds[count] = round(bench.ensure_loaded(count), 1)
        latency[count] = round(median_ms(claim, sizes.repeat, after=release), 3)
    if claimed != {CLAIM_BATCH}:
        raise RuntimeError(f"claims took {sorted(claimed)} documents, not {CLAIM_BATCH}")
    small, large = min(latency), max(latency)
    return [
        judged(
            2,
            f"claim {CLAIM_BATCH}: {large:,} / {small:,} records latency",
            latency[large] / latency[small],
            "<= 1.5",
            median_ms=latency,
            load_seconds=load_seconds,
            repeat=sizes.repeat,
        )
    ]


def status_scaling(bench: Bench, sizes: Sizes) -> list[Figure]:
    """manager.status() latency (status + analysis) at a small and a large store, and
    at ``peer_status`` documents against RQ's FailedJobRegistry.count at as many."""
    manager = DocumentRecoveryManager(bench.server.url, bench.config)
    latency: dict[int, float] = {}
    peer = peers.RQ(peer_url(bench, RQ_DB))
    versus_rq = Paired(0.0, 0.0, 0.0, [])
    try:
        # The size already loaded (by figure 2) goes first, to load one size less.
        counts = {*sizes.status_sizes, sizes.peer_status}
        for count in sorted(counts, key=lambda n: n != bench.loaded):
            bench.ensure_loaded(count)  # empties every database first, RQ's too
            latency[count] = round(median_ms(manager.status, sizes.repeat * 10), 3)
            if count == sizes.peer_status:
                versus_rq = status_versus_rq(peer, manager, count, sizes.repeat * 10)
    finally:
        manager.close()
        peer.close()
    small, large = sizes.status_sizes
    return [
        judged(
            3,
            f"status: {large:,} / {small:,} records latency",
            latency[large] / latency[small],
            "<= 1.5",
            median_ms=latency,
            large_store_ms=latency[large],
            large_store_target_ms=5.0,
            large_store_under_target=latency[large] < 5.0,
        ),
        judged(
            3,
            f"status at {sizes.peer_status:,} / RQ FailedJobRegistry.count latency",
            versus_rq.ratio,
            "<= 1.0",
            "b",
            status_ms=round(versus_rq.measured, 3),
            rq_count_ms=round(versus_rq.baseline, 3),
            ratios=versus_rq.ratios,
        ),
    ]


def status_versus_rq(
    peer: peers.RQ, manager: DocumentRecoveryManager, count: int, repeat: int
) -> Paired:
    """With our ``count`` documents loaded, load as many failed RQ jobs (in RQ's own
    database), then median latencies of both counts, interleaved over six rounds:
    our status (every count and the recovery metrics, one script call) against RQ's
    count of its failed-job registry."""
    took = seconds(lambda: peer.load_failed(payload(3), count))
    if peer.failed_count() != count:
        raise RuntimeError(f"rq loader left {peer.failed_count()} failed jobs, not {count}")
    note(f"loaded {count:,} failed RQ jobs in {took:.1f} s")
    latencies = interleaved(
        6,
        ours=lambda: median_ms(manager.tracker.reports.status, repeat),
        rq=lambda: median_ms(peer.failed_count, repeat),
    )
    peer.client.flushdb()
    return against(latencies["ours"], latencies["rq"])
