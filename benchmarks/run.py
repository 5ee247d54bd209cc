"""docrecovery benchmarks: what tracking and recovery cost, as ratios.

Every figure is a ratio against a baseline measured in the same run, on the same
private redis-server (started here on a free port, append-only off), so a busy machine
slows both sides alike. Nothing is asserted: the table says PASS or MISS against each
target, and ``benchmarks/results/latest.json`` keeps the details.

    python benchmarks/run.py              # every figure, full sizes (a few minutes)
    python benchmarks/run.py --quick      # smaller sizes, for a smoke run
    python benchmarks/run.py --only 2,3   # some figures

Every benchmark record has the same text: a 100-character path, a query and a 2 KB
traceback. Large stores (figures 2 and 3) are written by a clone loader that copies
what one real ``record_failure`` call wrote; before each use it is checked against
``record_failure`` on a few documents, and refuses to run if they differ.

The peers (RQ, Dramatiq, Celery's own retry; ``peers.py``) are baselines of figures
1, 3 and 4, measured the same way on the same Redis, interleaved with our side.

The exit code is 0 whenever every figure was measured, whatever the results; 1 when a
figure could not be measured (its row says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Celery
from celery.result import AsyncResult

from recovery.api import DocumentRecoveryManager, FailedDocumentsTracker
from recovery.calls import HEADER
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord, bound_message, document_id
from recovery.redis_server import RedisServer
from recovery.store import ClaimResult, Store
from recovery.store.connection import wire

try:  # python -m benchmarks.run
    from benchmarks import peers
except ModuleNotFoundError:  # python benchmarks/run.py: this folder is on sys.path
    import peers  # type: ignore[import-not-found,no-redef]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "latest.json"
CLONE_LUA = HERE / "clone_records.lua"

PATH_CHARS = 100
TRACEBACK_CHARS = 2048
QUERY = "quarterly revenue by region"
WORKER = "celery@bench-worker-1"
#: Stands for a document's number in the template record of the clone loader.
MARK = "@" * 12
CLAIM_BATCH = 100
#: RQ's database on the bench Redis: its failed jobs stay apart from our store there.
RQ_DB = 1
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    tracking_records: int
    claim_sizes: tuple[int, ...]
    status_sizes: tuple[int, int]
    memory_records: int
    pipeline_docs: int
    recovery_docs: int
    repeat: int
    peer_status: int  # failed documents (ours) and failed jobs (RQ's) for figure 3b


FULL = Sizes(
    5_000, (10_000, 100_000, 1_000_000), (10_000, 1_000_000), 100_000, 300, 5_000, 50, 100_000
)
QUICK = Sizes(1_000, (1_000, 10_000, 100_000), (1_000, 100_000), 10_000, 60, 1_000, 20, 100_000)


@dataclass
class Figure:
    number: int
    name: str
    value: float | None = None
    target: str = ""
    passed: bool | None = None  # None: shown for information, no target
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    part: str = ""  # "b", "c", ...: a figure's further rows

    @property
    def label(self) -> str:
        return f"{self.number}{self.part}"


def judged(
    number: int, name: str, value: float, target: str, part: str = "", **details: Any
) -> Figure:
    """A figure with its verdict; ``target`` is ">= x" or "<= x", or "" for a figure
    shown for information."""
    passed = None
    if target:
        op, limit = target.split()
        passed = value >= float(limit) if op == ">=" else value <= float(limit)
    return Figure(number, name, round(value, 3), target, passed, details, part=part)


# --- timing ----------------------------------------------------------------------


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(
    fn: Callable[[], T], repeat: int, after: Callable[[T], object] = lambda _: None
) -> float:
    """Median latency of ``fn`` over ``repeat`` calls, after one untimed warm-up call;
    ``after`` runs untimed on each result (to undo what ``fn`` changed)."""
    after(fn())
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
        after(out)
    return statistics.median(samples) * 1000


def best_of(rounds: int, **runs: Callable[[], float]) -> dict[str, float]:
    """Run each rate measurement in turn, ``rounds`` times; the best rate of each."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], run())
    return best


@dataclass(frozen=True)
class Paired:
    ratio: float  # median of the per-round ratios measured / baseline
    measured: float  # median rate (or latency)
    baseline: float
    ratios: list[float]  # every round's ratio, to show the spread


def interleaved(rounds: int, **sides: Callable[[], float]) -> dict[str, list[float]]:
    """Every side measured once per round, ``rounds`` times, the order rotated each
    round (two sides: swapped), so no side always runs first or right after another."""
    names = list(sides)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(sides[name]())
    return out


def against(measured: list[float], baseline: list[float]) -> Paired:
    """The median of the per-round ratios holds up on a machine busy in bursts."""
    ratios = [m / b for m, b in zip(measured, baseline, strict=True)]
    return Paired(
        statistics.median(ratios),
        statistics.median(measured),
        statistics.median(baseline),
        [round(r, 3) for r in ratios],
    )


def paired(rounds: int, measured: Callable[[], float], baseline: Callable[[], float]) -> Paired:
    """Two rates measured back to back, ``rounds`` times, the order swapped each round."""
    rates = interleaved(rounds, measured=measured, baseline=baseline)
    return against(rates["measured"], rates["baseline"])


def peer_url(bench: Bench, db: int) -> str:
    return f"redis://127.0.0.1:{bench.server.port}/{db}"


def note(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --- records and the bench Redis ----------------------------------------------------


def ident(i: int) -> str:
    return f"{i:012d}"


def doc_path(number: str) -> str:
    tail = f"/doc-{number}.txt"
    head = "/srv/ingest/finance/quarterly-reports/2024/emea/scanned-originals/archive-batch"
    return head[: PATH_CHARS - len(tail)].ljust(PATH_CHARS - len(tail), "x") + tail


def _traceback() -> str:
    """A 2 KB traceback whose frames differ, so it compresses like a real one (~4x)."""
    rng = random.Random(3)
    modules = (
        "celery/app/trace",
        "tasks/documents",
        "tasks/extract",
        "pypdf/_reader",
        "pypdf/generic/_data_structures",
        "urllib3/connectionpool",
        "requests/adapters",
    )
    names = ("trace_task", "__call__", "process_document", "extract", "read_object",
             "get_object", "urlopen", "send", "_make_request", "decode_text")  # fmt: skip
    lines = ["Traceback (most recent call last):"]
    while sum(map(len, lines)) < TRACEBACK_CHARS:
        site = f"/srv/app/.venv/lib/python3.11/site-packages/{rng.choice(modules)}.py"
        lines.append(f'  File "{site}", line {rng.randint(10, 2000)}, in {rng.choice(names)}')
        lines.append(f"    result = {rng.choice(names)}(self, {rng.choice(names)}, **options)")
    tail = "\nRuntimeError: the extraction service answered 503 Service Unavailable\n"
    return "\n".join(lines)[: TRACEBACK_CHARS - len(tail)] + tail


TRACEBACK = _traceback()


def payload(count: int) -> peers.Payload:
    """The peers' share of the record shape: ``count`` documents' paths, query and
    traceback."""
    return peers.Payload([doc_path(ident(i)) for i in range(count)], QUERY, TRACEBACK)


def record_one(store: Store, record: FailedDocumentRecord) -> None:
    """Our side of every tracking figure: one failure recorded, as a worker's
    task_failure handler records it. The only place the bench calls the tracker's
    write API, so a rename is one edit here. A worker's report carries a 16-character
    event id (recovery/events.py); the task id's tail stands in for it, one per
    document, which the clone loader can copy."""
    store.record_failure(record, event=record.task_id[-16:])


#: The floor of any design that records a failure atomically in one script call: the
#: encoded record's HSET, its TTL and two index entries (figure 1e).
FLOOR_LUA = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[1])
"""


def record_floor(
    client: redis.Redis, sha: str, record: FailedDocumentRecord, ttl: int, limit: int
) -> None:
    """Figure 1e's side: the record encoded as ours is, written by FLOOR_LUA."""
    flat = [item for pair in record.to_redis(limit).items() for item in pair]
    key = f"bench:{record.doc_id}"
    client.evalsha(sha, 3, key, "bench:failed", "bench:due", record.failure_timestamp, ttl, *flat)


def make_record(number: str, now: float) -> FailedDocumentRecord:
    path = doc_path(number)
    return FailedDocumentRecord(
        document_path=path,
        task_id=f"00000000-0000-4000-8000-{number}",
        error_message=TRACEBACK,
        failure_timestamp=now,
        query=QUERY,
        worker_id=WORKER,
        args=[path, QUERY],
        error_type="RuntimeError",
        error_category="other",
        time_limit=300,
    )


class Bench:
    """The private redis-server, a tracker on it, and loaders of benchmark records."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = RedisServer(workdir / "redis", appendonly=False)
        self.server.start()
        self.config = RecoveryConfig(
            min_retry_interval_hours=0.0,
            recovery_batch_size=500,
            spool_dir=str(workdir / "spool"),
        )
        self.client = redis.Redis.from_url(
            self.server.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        # the tracker makes its own client, as a worker's does (the store owns it)
        self.tracker = FailedDocumentsTracker(self.server.url, self.config)
        self.store = self.tracker.store
        self.loaded = 0  # documents the clone loader left, 0 when unknown

    def close(self) -> None:
        self.tracker.close()
        self.server.stop()

    def flush(self) -> None:
        self.client.flushall()
        self.loaded = 0

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def record_failures(self, count: int) -> None:
        """Track ``count`` new documents the real way: one record_failure call each."""
        now = time.time()
        for i in range(count):
            record_one(self.store, make_record(ident(i), now))

    def ensure_loaded(self, count: int) -> float:
        """Leave exactly ``count`` due documents tracked; returns the seconds it took
        (0 when they were already there)."""
        if self.loaded == count:
            return 0.0
        check_clone_loader(self)
        took = seconds(lambda: clone_load(self, count, time.time()))
        self.loaded = count
        note(f"loaded {count:,} records in {took:.1f} s")
        return took


# --- the clone loader -----------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """Everything one record_failure call wrote, ready to be written for others."""

    doc_id: str
    fields: list[str]  # the record hash as a flat field/value list
    slots: list[int]  # 1-based positions of the values that differ per document
    body: int  # 1-based position of the compressed body: built anew per document
    ttl: int
    scores: dict[str, float]  # index sorted set -> the document's score in it
    counts: list[tuple[str, str, int]]  # aggregate hash, field, increment per document
    values: list[tuple[str, str, str]]  # hash, field, value every document shares


def take_template(bench: Bench, now: float) -> Template:
    """Record one document on an empty database, read back all it wrote, and empty the
    database again."""
    bench.flush()
    record = make_record(MARK, now)  # recorded at its failure_timestamp, now
    record_one(bench.store, record)
    key, client = bench.store.keys.record(record.doc_id), bench.client
    fields: list[str] = []
    scores: dict[str, float] = {}
    counts: list[tuple[str, str, int]] = []
    values: list[tuple[str, str, str]] = []
    for name in sorted(map(str, client.scan_iter())):
        kind = str(client.type(name))
        if name == key:
            fields = [str(item) for pair in client.hgetall(name).items() for item in pair]
        elif kind == "zset":
            members = {str(m): float(s) for m, s in zset_items(client, name)}
            scores[name] = members.pop(record.doc_id)
            if members:
                raise RuntimeError(f"clone loader: {name} holds more than the document")
        elif kind == "hash":
            for agg_field, value in client.hgetall(name).items():
                if str(value).lstrip("-").isdigit():
                    counts.append((name, str(agg_field), int(value)))
                else:  # one error group's description: the same for every document
                    values.append((name, str(agg_field), str(value)))
        else:
            raise RuntimeError(f"clone loader: cannot copy the {kind} record_failure wrote")
    body = fields.index("body") + 2
    slots = [i + 1 for i, v in enumerate(fields) if MARK in v or record.doc_id in v]
    ttl = int(client.ttl(key))
    bench.flush()
    return Template(
        record.doc_id, fields, sorted({*slots, body}), body, ttl, scores, counts, values
    )


def clone_load(bench: Bench, count: int, now: float, start: int = 0, batch: int = 1000) -> None:
    """Track documents ``start`` .. ``count - 1`` as the template was tracked, one
    pipeline per batch: the record hashes through clone_records.lua, then one ZADD per
    index and one HINCRBY per aggregate field. Two threads, so that Python builds one
    batch while Redis writes the other."""
    tpl = take_template(bench, now)
    script = bench.client.register_script(CLONE_LUA.read_text())
    fields = [wire(field) for field in tpl.fields]
    head: list[bytes | int] = [tpl.ttl, len(fields), *fields, wire(",".join(map(str, tpl.slots)))]
    limit = bench.config.max_error_chars

    def write(low: int) -> None:
        ids: list[str] = []
        values: list[bytes] = []
        for i in range(low, min(count, low + batch)):
            number = ident(i)
            doc_id = document_id(doc_path(number), QUERY)
            ids.append(doc_id)
            for pos in tpl.slots:
                if pos == tpl.body:
                    values.append(make_record(number, now).body(limit))
                else:
                    value = tpl.fields[pos - 1].replace(MARK, number).replace(tpl.doc_id, doc_id)
                    values.append(wire(value))
        pipe = bench.client.pipeline(transaction=False)
        keys = [bench.store.keys.record(doc_id) for doc_id in ids]
        script(keys=keys, args=[*head, *values], client=pipe)
        for name, score in tpl.scores.items():
            pipe.zadd(name, dict.fromkeys(ids, score))
        for name, agg_field, by in tpl.counts:
            pipe.hincrby(name, agg_field, by * len(ids))
        for name, agg_field, value in tpl.values:
            pipe.hset(name, agg_field, value)
        pipe.execute()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, range(start, count, batch)))


def zset_items(client: redis.Redis, name: str) -> list[tuple[str, float]]:
    return client.zrange(name, 0, -1, withscores=True)  # type: ignore[return-value]


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key of a small database: type, encoding, value, whether it expires."""
    out: dict[str, Any] = {}
    for name in client.scan_iter():
        kind = str(client.type(name))
        if kind == "hash":
            value: Any = client.hgetall(name)
        elif kind == "zset":
            value = zset_items(client, name)
        else:
            value = client.dump(name)
        out[str(name)] = (kind, client.object("encoding", name), value, client.ttl(name) > 0)
    return out


def check_clone_loader(bench: Bench) -> None:
    """The clone loader must leave exactly what record_failure leaves."""
    now = time.time()
    bench.flush()
    for i in range(1, 4):
        record_one(bench.store, make_record(ident(i), now))
    real = snapshot(bench.client)
    clone_load(bench, 4, now, start=1)
    cloned = snapshot(bench.client)
    bench.flush()
    if real != cloned:
        differ = sorted(k for k in real.keys() | cloned.keys() if real.get(k) != cloned.get(k))
        raise RuntimeError(f"clone loader differs from record_failure at {differ[:4]}")


# --- the figures ------------------------------------------------------------------------


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


def pipeline_overhead(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Documents per second through a prefork worker, recovery tracking on vs. off."""
    docs = write_documents(bench.workdir / "docs", sizes.pipeline_docs)
    app = Celery("bench", broker=bench.server.url, backend=bench.server.url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"])

    def run(tracked: bool) -> float:
        bench.flush()
        with celery_worker(bench, app, tracked=tracked):
            return process_all(app, docs)

    best = best_of(2, on=lambda: run(True), off=lambda: run(False))
    return [
        judged(
            5,
            "pipeline: docs/s tracking on / off",
            best["on"] / best["off"],
            ">= 0.95",
            documents=len(docs),
            on_per_second=round(best["on"], 1),
            off_per_second=round(best["off"], 1),
            extra_ms_per_document=round(1e3 / best["on"] - 1e3 / best["off"], 3),
        )
    ]


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
def celery_worker(bench: Bench, app: Celery, *, tracked: bool) -> Iterator[None]:
    """A real ``celery -A tasks worker`` on the bench Redis, answering pings."""
    env = {
        **os.environ,
        "REDIS_URL": bench.server.url,
        "DOCRECOVERY_ROOTS": str(bench.workdir / "docs"),
        "DOCRECOVERY_SPOOL_DIR": str(bench.workdir / "spool"),
    }
    if not tracked:
        env["DOCRECOVERY_TRACKED_TASKS"] = "none.such"
    log = bench.workdir / f"worker-{'on' if tracked else 'off'}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "2",
        "-Q", "documents", "--without-heartbeat", "--without-mingle", "--without-gossip",
        "--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
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


def process_all(app: Celery, docs: Sequence[Path]) -> float:
    """Documents per second: send them all, then wait for every result (after a
    warm-up of four, so both worker children have imported everything)."""

    def send(paths: Sequence[Path]) -> list[AsyncResult]:
        return [
            app.send_task("tasks.process_document", args=[str(p), QUERY], queue="documents")
            for p in paths
        ]

    for result in send(docs[:4]):
        result.get(timeout=120)
    start = time.perf_counter()
    for result in send(docs):
        result.get(timeout=300)
    return len(docs) / (time.perf_counter() - start)


def recovery_throughput(bench: Bench, sizes: Sizes) -> list[Figure]:
    """Documents resubmitted per second by run_batch vs. a bare send_task loop."""
    count = sizes.recovery_docs
    manager = DocumentRecoveryManager(bench.server.url, bench.config)
    records = [make_record(ident(i), time.time()) for i in range(count)]
    timeout = bench.config.recovery_timeout
    runs_per_recovery: list[int] = []

    def recovered() -> float:
        bench.flush()
        bench.record_failures(count)
        sent, runs = 0, 0
        start = time.perf_counter()
        while sent < count:
            done = len(manager.run_batch().resubmitted)
            if not done:
                raise RuntimeError(f"recovery stalled after {sent} of {count} documents")
            sent, runs = sent + done, runs + 1
        rate = sent / (time.perf_counter() - start)
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


FIGURES: dict[int, Callable[[Bench, Sizes], list[Figure]]] = {
    1: tracking_cost,
    2: claim_scaling,
    3: status_scaling,
    4: memory_per_record,
    5: pipeline_overhead,
    6: recovery_throughput,
}


# --- the report ---------------------------------------------------------------------------


def measure(number: int, bench: Bench, sizes: Sizes) -> list[Figure]:
    name = FIGURES[number].__name__.replace("_", " ")
    note(f"figure {number}: {name}")
    try:
        return FIGURES[number](bench, sizes)
    except Exception as exc:  # a figure that cannot be measured is reported, not fatal
        return [Figure(number, name, error=f"{type(exc).__name__}: {exc}")]


def table(figures: Sequence[Figure]) -> str:
    rows = [("#", "figure", "value", "target", "result")]
    for f in figures:
        verdict = "ERROR" if f.error else {True: "PASS", False: "MISS", None: "info"}[f.passed]
        value = f.error[:60] if f.error else f"{f.value:g}"
        rows.append((f.label, f.name, value, f.target or "-", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated figure numbers, e.g. 2,3")
    options = parser.parse_args(argv)
    chosen = [int(n) for n in options.only.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in chosen if n not in FIGURES]
    if unknown:
        parser.error(f"--only: no figure {unknown}; figures are 1 to {len(FIGURES)}")
    sizes = QUICK if options.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="docrecovery-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            redis_version = bench.client.info("server")["redis_version"]
            figures = [f for n in chosen for f in measure(n, bench, sizes)]
        finally:
            bench.close()
    wall = time.perf_counter() - started
    print(table(figures))
    print(f"\nwall time {wall:.0f} s, redis {redis_version}{' (--quick)' if options.quick else ''}")
    for f in figures:
        print(f"  {f.label}. {json.dumps(f.details)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "quick": options.quick,
        "wall_seconds": round(wall, 1),
        "redis_version": redis_version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sizes": asdict(sizes),
        "figures": [asdict(f) for f in figures],
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(REPO)}")
    return 1 if any(f.error for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
