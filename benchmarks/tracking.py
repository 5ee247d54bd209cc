"""Figures 1 and 4: what recording a failure costs, in time and in Redis memory,
against a bare HSET, the floor of a one-script tracker and the peers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks import peers
from benchmarks.bench import (
    FLOOR_LUA,
    QUERY,
    RQ_DB,
    TRACEBACK,
    Bench,
    ident,
    make_record,
    payload,
    peer_url,
    record_floor,
    record_one,
)
from benchmarks.measure import Figure, Sizes, against, interleaved, judged, note, seconds
from recovery.records import bound_message


def server_us(bench: Bench, command: str, run: Callable[[], object]) -> float:
    """The server's time per call of ``command`` in one pass of ``run`` alone: in the
    interleaved rounds the floor's and Dramatiq's scripts are EVALSHAs too."""
    bench.flush()
    bench.client.config_resetstat()
    run()
    return float(bench.client.info("commandstats")[f"cmdstat_{command}"]["usec_per_call"])


def tracking_cost(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Failures recorded per second by our side vs. a bare HSET of the same hash and
    the peers' failure paths (peers.py), same documents, interleaved over rounds."""
    rounds = 10
    count = sizes.tracking_records // rounds
    now = time.time()
    records = [make_record(ident(i), now) for i in range(count)]
    hashes: list[tuple[str, dict[Any, Any]]] = [
        (f"bench:{r.doc_id}", r.to_redis()) for r in records
    ]
    docs = payload(count)
    rq = peers.RQ(peer_url(bench, RQ_DB))
    dramatiq = peers.Dramatiq(bench.server.url)
    celery_retry = peers.CeleryRetry(bench.server.url)

    def track_all() -> None:
        for record in records:
            record_one(bench.store, record)

    def tracked() -> float:
        bench.flush()
        return count / seconds(track_all)

    def bare() -> float:
        bench.flush()
        return count / seconds(lambda: [bench.client.hset(k, mapping=m) for k, m in hashes])

    # the floor is a tracker too: it calls through a client made as ours is (with the
    # packer), so 1e and record_one_over_floor compare scripts alone
    floor_client = bench.store.connection.client
    assert isinstance(floor_client, redis.Redis)
    floor_sha = floor_client.script_load(FLOOR_LUA)
    ttl, limit = int(bench.config.retention_seconds), bench.config.max_error_chars

    def floor_all() -> None:
        for record in records:
            record_floor(floor_client, floor_sha, record, ttl, limit)

    def floor() -> float:
        bench.flush()
        return count / seconds(floor_all)

    def rq_failure() -> float:
        bench.flush()
        started = rq.started(docs)
        return count / seconds(lambda: rq.fail(started, TRACEBACK))

    def dramatiq_retry() -> float:
        bench.flush()
        messages = dramatiq.delivered(docs)
        return count / seconds(lambda: dramatiq.fail(messages, TRACEBACK))

    def celery_task_retry() -> float:
        bench.flush()
        return count / seconds(lambda: celery_retry.fail(docs, TRACEBACK))

    try:
        rates = interleaved(
            rounds,
            tracked=tracked,
            hset=bare,
            floor=floor,
            rq=rq_failure,
            dramatiq=dramatiq_retry,
            celery_retry=celery_task_retry,
        )
    finally:
        rq.close()
        dramatiq.close()
        celery_retry.close()
    server = {
        "evalsha": server_us(bench, "evalsha", track_all),
        "hset": server_us(bench, "hset", bare),
    }
    ours = rates["tracked"]
    vs = {name: against(ours, rates[name]) for name in rates if name != "tracked"}
    floor_vs_hset = against(rates["floor"], rates["hset"])
    common = {"records": count * rounds, "tracked_per_second": round(vs["hset"].measured)}

    def row(part: str, peer: str, name: str, target: str, **details: Any) -> Figure:
        return judged(
            1,
            f"tracking cost: {name}",
            vs[peer].ratio,
            target,
            part,
            **common,
            **{f"{peer}_per_second": round(vs[peer].baseline)},
            extra_us_per_record=round(1e6 / vs[peer].measured - 1e6 / vs[peer].baseline, 1),
            ratios=vs[peer].ratios,
            **details,
        )

    return [
        row(
            "",
            "hset",
            "record_one / bare HSET rate",
            ">= 0.7",
            server_us_per_record_failure=server["evalsha"],
            server_us_per_hset=server["hset"],
        ),
        row("b", "dramatiq", "record_one / Dramatiq retry enqueue rate", ">= 1.0"),
        row("c", "rq", "record_one / RQ failure path rate", ">= 3"),
        row("d", "celery_retry", "record_one / Celery self.retry rate", ""),
        judged(
            1,
            "tracking floor: a minimal one-script tracker / bare HSET rate",
            floor_vs_hset.ratio,
            "",
            "e",
            floor_per_second=round(floor_vs_hset.measured),
            record_one_over_floor=vs["floor"].ratio,
            ratios=floor_vs_hset.ratios,
        ),
    ]


def memory_per_record(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Redis bytes per tracked failure against Dramatiq's per retried message (same
    payload, every key's MEMORY USAGE), and beyond the record's own text."""
    count = sizes.memory_records
    bench.flush()
    before = bench.used_memory()
    took = seconds(lambda: bench.record_failures(count))
    bench.loaded = 0
    note(f"recorded {count:,} failures through record_one in {took:.1f} s")
    total = (bench.used_memory() - before) / count
    ours = peers.memory_of_every_key(bench.client) / count
    sample = make_record(ident(0), 0.0)
    stored = bound_message(sample.error_message, bench.config.max_error_chars)
    text = sum(len(s.encode()) for s in (sample.document_path, QUERY, stored))
    key = bench.store.keys.record(sample.doc_id)
    hash_bytes = int(bench.client.memory_usage(key, samples=0) or 0)
    encoding = str(bench.client.object("encoding", key))
    theirs, theirs_used = dramatiq_memory(bench, count)
    return [
        judged(
            4,
            "memory: bytes per tracked failure / Dramatiq's per retry",
            ours / theirs,
            "<= 0.6",
            records=count,
            bytes_per_record=round(ours),
            dramatiq_bytes_per_message=round(theirs),
            used_memory_per_record=round(total),
            dramatiq_used_memory_per_message=round(theirs_used),
        ),
        judged(
            4,
            "memory: bytes per record beyond its text",
            total - text,
            "<= 500",
            "b",
            records=count,
            total_bytes_per_record=round(total),
            text_bytes=text,
            record_hash_bytes=hash_bytes,
            record_hash_encoding=encoding,
            outside_the_hash_bytes=round(total - hash_bytes),
        ),
    ]


def dramatiq_memory(bench: Bench, count: int, batch: int = 1000) -> tuple[float, float]:
    """Bytes per message after Dramatiq retried ``count`` messages on an empty
    database: every key's MEMORY USAGE, and the growth of used_memory."""
    peer = peers.Dramatiq(bench.server.url)
    try:
        bench.flush()
        before = bench.used_memory()
        for low in range(0, count, batch):
            docs = payload(min(count, low + batch))
            docs = peers.Payload(docs.paths[low:], QUERY, TRACEBACK)
            peer.fail(peer.delivered(docs), TRACEBACK)
        used = (bench.used_memory() - before) / count
        every_key = peers.memory_of_every_key(bench.client) / count
        bench.flush()
    finally:
        peer.close()
    return every_key, used
