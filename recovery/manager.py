"""Batched recovery of failed documents.

A recovery run (``recovery.run`` on beat, ``python main.py --recover``, or
``await run_document_recovery()``) does, in order:

1. **cleanup** — records past ``failed_docs_retention_days`` and dead documents past
   their own retention or over ``dead_max`` are removed (one script call per chunk);
2. **lost runs** — in-flight runs past their deadline (their worker died without a
   word) are recorded as ``worker_lost`` failures;
3. **expired leases** — documents claimed by a run that crashed, or resubmitted as a
   task that never reported, return to due; a lost attempt counts as a retry, so a
   document that kills its worker every time ends dead;
4. **claim** — up to ``recovery_batch_size`` due documents are claimed atomically
   with a lease: two runs at once never resubmit one document twice;
5. **decide and resubmit** — a document whose precondition still fails (its file is
   missing) or whose category's circuit breaker is open waits, uncounted; each
   other is sent as a NEW task by name (``app.send_task``), with its original args, a
   ``docrecovery`` header naming the document and attempt number, and the queue and
   time limit its error category calls for;
6. **settle** — one script call marks what was sent, gives back what could not be
   sent, and stamps ``last_recovery_run``.

The new task's success (``task_success``) removes the document and counts a
successful recovery with its duration; its failure is recorded as a counted retry.
A dry run asks the same claim script to decide without writing, then applies the
same holds, so it shows exactly what a run would do.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from recovery import policy
from recovery.calls import Marker
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.store import Selection, Settlement, Tracker
from recovery.store.changes import ClaimResult

log = logging.getLogger(__name__)

#: How long a document whose resubmission failed waits before it is due again.
RELEASE_DELAY_SECONDS = 60.0
#: A claimed record that cannot be decoded waits this long (kept, visible, not retried).
RETRY_CORRUPT_SECONDS = 86400.0


def sender_app(redis_url: str) -> Celery:
    """A bare app that can only send tasks by name, for use outside a worker."""
    app = Celery("docrecovery-sender", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    return app


class RecoveryManager:
    """Runs recovery batches and manual operations; ``manager.tracker`` is its store."""

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | None = None,
        *,
        app: Celery | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        # a given tracker's config wins, so the manager and its store never disagree
        self.tracker = tracker or Tracker(redis_url, config)
        self.config = self.tracker.config
        self.app = app or sender_app(self.tracker.url)
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
        tracker = self.tracker
        cleaned = tracker.maintenance.cleanup(started)
        lost = self.sweep_lost(started)
        store = tracker.store
        promoted = store.promote_imports(started) if self.config.retry_on_environment_change else []
        returned, lease_dead = store.release_expired(started)
        claim = store.claim_due(self.config.recovery_batch_size, started)
        outcomes = self._decide(claim, started)
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

    def _decide(self, claim: ClaimResult, now: float) -> list[tuple[Settlement, dict[str, Any]]]:
        """Resubmit each claimed document, or defer it without counting a retry when
        its precondition still fails or its category's circuit breaker is open; an
        undecodable record waits a day, kept and visible."""
        decided = [
            (wait, {}) if wait else self._resubmit(record, now)
            for record, wait in zip(claim.records, self._holds(claim.records, now), strict=True)
        ]
        later = now + RETRY_CORRUPT_SECONDS
        decided += [
            (Settlement(doc_id, "wait", "undecodable record", later), {})
            for doc_id in claim.undecodable
        ]
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
            reason = policy.probe(record) if self.config.probe_preconditions else None
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
        store = self.tracker.store
        recorded = 0
        while calls := store.lost_runs(now):
            for call in calls:
                if store.record_lost_run(call, now, now).state == "skipped":
                    continue
                recorded += 1
                log.error(
                    "run %s of %s never reported: recorded as worker_lost", call.task_id, call.path
                )
        return recorded

    def breakers(self) -> dict[str, dict[str, Any]]:
        """Each category's circuit breaker: state and its recent recovery outcomes."""
        return {
            category: {
                "state": policy.breaker_state(outcomes, self.config),
                "recent": outcomes,
                "failure_rate": outcomes.count("0") / len(outcomes) if outcomes else 0.0,
            }
            for category, outcomes in sorted(self.tracker.reports.breaker_windows().items())
        }

    def environments(self) -> dict[str, int]:
        """Each worker's environment generation, as recorded when it last started."""
        return self.tracker.reports.environments()

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
        totals["status"] = self.tracker.reports.status()
        return totals

    def preview(self, now: float | None = None) -> dict[str, Any]:
        """What the next batch would do and why — resubmit, wait, or go dead — changing
        nothing: the claim script decides as in a run, without writing."""
        now = time.time() if now is None else now
        claim = self.tracker.store.claim_due(self.config.recovery_batch_size, now, mode="preview")
        plans = [self._plan(r, now) for r in claim.records]
        holds = self._holds(claim.records, now)
        exhausted = self.tracker.reports.get_records(claim.exhausted)
        return {
            "dry_run": True,
            "started_at": now,
            "would_resubmit": [p for p, h in zip(plans, holds, strict=True) if h is None],
            "would_wait": [
                {**p, "why": h.detail} for p, h in zip(plans, holds, strict=True) if h is not None
            ],
            "would_die": [{**self._plan(r, now), "why": "retries exhausted"} for r in exhausted],
            "corrupt": claim.corrupt + claim.undecodable,
        }

    def _plan(self, record: FailedDocumentRecord, now: float) -> dict[str, Any]:
        category = record.error_category
        return {
            "doc_id": record.doc_id,
            "path": record.document_path,
            "task": record.task_name,
            "category": category,
            "attempt": record.recovery_attempts + 1,
            "retry_count": record.retry_count,
            "queue": policy.queue_for(self.config, category),
            "time_limit": policy.time_limit_for(self.config, category, record.time_limit),
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
        marker = Marker(record.doc_id, plan["attempt"], manual)
        try:
            result = self.app.send_task(
                record.task_name,
                args=record.args,
                kwargs=record.kwargs,
                queue=plan["queue"],
                time_limit=plan["time_limit"],
                soft_time_limit=policy.soft_limit(plan["time_limit"]),
                headers=marker.header(),
            )
        except Exception as exc:
            log.error("could not resubmit %s: %s", record.document_path, exc)
            reason = f"resubmission failed: {exc}"
            return Settlement(record.doc_id, "release", reason, now + RELEASE_DELAY_SECONDS), {}
        plan["task_id"] = result.id
        return Settlement(record.doc_id, "sent", result.id), plan

    # --- manual operations -----------------------------------------------------

    def select(self, selection: Selection | None = None) -> list[str]:
        """Ids of tracked documents matching ``selection``, oldest failure first."""
        return self.tracker.reports.select(selection)

    def retry(self, doc_ids: list[str]) -> dict[str, Any]:
        """Resubmit these documents now, dead ones too, as manual retries: they do not
        count against ``max_retry_count``. The set is fixed when called, and a document
        already claimed or in recovery is skipped, so none is enqueued twice."""
        now = time.time()
        store = self.tracker.store
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
        return self.tracker.maintenance.delete(doc_ids)

    def purge(self, *, dead_only: bool = True) -> int:
        """Delete every dead document (or, with ``dead_only=False``, every one)."""
        return self.delete(self.select(Selection(dead=True if dead_only else None)))

    def status(self) -> dict[str, Any]:
        """Counts, the seed's recovery metrics, the failure analysis and breakers."""
        now = time.time()
        reports = self.tracker.reports
        status = reports.status(now)
        status["analysis"] = reports.analysis(now)
        status["circuit_breakers"] = self.breakers()
        return status
