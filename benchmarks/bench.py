"""The bench's private Redis, its records (all of one shape: a 100-character path, a
query, a 2 KB traceback) and the clone loader that fills a large store fast."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks import peers
from benchmarks.measure import note, seconds
from recovery.api import FailedDocumentsTracker
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_server import RedisServer
from recovery.store import Store
from recovery.store.connection import wire

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLONE_LUA = HERE / "clone_records.lua"
PATH_CHARS = 100
TRACEBACK_CHARS = 2048
QUERY = "quarterly revenue by region"
WORKER = "celery@bench-worker-1"
#: Stands for a document's number in the template record of the clone loader.
MARK = "@" * 12
#: RQ's database on the bench Redis: its failed jobs stay apart from our store there.
RQ_DB = 1


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


def peer_url(bench: Bench, db: int) -> str:
    return f"redis://127.0.0.1:{bench.server.port}/{db}"
