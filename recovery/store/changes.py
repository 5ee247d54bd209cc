"""State changes of the tracker: every one is a single Lua script call.

The scripts (``recovery/store/lua``) keep a document's record, its indexes and the
aggregates in step atomically, so a crash between two writes cannot leave a document
half-tracked, and each change costs one round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from recovery import policy
from recovery.calls import RunCall, counted
from recovery.config import RecoveryConfig
from recovery.errors import CorruptRecord
from recovery.records import FailedDocumentRecord
from recovery.store.connection import Connection, strs, wire

log = logging.getLogger(__name__)

#: Record hashes outlive their retention by this much; cleanup normally removes them
#: first, the TTL only catches what a stopped beat never cleaned.
TTL_MARGIN_SECONDS = 86400
#: Ids handled per script call in cleanup and sweeps, to keep each call short.
CHUNK = 500

FailureState = Literal["failed", "dead", "skipped"]
Verdict = Literal["run", "stale", "lost"]
ClaimMode = Literal["due", "preview", "manual"]
#: A lost run is reported by the redelivery that found its own entry ("any"), or by a
#: sweep with the deadline bound it read entries with.
LostRun = float | Literal["any"]


@dataclass(frozen=True)
class FailureOutcome:
    state: FailureState
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
    outcome: Literal["sent", "release", "wait"]
    #: The new task id when sent, else the reason.
    detail: str = ""
    next_at: float = 0.0


class Store:
    """Records, indexes and aggregates of failed documents, one Lua call per change."""

    def __init__(self, connection: Connection, config: RecoveryConfig) -> None:
        self.connection = connection
        self.config = config
        self.scripts = connection.scripts
        self.keys = connection.keys

    def record_failure(
        self,
        record: FailedDocumentRecord,
        *,
        counted: bool = True,
        recovery_attempt: bool = False,
        now: float | None = None,
        lost_run: LostRun | None = None,
    ) -> FailureOutcome:
        """Track a failure; a document already tracked gets its retry counted unless
        ``counted`` is false (a manual retry). Permanent errors go straight to dead.
        ``lost_run`` reports an in-flight run that never finished (see
        :meth:`record_lost_run`): it is skipped (state ``skipped``) when the entry is
        gone or, for a sweep, was renewed since, so a lost run is reported once
        however many see it."""
        now = record.failure_timestamp if now is None else now
        config = self.config
        fields = record.to_redis(message_limit=config.max_error_chars)
        ttl = int(max(config.retention_seconds, config.dead_retention_days * 86400))
        with self.connection.errors("record failure"):
            state, retries, next_at, replaced = self.scripts.record_failure(
                keys={"record": self.keys.record(record.doc_id)},
                item_args=[wire(item) for pair in fields.items() for item in pair],
                now=now,
                doc_id=record.doc_id,
                permanent=int(policy.is_permanent(record.error_category)),
                counted=int(counted),
                recovery=int(recovery_attempt),
                max_retries=config.max_retry_count,
                ttl=ttl + TTL_MARGIN_SECONDS,
                delays=_json_list(policy.backoff_delays(config, record.error_category)),
                task_id=record.task_id,
                lost_run="" if lost_run is None else lost_run,
                window=config.breaker_window,
            )
        if replaced:
            log.warning("replaced an undecodable value at %s", self.keys.record(record.doc_id))
        return FailureOutcome(
            state, int(retries), float(next_at) if next_at else None, bool(replaced)
        )

    def put(self, key: str, value: str, ttl: int) -> None:
        """Keep an application value (such as a pipeline's result) with a TTL; ``key``
        comes from ``keys.app(...)``."""
        with self.connection.errors("store a value"):
            self.connection.client.set(key, value, ex=ttl)

    def record_lost_run(self, call: RunCall, now: float, bound: LostRun) -> FailureOutcome:
        """Record a run that checked in and never reported as a ``worker_lost``
        failure: a lost attempt counts (unless manual), so a crash loop ends dead."""
        return self.record_failure(
            FailedDocumentRecord.lost(call, now),
            lost_run=bound,
            counted=counted(call.marker),
            recovery_attempt=call.marker is not None,
            now=now,
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
        with self.connection.errors("resolve"):
            _tracked, took = self.scripts.resolve(
                keys={"record": self.keys.record(doc_id)},
                now=time.time() if now is None else now,
                doc_id=doc_id,
                worker=wire(worker or ""),
                query=wire(query or ""),
                recovery=int(recovery_attempt),
                task_id=task_id,
                window=self.config.breaker_window,
            )
        return float(took) if took else None

    def begin(self, doc_id: str, call: RunCall, deadline: float, now: float) -> tuple[Verdict, str]:
        """A tracked run starts: returns (verdict, record state); see ``lua/begin.lua``."""
        with self.connection.errors("begin"):
            verdict, state = self.scripts.begin(
                keys={"record": self.keys.record(doc_id)},
                now=now,
                task_id=call.task_id,
                deadline=deadline,
                call=wire(call.to_json()),
                doc_id=doc_id,
            )
        return verdict, str(state)

    def end_run(self, task_id: str) -> bool:
        """Take a run out of flight when it ends with neither success nor failure."""
        with self.connection.errors("end run"):
            return bool(self.scripts.end_run(task_id=task_id))

    def lost_runs(self, now: float | None = None, limit: int = CHUNK) -> list[RunCall]:
        """In-flight runs past their deadline. Entries that cannot be decoded are
        reported and dropped, so one bad entry never stops a sweep."""
        now = time.time() if now is None else now
        k = self.keys
        client = self.connection.client
        with self.connection.errors("read in-flight runs"):
            ids = strs(client.zrangebyscore(k.inflight, "-inf", now, 0, limit))
            raws = client.hmget(k.inflight_tasks, ids) if ids else []
            runs = []
            for task_id, raw in zip(ids, raws, strict=True):
                call = RunCall.from_json(task_id, str(raw) if raw is not None else None)
                if call is None:
                    self.end_run(task_id)
                else:
                    runs.append(call)
        return runs

    def register_environment(self, worker: str, fingerprint: str) -> tuple[int, bool]:
        """Record a worker's environment; returns (generation, whether it is new)."""
        with self.connection.errors("register environment"):
            generation, new = self.scripts.register_env(worker=worker, fingerprint=fingerprint)
        return int(generation), bool(new)

    def promote_imports(self, now: float | None = None) -> list[str]:
        """Import failures recorded under an older environment become due now."""
        with self.connection.errors("promote import failures"):
            return strs(
                self.scripts.promote_imports(now=time.time() if now is None else now, limit=CHUNK)
            )

    def claim_due(
        self,
        limit: int,
        now: float | None = None,
        lease_seconds: float = 0,
        *,
        mode: Literal["due", "preview"] = "due",
    ) -> ClaimResult:
        """Claim up to ``limit`` due documents with a lease (``mode="preview"``: decide
        the same, change nothing). The candidates are read with one ZRANGEBYSCORE
        (O(log N + limit)) and taken atomically by the script, which re-checks each,
        so concurrent runs never claim the same document."""
        now = time.time() if now is None else now
        with self.connection.errors("claim"):
            ids = strs(
                self.connection.client.zrangebyscore(self.keys.due, "-inf", now, start=0, num=limit)
            )
        return self._claim(ids, mode, now, lease_seconds)

    def claim_ids(self, doc_ids: Sequence[str], now: float | None = None) -> ClaimResult:
        """Claim these documents for an operator's retry, dead ones included; any that
        is already claimed or being recovered is left alone (never sent twice)."""
        return self._claim(doc_ids, "manual", time.time() if now is None else now, 0)

    def _claim(
        self, ids: Sequence[str], mode: ClaimMode, now: float, lease_seconds: float
    ) -> ClaimResult:
        if not ids:
            return ClaimResult([])
        config = self.config
        lease = lease_seconds or config.recovery_timeout + config.lease_grace_seconds
        with self.connection.errors("claim"):
            claimed, corrupt, exhausted = self.scripts.claim(
                items=[self.keys.record(doc_id) for doc_id in ids],
                item_args=ids,
                now=now,
                lease=now + lease,
                max_retries=config.max_retry_count,
                cutoff=now - config.retention_seconds,
                mode=mode,
            )
        records = []
        undecodable = []
        for item in claimed:
            doc_id, flat = item[0], item[1:]
            fields = {"msg": "", **dict(zip(flat[::2], flat[1::2], strict=True))}
            try:
                records.append(FailedDocumentRecord.from_redis(self.keys.record(doc_id), fields))
            except CorruptRecord as exc:
                log.warning("claimed record cannot be decoded: %s", exc)
                undecodable.append(doc_id)
        for doc_id in corrupt:
            log.warning("corrupt record %s skipped by claim", self.keys.record(doc_id))
        return ClaimResult(records, list(corrupt), list(exhausted), undecodable)

    def settle(self, outcomes: Sequence[Settlement], now: float | None = None) -> int:
        """Mark resubmitted documents, release or defer the others, stamp the run."""
        now = time.time() if now is None else now
        config = self.config
        with self.connection.errors("settle"):
            sent = self.scripts.settle(
                items=[self.keys.record(s.doc_id) for s in outcomes],
                item_args=[
                    value
                    for s in outcomes
                    for value in (s.doc_id, s.outcome, wire(s.detail), s.next_at)
                ],
                now=now,
                lease=now + config.recovery_timeout + config.lease_grace_seconds,
            )
        return int(sent)

    def release_expired(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """Return documents whose lease ran out to due (a crashed run, or a resubmitted
        task that never reported). Returns (released ids, ids that went dead)."""
        now = time.time() if now is None else now
        released: list[str] = []
        dead: list[str] = []
        client = self.connection.client
        with self.connection.errors("release expired leases"):
            while ids := strs(client.zrangebyscore(self.keys.claimed, "-inf", now, 0, CHUNK)):
                r, d = self._release(ids, now, force=False)
                released += r
                dead += d
                if len(ids) < CHUNK:
                    break
        return released, dead

    def release(self, doc_ids: Sequence[str], now: float | None = None) -> list[str]:
        """Give claimed documents back to due at once."""
        now = time.time() if now is None else now
        with self.connection.errors("release"):
            return self._release(doc_ids, now, force=True)[0] if doc_ids else []

    def _release(self, ids: Sequence[str], now: float, force: bool) -> tuple[list[str], list[str]]:
        released, dead = self.scripts.release(
            items=[self.keys.record(doc_id) for doc_id in ids],
            item_args=ids,
            now=now,
            force=int(force),
            max_retries=self.config.max_retry_count,
        )
        return list(released), list(dead)


def _json_list(values: Iterable[float]) -> str:
    return "[" + ",".join(repr(v) for v in values) + "]"
