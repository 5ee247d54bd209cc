"""Batched recovery of failed documents.

A recovery run (``recovery.run`` on beat, ``python main.py --recover``, or
``await run_document_recovery()``) does, in order:

1. **cleanup** — records past ``failed_docs_retention_days`` and dead documents past
   their own retention or over ``dead_max`` are removed (one script call per chunk);
2. **expired leases** — documents claimed by a run that crashed, or resubmitted as a
   task that never reported (its worker died), return to due; a lost attempt counts
   as a retry, so a document that kills its worker every time ends dead;
3. **claim** — up to ``recovery_batch_size`` due documents are claimed atomically
   with a lease: two runs at once never resubmit one document twice;
4. **resubmit** — each is sent as a NEW task by name (``app.send_task``), with its
   original args, a ``docrecovery`` header naming the document and attempt number,
   the queue and time limit its error category calls for;
5. **settle** — one script call marks what was sent, gives back what could not be
   sent, and stamps ``last_recovery_run``.

The new task's success (``task_success``) removes the document and counts a
successful recovery with its duration; its failure is recorded as a counted retry.
Status and analysis read counters and ZCOUNTs only, so they cost the same at ten
records or ten million.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from recovery import categories, policy
from recovery.config import RecoveryConfig
from recovery.errors import CorruptRecord
from recovery.records import DEAD, FailedDocumentRecord
from recovery.tracker import CHUNK, FailedDocumentsTracker, Settlement, as_config, chunks, strs

log = logging.getLogger(__name__)

#: Header a resubmitted task carries: {"doc_id": ..., "attempt": n, "manual": bool}.
HEADER = "docrecovery"
#: How long a document whose resubmission failed waits before it is due again.
RELEASE_DELAY_SECONDS = 60.0
#: A claimed record that cannot be decoded waits this long (kept, visible, not retried).
RETRY_CORRUPT_SECONDS = 86400.0


@dataclass(frozen=True)
class Selection:
    """A filter over tracked documents for manual operations; None matches anything."""

    category: str | None = None
    worker: str | None = None
    query: str | None = None
    older_than_hours: float | None = None
    #: True: dead only; False: live (not dead) only; None: both.
    dead: bool | None = None
    limit: int | None = None

    def matches(self, category: Any, worker: Any, query: Any, state: Any) -> bool:
        wanted = (
            (self.category, category),
            (self.worker, worker),
            (self.query, query),
        )
        if any(want is not None and want != have for want, have in wanted):
            return False
        return self.dead is not False or state != DEAD


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


def lost_run_record(call: dict[str, Any], now: float) -> FailedDocumentRecord:
    """The failure record of an in-flight run that never reported (see begin.lua)."""
    marker = call.get("marker") or {}
    return FailedDocumentRecord(
        document_path=str(call.get("path", "")),
        task_id=str(call["task_id"]),
        error_message=(
            f"WorkerLost: run {call['task_id']} on {call.get('worker')} ended without "
            "reporting success or failure (worker killed, out of memory, or crashed)"
        ),
        failure_timestamp=now,
        query=call.get("query"),
        worker_id=call.get("worker"),
        metadata=call.get("metadata") or {},
        task_name=str(call.get("task", "")),
        args=list(call.get("args") or []),
        kwargs=dict(call.get("kwargs") or {}),
        error_type="WorkerLost",
        error_category=categories.WORKER_LOST,
        time_limit=call.get("tlimit"),
        recovery_attempts=int(marker.get("attempt", 0)),
    )


def probe(record: FailedDocumentRecord) -> str | None:
    """Why resubmitting would fail again right now, for failures whose cause can be
    checked from here (the file is still missing or unreadable); None to go ahead."""
    path, category = record.document_path, record.error_category
    if category == categories.FILE_NOT_FOUND and not os.path.exists(path):
        return f"file still missing: {path}"
    if category == categories.PERMISSION and not os.access(path, os.R_OK):
        return f"file still unreadable: {path}"
    return None


def breaker_state(outcomes: str, config: RecoveryConfig) -> str:
    """'open' when the category's recent recoveries mostly failed and the last did too;
    an open category sends only ``breaker_canary_size`` documents a run."""
    if not config.circuit_breaker or len(outcomes) < config.breaker_window:
        return "closed"
    failed = outcomes.count("0") / len(outcomes)
    return "open" if failed >= config.breaker_threshold and outcomes[-1] == "0" else "closed"


def sender_app(redis_url: str) -> Celery:
    """A bare app that can only send tasks by name, for use outside a worker."""
    app = Celery("docrecovery-sender", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


class DocumentRecoveryManager:
    """Runs recovery batches and reports on them; ``manager.tracker`` is its store."""

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | dict[str, Any] | None = None,
        *,
        app: Celery | None = None,
        tracker: FailedDocumentsTracker | None = None,
    ) -> None:
        # a given tracker's config wins, so the manager and its store never disagree
        self.config = tracker.config if tracker else as_config(config)
        self.tracker = tracker or FailedDocumentsTracker(redis_url, self.config)
        self.app = app or sender_app(self.tracker.redis_url)
        if self.config.verbose:
            logging.getLogger("recovery").setLevel(logging.DEBUG)

    def close(self) -> None:
        self.tracker.close()

    # --- runs ----------------------------------------------------------------------

    def run_batch(self, *, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """One recovery run; see the module docstring for its steps."""
        started = time.time() if now is None else now
        if dry_run:
            return self.preview(started)
        store = self.tracker.sync
        cleaned = store.cleanup(started)
        lost = self.sweep_lost(started)
        promoted = store.promote_imports(started) if self.config.retry_on_environment_change else []
        returned, lease_dead = store.release_expired(started)
        claim = store.claim_due(self.config.recovery_batch_size, started)
        outcomes = self._decide(claim.records, started)
        outcomes += [
            (Settlement(doc_id, "wait", "undecodable record", started + RETRY_CORRUPT_SECONDS), {})
            for doc_id in claim.undecodable
        ]
        store.settle([s for s, _ in outcomes], started)
        resubmitted = [info for s, info in outcomes if s.outcome == "sent"]
        summary: dict[str, Any] = {
            "started_at": started,
            "cleaned": cleaned,
            "lost_runs_recorded": lost,
            "imports_promoted": len(promoted),
            "leases_returned": len(returned),
            "claimed": len(claim.records),
            "resubmitted": resubmitted,
            "waiting": [
                {"doc_id": s.doc_id, "reason": s.detail} for s, _ in outcomes if s.outcome == "wait"
            ],
            "released": [s.doc_id for s, _ in outcomes if s.outcome == "release"],
            "dead": lease_dead + claim.exhausted,
            "corrupt": claim.corrupt + claim.undecodable,
            "duration": round(time.time() - started, 4),
        }
        log.info(
            "recovery run: %d claimed, %d resubmitted, %d waiting, %d dead, %d corrupt",
            len(claim.records),
            len(resubmitted),
            len(summary["waiting"]),
            len(summary["dead"]),
            len(claim.corrupt),
        )
        return summary

    def _decide(
        self, records: list[FailedDocumentRecord], now: float
    ) -> list[tuple[Settlement, dict[str, Any]]]:
        """Resubmit each claimed document, or defer it without counting a retry when
        its precondition still fails or its category's circuit breaker is open."""
        decided: list[tuple[Settlement, dict[str, Any]]] = []
        for record, wait in zip(records, self._holds(records, now), strict=True):
            decided.append((wait, {}) if wait else self._resubmit(record, now))
        return decided

    def _holds(self, records: list[FailedDocumentRecord], now: float) -> list[Settlement | None]:
        """For each record, the deferral that holds it back, or None to send it. No side
        effects: the dry run shows exactly what a run would do."""
        canaries = {
            cat: self.config.breaker_canary_size
            for cat, b in self.breakers().items()
            if b["state"] == "open"
        }
        interval = self.config.recovery_interval_minutes * 60
        holds: list[Settlement | None] = []
        for record in records:
            category = record.error_category
            reason = probe(record) if self.config.probe_preconditions else None
            if reason is None and category in canaries:
                if canaries[category] > 0:
                    canaries[category] -= 1
                else:
                    reason = f"circuit open for {category}: only a canary is sent per run"
            if reason is None:
                holds.append(None)
                continue
            delay = policy.backoff_delays(self.config, category)[
                min(record.retry_count, self.config.max_retry_count)
            ]
            holds.append(Settlement(record.doc_id, "wait", reason, now + max(delay, interval)))
        return holds

    def sweep_lost(self, now: float) -> int:
        """Record in-flight runs past their deadline as worker_lost failures (all of
        them: each recorded entry leaves the in-flight index)."""
        store = self.tracker.sync
        recorded = 0
        while calls := store.lost_runs(now):
            for call in calls:
                outcome = store.record_failure(
                    lost_run_record(call, now),
                    lost_run=now,
                    counted=not (call.get("marker") or {}).get("manual", False),
                    recovery_attempt=bool(call.get("marker")),
                    now=now,
                )
                if outcome.state == "skipped":
                    continue
                recorded += 1
                log.error(
                    "run %s of %s never reported: recorded as worker_lost",
                    call["task_id"],
                    call.get("path"),
                )
        return recorded

    def breakers(self) -> dict[str, dict[str, Any]]:
        """Each category's circuit breaker: state and its recent recovery outcomes."""
        store = self.tracker.sync
        with store.translate_errors("read circuit breakers"):
            raw: dict[str, str] = store.client.hgetall(store.keys.breakers)  # type: ignore[assignment]
        return {
            category: {
                "state": breaker_state(outcomes, self.config),
                "recent": outcomes,
                "failure_rate": outcomes.count("0") / len(outcomes) if outcomes else 0.0,
            }
            for category, outcomes in sorted(raw.items())
        }

    def environments(self) -> dict[str, int]:
        """Each worker's environment generation, as recorded when it last started."""
        store = self.tracker.sync
        k = store.keys
        with store.translate_errors("read environments"):
            pipe = store.client.pipeline(transaction=False)
            pipe.hgetall(k.fingerprints)
            pipe.hgetall(k.generations)
            workers, generations = pipe.execute()
        return {worker: int(generations.get(fp, 0)) for worker, fp in sorted(workers.items())}

    def recover_all(self, *, max_batches: int = 10_000) -> dict[str, Any]:
        """Run batch after batch until nothing is due; a summary of all of them."""
        totals: dict[str, Any] = {"batches": 0, "claimed": 0, "resubmitted": [], "dead": []}
        for _ in range(max_batches):
            batch = self.run_batch()
            totals["batches"] += 1
            totals["claimed"] += batch["claimed"]
            totals["resubmitted"] += batch["resubmitted"]
            totals["dead"] += batch["dead"]
            taken = batch["claimed"] + len(batch["dead"]) + len(batch["corrupt"])
            if taken < self.config.recovery_batch_size:
                break  # the due set ran out within this batch
        totals["status"] = self.tracker.sync.status()
        return totals

    def preview(self, now: float | None = None) -> dict[str, Any]:
        """What the next batch would do and why — resubmit, wait, or go dead — changing
        nothing. Corrupt records are reported as the real run reports them."""
        now = time.time() if now is None else now
        store = self.tracker.sync
        with store.translate_errors("dry run"):
            ids = strs(
                store.client.zrangebyscore(
                    store.keys.due, "-inf", now, start=0, num=self.config.recovery_batch_size
                )
            )
        records: list[FailedDocumentRecord] = []
        corrupt: list[str] = []
        would_die: list[dict[str, Any]] = []
        for doc_id in ids:
            try:
                record = store.get_record(doc_id)
            except CorruptRecord as exc:
                log.warning("dry run: %s", exc)
                corrupt.append(doc_id)
                continue
            if record is None:
                continue
            if record.retry_count >= self.config.max_retry_count:
                would_die.append({**self._plan(record, now), "why": "retries exhausted"})
            else:
                records.append(record)
        plans = [self._plan(r, now) for r in records]
        holds = self._holds(records, now)
        return {
            "dry_run": True,
            "started_at": now,
            "would_resubmit": [p for p, h in zip(plans, holds, strict=True) if h is None],
            "would_wait": [
                {**p, "why": h.detail} for p, h in zip(plans, holds, strict=True) if h is not None
            ],
            "would_die": would_die,
            "corrupt": corrupt,
        }

    def _plan(self, record: FailedDocumentRecord, now: float) -> dict[str, Any]:
        category = record.error_category
        limit = policy.time_limit_for(self.config, category, record.time_limit)
        return {
            "doc_id": record.doc_id,
            "path": record.document_path,
            "task": record.task_name,
            "category": category,
            "attempt": record.recovery_attempts + 1,
            "retry_count": record.retry_count,
            "queue": policy.queue_for(self.config, category),
            "time_limit": limit,
            "why": (
                f"{category} failure ({record.error_type}) due since "
                f"{(now - (record.next_retry_at or now)) / 60:.1f} min; "
                f"{record.retry_count}/{self.config.max_retry_count} retries used"
            ),
        }

    def _resubmit(
        self, record: FailedDocumentRecord, now: float, *, manual: bool = False
    ) -> tuple[Settlement, dict[str, Any]]:
        plan = self._plan(record, now)
        header = {"doc_id": record.doc_id, "attempt": plan["attempt"], "manual": manual}
        try:
            result = self.app.send_task(
                record.task_name,
                args=record.args,
                kwargs=record.kwargs,
                queue=plan["queue"],
                time_limit=plan["time_limit"],
                soft_time_limit=round(plan["time_limit"] * 0.9, 3),
                headers={HEADER: header},
            )
        except Exception as exc:
            log.error("could not resubmit %s: %s", record.document_path, exc)
            reason = f"resubmission failed: {exc}"
            return Settlement(record.doc_id, "release", reason, now + RELEASE_DELAY_SECONDS), {}
        plan["task_id"] = result.id
        return Settlement(record.doc_id, "sent", result.id), plan

    # --- manual operations -----------------------------------------------------

    def select(self, selection: Selection | None = None) -> list[str]:
        """Ids of tracked documents matching ``selection``, oldest failure first.

        An operator's query, not a hot path: it reads each candidate's few filter
        fields, in pipelined chunks, from the live and/or dead index.
        """
        selection = selection or Selection()
        store = self.tracker.sync
        k = store.keys
        indexes = {True: [k.dead], False: [k.failed], None: [k.failed, k.dead]}[selection.dead]
        cutoff = time.time() - (selection.older_than_hours or 0) * 3600
        chosen: list[tuple[float, str]] = []
        with store.translate_errors("select documents"):
            ids = [i for index in indexes for i in strs(store.client.zrange(index, 0, -1))]
            for chunk in chunks(ids, CHUNK):
                pipe = store.client.pipeline(transaction=False)
                for doc_id in chunk:
                    pipe.hmget(k.record(doc_id), "cat", "worker", "query", "state", "first")
                for doc_id, fields in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                    if not isinstance(fields, list) or not selection.matches(*fields[:4]):
                        continue
                    first = _float(fields[4])
                    if selection.older_than_hours is None or first <= cutoff:
                        chosen.append((first, doc_id))
        ordered = [doc_id for _, doc_id in sorted(chosen)]
        return ordered[: selection.limit] if selection.limit else ordered

    def retry(self, doc_ids: list[str]) -> dict[str, Any]:
        """Resubmit these documents now, dead ones too, as manual retries: they do not
        count against ``max_retry_count``. The set is fixed when called, and a document
        already claimed or in recovery is skipped, so none is enqueued twice."""
        now = time.time()
        store = self.tracker.sync
        sent: list[dict[str, Any]] = []
        skipped: list[str] = []
        size = self.config.recovery_batch_size
        for start in range(0, len(doc_ids), size):
            chunk = doc_ids[start : start + size]
            claim = store.claim_ids(chunk, now)
            taken = {r.doc_id for r in claim.records}
            skipped += [d for d in chunk if d not in taken]
            outcomes = [self._resubmit(r, now, manual=True) for r in claim.records]
            store.settle([o for o, _ in outcomes], now)
            sent += [info for o, info in outcomes if o.outcome == "sent"]
        return {"resubmitted": sent, "skipped": skipped}

    def delete(self, doc_ids: list[str]) -> int:
        """Stop tracking these documents (whatever their state)."""
        return self.tracker.sync.delete(doc_ids)

    def purge(self, *, dead_only: bool = True) -> int:
        """Delete every dead document (or, with ``dead_only=False``, every one)."""
        return self.delete(self.select(Selection(dead=True if dead_only else None)))

    # --- async face --------------------------------------------------------------

    async def run_recovery(self, *, dry_run: bool = False) -> dict[str, Any]:
        return await asyncio.to_thread(self.run_batch, dry_run=dry_run)

    async def recover(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.recover_all)

    async def get_recovery_status(self) -> dict[str, Any]:
        """Counts, the seed's recovery metrics, and the failure analysis."""
        return await asyncio.to_thread(self.status)

    async def analyze_failures(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.tracker.sync.analysis)

    def status(self) -> dict[str, Any]:
        now = time.time()
        store = self.tracker.sync
        status = store.status(now)
        status["analysis"] = store.analysis(now)
        status["circuit_breakers"] = self.breakers()
        return status


async def run_document_recovery(
    redis_url: str | None = None, config: RecoveryConfig | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Recover every eligible document now (batch after batch); the seed's entry point.

    ``redis_url`` defaults to ``REDIS_URL``; ``config`` is a dict of recovery keys or
    a RecoveryConfig, layered over the ``DOCRECOVERY_*`` environment.
    """
    manager = DocumentRecoveryManager(redis_url, as_config(config))
    try:
        return await manager.recover()
    finally:
        manager.close()
