"""Failed-document tracking in Redis.

:class:`SyncTracker` is the one implementation: every state change is one Lua script
call (see ``recovery/lua``), every read that feeds status is O(1) in the number of
records (ZCARD, ZCOUNT, HGETALL of small aggregate hashes). The Celery signal
handlers call it directly. :class:`FailedDocumentsTracker` is the seed's async face:
each coroutine runs the same synchronous method in a thread, so there is no second
copy of any logic.

Usage::

    tracker = FailedDocumentsTracker(redis_url="redis://localhost:6379/0")
    for doc in await tracker.get_failed_documents():
        print(doc.document_path, doc.error_message, doc.retry_count)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis

from recovery import policy
from recovery.config import RecoveryConfig
from recovery.errors import CorruptRecord, TrackerUnavailable
from recovery.keys import Keys
from recovery.records import FailedDocumentRecord, bound_message
from recovery.scripts import Scripts

log = logging.getLogger(__name__)

#: Age buckets of the failure analysis: (label, lower bound in hours, upper bound).
AGE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<1h", 0, 1),
    ("1-6h", 1, 6),
    ("6-24h", 6, 24),
    ("1-3d", 24, 72),
    ("3-7d", 72, 168),
    (">7d", 168, float("inf")),
)
#: Record hashes outlive their retention by this much; cleanup normally removes them
#: first, the TTL only catches what a stopped beat never cleaned.
TTL_MARGIN_SECONDS = 86400
#: Ids handled per script call in cleanup and sweeps, to keep each call short.
CHUNK = 500
#: Names kept in each per-worker and per-query run counter (the busiest ones).
RATE_ENTRIES = 1000


def redact(url: str) -> str:
    """The URL without its password (in the user part or a ``password=`` query
    parameter), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def default_redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def connect(url: str) -> redis.Redis:
    """A client that fails fast, so a handler spools an event instead of hanging."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
    )


@dataclass(frozen=True)
class FailureOutcome:
    state: str
    retry_count: int
    next_retry_at: float | None
    replaced_corrupt: bool


@dataclass(frozen=True)
class ClaimResult:
    """Claimed records; ids skipped as corrupt (not a hash, or missing its failure
    time), moved to dead as exhausted, or claimed but undecodable (the caller defers
    those, so they stay tracked and visible)."""

    records: list[FailedDocumentRecord]
    corrupt: list[str] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settlement:
    """What a recovery run did with one claimed document."""

    doc_id: str
    outcome: str  # "sent", "release" or "wait"
    detail: str = ""  # the new task id when sent, else the reason
    next_at: float = 0.0


class SyncTracker:
    """Records, indexes and aggregates of failed documents, one Lua call per change."""

    def __init__(self, client: redis.Redis, config: RecoveryConfig, url: str = "") -> None:
        self.client = client
        self.config = config
        self.keys = Keys(config.key_prefix)
        self.scripts = Scripts.register(client)
        self.url = url
        self._orphans = 0
        k = self.keys
        # KEYS of record_failure.lua and resolve.lua after the record's own key; built
        # once, as they are the same for every document (hot path: every task run).
        shared = [
            k.due,
            k.failed,
            k.claimed,
            k.dead,
            k.stats,
            k.by_category,
            k.by_worker,
            k.by_query,
        ]
        self._failure_keys = [
            *shared,
            k.worker_failures,
            k.worker_processed,
            k.query_failures,
            k.query_processed,
            k.waiting,
            k.imports,
            k.inflight,
            k.inflight_tasks,
            k.generations,
            k.breakers,
        ]
        self._resolve_keys = [
            *shared,
            k.worker_processed,
            k.query_processed,
            k.waiting,
            k.imports,
            k.inflight,
            k.inflight_tasks,
            k.breakers,
        ]

    @contextmanager
    def translate_errors(self, operation: str) -> Iterator[None]:
        """Redis errors inside become TrackerUnavailable, naming the operation and
        the server without its password."""
        try:
            yield
        except redis.RedisError as exc:
            where = redact(self.url) if self.url else "Redis"
            raise TrackerUnavailable(f"{operation} failed on {where}: {exc}") from exc

    # --- state changes: one script call each -----------------------------------

    def record_failure(
        self,
        record: FailedDocumentRecord,
        *,
        counted: bool = True,
        recovery_attempt: bool = False,
        now: float | None = None,
        lost_run: float | str | None = None,
    ) -> FailureOutcome:
        """Track a failure; a document already tracked gets its retry counted unless
        ``counted`` is false (a manual retry). Permanent errors go straight to dead.
        ``lost_run`` reports an in-flight run that never finished: ``"any"`` from the
        redelivery that found its own entry, or the bound a sweep read entries with.
        It is skipped (state ``skipped``) when the entry is gone or, for a sweep, was
        renewed since: a lost run is reported once however many see it."""
        now = record.failure_timestamp if now is None else now
        record.error_message = bound_message(record.error_message, self.config.max_error_chars)
        k = self.keys
        delays = policy.backoff_delays(self.config, record.error_category)
        fields = [wire(item) for pair in record.to_redis().items() for item in pair]
        ttl = int(self.config.retention_seconds + TTL_MARGIN_SECONDS)
        ttl = max(ttl, int(self.config.dead_retention_days * 86400 + TTL_MARGIN_SECONDS))
        with self.translate_errors("record failure"):
            state, retries, next_at, replaced = self.scripts.record_failure(
                keys=[k.record(record.doc_id), *self._failure_keys],
                args=[
                    now,
                    record.doc_id,
                    int(policy.is_permanent(record.error_category)),
                    int(counted),
                    int(recovery_attempt),
                    self.config.max_retry_count,
                    ttl,
                    _json_list(delays),
                    record.task_id,
                    "" if lost_run is None else lost_run,
                    self.config.breaker_window,
                    *fields,
                ],
            )
        if replaced:
            log.warning("replaced an undecodable value at %s", k.record(record.doc_id))
        return FailureOutcome(
            state, int(retries), float(next_at) if next_at else None, bool(replaced)
        )

    def resolve(
        self,
        doc_id: str,
        *,
        worker: str | None = None,
        query: str | None = None,
        recovery_attempt: bool = False,
        task_id: str = "",
        now: float | None = None,
    ) -> float | None:
        """Stop tracking a document that was processed. Returns how long its recovery
        took when this success was a recovery attempt, else None."""
        now = time.time() if now is None else now
        k = self.keys
        with self.translate_errors("resolve"):
            _tracked, took = self.scripts.resolve(
                keys=[k.record(doc_id), *self._resolve_keys],
                args=[
                    now,
                    doc_id,
                    wire(worker or ""),
                    wire(query or ""),
                    int(recovery_attempt),
                    task_id,
                    self.config.breaker_window,
                ],
            )
        return float(took) if took else None

    def begin(
        self, doc_id: str, task_id: str, deadline: float, call: dict[str, Any], now: float
    ) -> tuple[str, str]:
        """A tracked run starts: returns ('run' | 'stale' | 'lost', record state);
        see ``lua/begin.lua``."""
        k = self.keys
        with self.translate_errors("begin"):
            verdict, state = self.scripts.begin(
                keys=[
                    k.superseded,
                    k.inflight,
                    k.inflight_tasks,
                    k.record(doc_id),
                    k.due,
                    k.claimed,
                    k.waiting,
                ],
                args=[now, task_id, deadline, json.dumps(call, separators=(",", ":")), doc_id],
            )
        return str(verdict), str(state)

    def end_run(self, task_id: str) -> bool:
        """Take a run out of flight when it ends with neither success nor failure."""
        k = self.keys
        with self.translate_errors("end run"):
            return bool(self.scripts.end_run(keys=[k.inflight, k.inflight_tasks], args=[task_id]))

    def lost_runs(self, now: float | None = None, limit: int = CHUNK) -> list[dict[str, Any]]:
        """In-flight runs past their deadline: each is the JSON call stored at begin,
        with its ``task_id``. Entries that cannot be decoded are reported and dropped."""
        now = time.time() if now is None else now
        k = self.keys
        with self.translate_errors("read in-flight runs"):
            ids = strs(self.client.zrangebyscore(k.inflight, "-inf", now, 0, limit))
            calls = self.client.hmget(k.inflight_tasks, ids) if ids else []
            runs = []
            for task_id, raw in zip(ids, calls, strict=True):
                try:
                    call = json.loads(raw) if raw else None
                except ValueError:
                    call = None
                if not isinstance(call, dict):
                    log.warning("in-flight entry of task %s is unreadable; dropped", task_id)
                    self.client.zrem(k.inflight, task_id)
                    self.client.hdel(k.inflight_tasks, task_id)
                    continue
                runs.append({**call, "task_id": task_id})
        return runs

    def register_environment(self, worker: str, fingerprint: str) -> tuple[int, bool]:
        """Record a worker's environment; returns (generation, whether it is new)."""
        with self.translate_errors("register environment"):
            generation, new = self.scripts.register_env(
                keys=[self.keys.fingerprints, self.keys.generations], args=[worker, fingerprint]
            )
        return int(generation), bool(new)

    def promote_imports(self, now: float | None = None) -> list[str]:
        """Import failures recorded under an older environment become due now."""
        now = time.time() if now is None else now
        k = self.keys
        with self.translate_errors("promote import failures"):
            return strs(
                self.scripts.promote_imports(
                    keys=[k.imports, k.due, k.generations], args=[now, CHUNK]
                )
            )

    def claim_due(
        self, limit: int, now: float | None = None, lease_seconds: float = 0
    ) -> ClaimResult:
        """Claim up to ``limit`` due documents with a lease. The candidates are read with
        one ZRANGEBYSCORE (O(log N + limit)) and taken atomically by the script, which
        re-checks each, so concurrent runs never claim the same document."""
        now = time.time() if now is None else now
        with self.translate_errors("claim"):
            ids = strs(self.client.zrangebyscore(self.keys.due, "-inf", now, start=0, num=limit))
        return self._claim(ids, "due", now, lease_seconds)

    def claim_ids(self, doc_ids: Sequence[str], now: float | None = None) -> ClaimResult:
        """Claim these documents for an operator's retry, dead ones included; any that
        is already claimed or being recovered is left alone (never sent twice)."""
        return self._claim(doc_ids, "manual", time.time() if now is None else now, 0)

    def _claim(
        self, ids: Sequence[str], mode: str, now: float, lease_seconds: float
    ) -> ClaimResult:
        if not ids:
            return ClaimResult([])
        lease = lease_seconds or self.config.recovery_timeout + self.config.lease_grace_seconds
        k = self.keys
        with self.translate_errors("claim"):
            claimed, corrupt, exhausted = self.scripts.claim(
                keys=[
                    k.due,
                    k.claimed,
                    k.dead,
                    k.stats,
                    k.waiting,
                    k.failed,
                    *map(k.record, ids),
                ],
                args=[
                    now,
                    now + lease,
                    self.config.max_retry_count,
                    now - self.config.retention_seconds,
                    mode,
                    *ids,
                ],
            )
        records = []
        undecodable = []
        for item in claimed:
            doc_id, flat = item[0], item[1:]
            fields = {"msg": "", **dict(zip(flat[::2], flat[1::2], strict=True))}
            try:
                records.append(self._decode(doc_id, fields))
            except CorruptRecord as exc:
                log.warning("claimed record cannot be decoded: %s", exc)
                undecodable.append(doc_id)
        for doc_id in corrupt:
            log.warning("corrupt record %s skipped by claim", k.record(doc_id))
        return ClaimResult(records, list(corrupt), list(exhausted), undecodable)

    def settle(self, outcomes: Sequence[Settlement], now: float | None = None) -> int:
        """Mark resubmitted documents, release or defer the others, stamp the run."""
        now = time.time() if now is None else now
        k = self.keys
        lease = now + self.config.recovery_timeout + self.config.lease_grace_seconds
        args: list[Any] = [now, lease]
        for s in outcomes:
            args += [s.doc_id, s.outcome, wire(s.detail), s.next_at]
        with self.translate_errors("settle"):
            sent = self.scripts.settle(
                keys=[
                    k.due,
                    k.claimed,
                    k.stats,
                    k.waiting,
                    k.superseded,
                    *(k.record(s.doc_id) for s in outcomes),
                ],
                args=args,
            )
        return int(sent)

    def release_expired(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """Return documents whose lease ran out to due (a crashed run, or a resubmitted
        task that never reported). Returns (released ids, ids that went dead)."""
        now = time.time() if now is None else now
        released: list[str] = []
        dead: list[str] = []
        with self.translate_errors("release expired leases"):
            while ids := strs(self.client.zrangebyscore(self.keys.claimed, "-inf", now, 0, CHUNK)):
                r, d = self._release(ids, now, force=False)
                released += r
                dead += d
                if len(ids) < CHUNK:
                    break
        return released, dead

    def release(self, doc_ids: Sequence[str], now: float | None = None) -> list[str]:
        """Give claimed documents back to due at once."""
        now = time.time() if now is None else now
        with self.translate_errors("release"):
            return self._release(doc_ids, now, force=True)[0] if doc_ids else []

    def _release(self, ids: Sequence[str], now: float, force: bool) -> tuple[list[str], list[str]]:
        k = self.keys
        released, dead = self.scripts.release(
            keys=[k.due, k.claimed, k.dead, k.stats, k.failed, *map(k.record, ids)],
            args=[now, int(force), self.config.max_retry_count, *ids],
        )
        return list(released), list(dead)

    def cleanup(self, now: float | None = None) -> dict[str, int]:
        """Apply retention: records first failed before the retention window, dead
        documents past ``dead_retention_days``, and dead beyond ``dead_max`` (oldest
        first, with a warning: never silently)."""
        now = time.time() if now is None else now
        k = self.keys
        removed = {"expired": 0, "dead_expired": 0, "dead_trimmed": 0}
        with self.translate_errors("cleanup"):
            cutoff = now - self.config.retention_seconds
            removed["expired"] = self._remove_range(k.failed, "failed", cutoff, "expired")
            dead_cutoff = now - self.config.dead_retention_days * 86400
            removed["dead_expired"] = self._remove_range(
                k.dead, "dead", dead_cutoff, "dead_expired"
            )
            self.client.zremrangebyscore(k.superseded, "-inf", cutoff)
            excess = int(self.client.zcard(k.dead)) - self.config.dead_max
            while excess > 0:
                ids = strs(self.client.zrange(k.dead, 0, min(excess, CHUNK) - 1))
                if not ids:
                    break
                n = self._remove(ids, "any", 0, "dead_trimmed")
                removed["dead_trimmed"] += n
                excess -= len(ids)
            self._repair_aggregates()
            self._trim_rate_counters()
        if removed["dead_trimmed"]:
            log.warning(
                "dead set over dead_max=%d: removed the %d oldest dead documents",
                self.config.dead_max,
                removed["dead_trimmed"],
            )
        return removed

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Stop tracking these documents, whatever their state."""
        with self.translate_errors("delete"):
            removed = sum(
                self._remove(doc_ids[i : i + CHUNK], "any", 0, "deleted")
                for i in range(0, len(doc_ids), CHUNK)
            )
            self._repair_aggregates()
        return removed

    def _remove_range(self, index: str, which: str, cutoff: float, counter: str) -> int:
        total = 0
        while ids := strs(self.client.zrangebyscore(index, "-inf", cutoff, 0, CHUNK)):
            total += self._remove(ids, which, cutoff, counter)
            if len(ids) < CHUNK:
                break
        return total

    def _remove(self, ids: Sequence[str], which: str, cutoff: float, counter: str) -> int:
        k = self.keys
        removed, orphans = self.scripts.remove(
            keys=[
                k.due,
                k.failed,
                k.claimed,
                k.dead,
                k.by_category,
                k.by_worker,
                k.by_query,
                k.stats,
                k.waiting,
                k.imports,
                *map(k.record, ids),
            ],
            args=[which, cutoff, counter, *ids],
        )
        self._orphans += int(orphans)
        return int(removed)

    def _repair_aggregates(self) -> None:
        """Rebuild the counts once after removals that met records gone by TTL."""
        if self._orphans:
            log.warning(
                "%d tracked document(s) had lost their record (TTL fired before cleanup, "
                "was beat stopped?); rebuilding the aggregate counts",
                self._orphans,
            )
            self._orphans = 0
            self.rebuild_aggregates()

    def _trim_rate_counters(self) -> None:
        """Keep the per-worker and per-query run counters to the RATE_ENTRIES busiest
        names: free-text queries would otherwise add a field each, forever."""
        k = self.keys
        for processed, failures in (
            (k.worker_processed, k.worker_failures),
            (k.query_processed, k.query_failures),
        ):
            if int(self.client.hlen(processed)) <= RATE_ENTRIES:
                continue
            counts: dict[str, str] = self.client.hgetall(processed)  # type: ignore[assignment]
            ranked = sorted(counts, key=lambda name: -int(counts[name]))
            for chunk in chunks(ranked[RATE_ENTRIES:], CHUNK):
                pipe = self.client.pipeline(transaction=True)
                pipe.hdel(processed, *chunk)
                pipe.hdel(failures, *chunk)
                pipe.execute()

    def rebuild_aggregates(self) -> None:
        """Recount documents by category, worker and query from the records.

        A repair, O(N): needed only when records vanished without the scripts (their
        TTL safety net fired), which leaves counts behind.
        """
        k = self.keys
        counts: dict[str, dict[str, int]] = {k.by_category: {}, k.by_worker: {}, k.by_query: {}}
        with self.translate_errors("rebuild aggregates"):
            ids = strs(self.client.zrange(k.failed, 0, -1)) + strs(
                self.client.zrange(k.dead, 0, -1)
            )
            for chunk in chunks(ids, CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for doc_id in chunk:
                    pipe.hmget(k.record(doc_id), "cat", "worker", "query")
                for fields in pipe.execute(raise_on_error=False):
                    if not isinstance(fields, list):
                        continue
                    for key, value in zip(counts, fields, strict=True):
                        if value:
                            counts[key][value] = counts[key].get(value, 0) + 1
            pipe = self.client.pipeline(transaction=True)
            for key, values in counts.items():
                pipe.delete(key)
                if values:
                    pipe.hset(key, mapping=dict(values.items()))
            pipe.execute()

    # --- reads -------------------------------------------------------------------

    def _decode(self, doc_id: str, fields: dict[str, str]) -> FailedDocumentRecord:
        return FailedDocumentRecord.from_redis(self.keys.record(doc_id), fields)

    def get_record(self, doc_id: str) -> FailedDocumentRecord | None:
        """One record, or None; raises CorruptRecord if it cannot be decoded."""
        key = self.keys.record(doc_id)
        with self.translate_errors("read record"):
            kind = str(self.client.type(key))
            if kind not in ("hash", "none"):
                raise CorruptRecord(key, f"holds a {kind}, not a hash")
            fields: dict[str, str] = self.client.hgetall(key)  # type: ignore[assignment]
        return self._decode(doc_id, fields) if fields else None

    def get_failed_documents(
        self, limit: int | None = None, offset: int = 0, index: str | None = None
    ) -> list[FailedDocumentRecord]:
        """Tracked documents: live ones by first failure, then dead ones by time of
        death (or one index, such as ``keys.dead``). Corrupt records are logged and
        skipped."""
        if limit is not None and limit <= 0:
            return []
        with self.translate_errors("list failed documents"):
            ids: list[str] = []
            for key in [index] if index else [self.keys.failed, self.keys.dead]:
                ids += strs(self.client.zrange(key, 0, -1 if limit is None else offset + limit - 1))
        ids = ids[offset:] if limit is None else ids[offset : offset + limit]
        return self.get_records(ids)

    def get_records(self, doc_ids: Sequence[str]) -> list[FailedDocumentRecord]:
        """These documents' records, read in pipelined chunks; missing ones are left
        out, corrupt ones logged and skipped."""
        records: list[FailedDocumentRecord] = []
        with self.translate_errors("read records"):
            for chunk in chunks(doc_ids, CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for doc_id in chunk:
                    pipe.hgetall(self.keys.record(doc_id))
                replies = pipe.execute(raise_on_error=False)
                for doc_id, fields in zip(chunk, replies, strict=True):
                    record = self._decode_or_report(doc_id, fields)
                    if record is not None:
                        records.append(record)
        return records

    def _decode_or_report(self, doc_id: str, fields: Any) -> FailedDocumentRecord | None:
        try:
            if isinstance(fields, Exception):
                raise CorruptRecord(self.keys.record(doc_id), str(fields))
            if not fields:
                return None
            return self._decode(doc_id, fields)
        except CorruptRecord as exc:
            log.warning("skipping: %s", exc)
            return None

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Counts and recovery metrics, O(1) in the number of records."""
        now = time.time() if now is None else now
        k = self.keys
        with self.translate_errors("status"):
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(k.failed)
            pipe.zcount(k.due, "-inf", now)
            pipe.zcard(k.due)
            pipe.zcard(k.claimed)
            pipe.zcard(k.dead)
            pipe.zcard(k.waiting)
            pipe.hgetall(k.stats)
            live, eligible, scheduled, claimed, dead, waiting, stats = pipe.execute()
        total = live + dead
        return {
            "total_failed_documents": total,
            "eligible_for_recovery": eligible,
            "scheduled": scheduled,
            "in_recovery": claimed,
            "waiting": waiting,
            "dead": dead,
            "recovery_metrics": recovery_metrics(stats, total, eligible),
        }

    def analysis(self, now: float | None = None) -> dict[str, Any]:
        """Failures by age, category, worker and query, from ZCOUNTs and aggregates."""
        now = time.time() if now is None else now
        k = self.keys
        with self.translate_errors("analysis"):
            pipe = self.client.pipeline(transaction=False)
            for _label, low, high in AGE_BUCKETS:
                upper = "+inf" if low == 0 else f"({now - low * 3600}"
                lower = "-inf" if high == float("inf") else now - high * 3600
                pipe.zcount(k.failed, lower, upper)
            for key in (
                k.by_category,
                k.by_worker,
                k.worker_failures,
                k.worker_processed,
                k.by_query,
                k.query_failures,
                k.query_processed,
            ):
                pipe.hgetall(key)
            replies = pipe.execute()
        ages = dict(zip((b[0] for b in AGE_BUCKETS), replies[: len(AGE_BUCKETS)], strict=True))
        cats, workers, w_fail, w_done, queries, q_fail, q_done = replies[len(AGE_BUCKETS) :]
        return {
            "age_distribution": ages,
            "error_categories": _ints(cats),
            "workers": _rates(workers, w_fail, w_done),
            "queries": _rates(queries, q_fail, q_done),
        }


def recovery_metrics(stats: dict[str, str], total: int, eligible: int) -> dict[str, Any]:
    """The seed's metric names, from the stats hash the scripts keep up to date."""
    succeeded = int(stats.get("successful_recoveries", 0))
    failed = int(stats.get("failed_recoveries", 0))
    timed = int(stats.get("recovery_time_count", 0))
    last = stats.get("last_recovery_run")
    return {
        "total_failed_documents": total,
        "documents_eligible_for_retry": eligible,
        "recovery_attempts": int(stats.get("recovery_attempts", 0)),
        "successful_recoveries": succeeded,
        "failed_recoveries": failed,
        "recovery_success_rate": succeeded / (succeeded + failed) if succeeded + failed else 0.0,
        "average_recovery_time": (
            float(stats.get("recovery_time_total", 0)) / timed if timed else 0.0
        ),
        "last_recovery_run": float(last) if last else None,
        "recovery_runs": int(stats.get("recovery_runs", 0)),
        "failures_recorded": int(stats.get("failures_recorded", 0)),
        "resolved": int(stats.get("resolved", 0)),
        "dead_total": int(stats.get("dead_total", 0)),
        "expired": int(stats.get("expired", 0)),
        "dead_expired": int(stats.get("dead_expired", 0)),
        "dead_trimmed": int(stats.get("dead_trimmed", 0)),
        "deleted": int(stats.get("deleted", 0)),
    }


def _ints(raw: dict[str, str]) -> dict[str, int]:
    return dict(sorted(((k, int(v)) for k, v in raw.items()), key=lambda kv: -kv[1]))


def _rates(
    tracked: dict[str, str], failures: dict[str, str], processed: dict[str, str]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(tracked) | set(failures)):
        fail, done = int(failures.get(name, 0)), int(processed.get(name, 0))
        out[name] = {
            "tracked": int(tracked.get(name, 0)),
            "failures": fail,
            "processed": done,
            "failure_rate": fail / done if done else 0.0,
        }
    return out


def _json_list(values: Iterable[float]) -> str:
    return "[" + ",".join(repr(v) for v in values) + "]"


def wire(value: str) -> bytes:
    """A string as the bytes Redis stores. Paths from the file system may hold
    undecodable bytes (surrogate escapes), which hiredis's packer refuses as str."""
    return value.encode("utf-8", "surrogateescape")


def strs(reply: Any) -> list[str]:
    """redis-py types replies loosely; with decode_responses they are str."""
    return [str(item) for item in reply]


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


P = ParamSpec("P")
R = TypeVar("R")


def _threaded(
    method: Callable[Concatenate[SyncTracker, P], R],
) -> Callable[Concatenate[FailedDocumentsTracker, P], Awaitable[R]]:
    """The async twin of a SyncTracker method: the same code, run in a thread."""

    async def run(self: FailedDocumentsTracker, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


class FailedDocumentsTracker:
    """The seed's tracker: ``await tracker.get_failed_documents()`` and friends.

    ``tracker.sync`` is the synchronous face the Celery handlers use.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | dict[str, Any] | None = None,
        *,
        client: redis.Redis | None = None,
    ) -> None:
        self.redis_url = redis_url or default_redis_url()
        self.config = as_config(config)
        self.client = client or connect(self.redis_url)
        self.sync = SyncTracker(self.client, self.config, self.redis_url)

    @property
    def keys(self) -> Keys:
        return self.sync.keys

    def close(self) -> None:
        self.client.close()

    track_failure = _threaded(SyncTracker.record_failure)
    mark_success = _threaded(SyncTracker.resolve)
    get_record = _threaded(SyncTracker.get_record)
    get_failed_documents = _threaded(SyncTracker.get_failed_documents)
    claim_due = _threaded(SyncTracker.claim_due)
    cleanup_old_records = _threaded(SyncTracker.cleanup)
    delete = _threaded(SyncTracker.delete)
    get_status = _threaded(SyncTracker.status)
    get_analysis = _threaded(SyncTracker.analysis)

    async def get_metrics(self) -> dict[str, Any]:
        """The seed's recovery metrics."""
        status = await self.get_status()
        metrics: dict[str, Any] = status["recovery_metrics"]
        return metrics


def as_config(config: RecoveryConfig | dict[str, Any] | None) -> RecoveryConfig:
    """Accept the seed's plain dicts as well as a RecoveryConfig."""
    if isinstance(config, RecoveryConfig):
        return config
    return RecoveryConfig.from_env(config or {})
