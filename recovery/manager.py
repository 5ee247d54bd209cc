"""Batched recovery of failed documents, decided by the run's own settings.

A recovery run (``recovery.run`` on beat, ``python main.py --recover``,
``await run_document_recovery(config=...)``) does, in order:

1. **cleanup** — records past ``failed_docs_retention_days`` (live or dead) and dead
   ones over ``dead_max`` are removed (one script call per chunk);
2. **lost runs** — in-flight runs past their deadline (their worker died without a
   word) are recorded as counted ``worker_lost`` failures, so a crash loop ends;
3. **expired claims** — documents claimed by a run that crashed, or resubmitted
   as a task that has not started within ``resend_after_hours``, return to due,
   uncounted: a document nobody ran has used up nothing;
4. **held documents** — those held back by a failed precondition (their file was
   missing) are probed again; the ones whose file is back return to due;
5. **claim** — up to ``recovery_batch_size`` documents eligible under *this run's*
   config — not permanent, ``retry_count < max_retry_count``, last attempt older
   than the backoff for its retry count, first failure inside retention — oldest
   attempt first, each atomically with a lease: two runs at once never resubmit
   one document twice. A larger ``max_retry_count`` sees more documents, a smaller
   one fewer, and none is destroyed for it; ``force`` ignores the backoff;
6. **decide and resubmit** — a document whose precondition fails or whose category's
   circuit breaker is open is held back, uncounted; each other is sent as a NEW
   task by name (``app.send_task``), with its original args, a ``docrecovery``
   header naming the document and attempt, and the queue and time limit its error
   category calls for, shown in Flower as what it is (:mod:`recovery.lineage`) — the
   batch's messages through one producer, published in one pipeline (kombu 5.7+)
   that, if it fails, releases them all (:mod:`recovery.resubmit`);
7. **settle** — one script call marks what was sent, gives back what could not be
   sent, holds the rest, and stamps ``last_recovery_run``; then the result of each
   task replaced names its replacement.

The new task's success (``task_success``) removes the document and counts a
successful recovery with its duration; its failure is recorded as a counted retry.
A dry run asks the same claim script to decide without writing, leaving out what the
cleanup would remove, then applies the same holds. The rest of the upkeep writes, so a
dry run does not do it: what it would return to due (expired claims, held documents
whose file is back, lost runs) the run may take too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, overload

from celery import Celery

from recovery.config import RecoveryConfig
from recovery.dispatch import Dispatch
from recovery.holds import Holds
from recovery.resubmit import Resubmitter, sender_app
from recovery.store import Selection, Tracker
from recovery.summaries import (
    Held,
    Preview,
    RecoveryTotals,
    Resubmission,
    RetryResult,
    RunSummary,
)

log = logging.getLogger(__name__)

#: Held documents probed per run, as a multiple of ``recovery_batch_size``: probing
#: is a stat() each, and a run should not leave restored files waiting for long.
PROBES_PER_BATCH = 4


@dataclass(frozen=True)
class Upkeep:
    """What a run did before it claimed (steps 1 to 4), for its summary."""

    cleaned: dict[str, int]
    lost: int
    promoted: int
    returned: int
    reopened: int


#: A batch of ``recover_all`` after its first: the upkeep ran once, before it.
NO_UPKEEP = Upkeep({"expired": 0, "dead_trimmed": 0}, 0, 0, 0, 0)


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
        self.resubmitter = Resubmitter(self.app, self.config)
        self.dispatch = Dispatch(self.tracker.claims, self.resubmitter)
        self.holds = Holds(self.tracker, self.config)
        if self.config.verbose:
            logging.getLogger("recovery").setLevel(logging.DEBUG)

    def close(self) -> None:
        self.tracker.close()

    # --- runs ----------------------------------------------------------------------

    @overload
    def run_batch(
        self, *, dry_run: Literal[False] = False, force: bool = False, now: float | None = None
    ) -> RunSummary: ...
    @overload
    def run_batch(
        self, *, dry_run: Literal[True], force: bool = False, now: float | None = None
    ) -> Preview: ...
    @overload
    def run_batch(
        self, *, dry_run: bool, force: bool = False, now: float | None = None
    ) -> RunSummary | Preview: ...
    def run_batch(
        self, *, dry_run: bool = False, force: bool = False, now: float | None = None
    ) -> RunSummary | Preview:
        """One recovery run; see the module docstring for its steps. ``now`` replaces
        the server's clock (tests); ``force`` ignores every backoff; ``dry_run`` is
        :meth:`preview`."""
        started = time.time()
        if dry_run:
            return self.preview(now, force=force)
        return self._batch(started, self._upkeep(now), now, force, self.holds.canaries())

    def _upkeep(self, now: float | None) -> Upkeep:
        """Steps 1 to 4: what a run does before it claims."""
        tracker = self.tracker
        cleaned = tracker.maintenance.cleanup(now)
        lost = self.sweep_lost(now)
        promoted = (
            tracker.store.promote_imports() if self.config.retry_on_environment_change else []
        )
        returned = tracker.claims.release_expired(now)
        return Upkeep(cleaned, lost, len(promoted), len(returned), self.reopen_held(now))

    def _batch(
        self,
        started: float,
        upkeep: Upkeep,
        now: float | None,
        force: bool,
        canaries: dict[str, int],
    ) -> RunSummary:
        """Steps 5 to 7: claim, decide and resubmit, settle; ``canaries`` is what each
        open breaker may still send, spent here. A document whose precondition fails or
        whose category's circuit breaker is open is held back, uncounted."""
        claim = self.tracker.claims.claim_due(self.config.recovery_batch_size, now, force=force)
        outcomes = self.dispatch(claim, lambda records: self.holds.of(records, canaries), now=now)
        summary = RunSummary(
            started_at=started,
            cleaned=upkeep.cleaned,
            lost_runs_recorded=upkeep.lost,
            imports_promoted=upkeep.promoted,
            claims_returned=upkeep.returned,
            reopened=upkeep.reopened,
            claimed=len(claim.records),
            resubmitted=[sent for _, sent in outcomes if sent is not None],
            waiting=[Held(s.doc_id, s.detail) for s, _ in outcomes if s.outcome == "wait"],
            released=[s.doc_id for s, _ in outcomes if s.outcome == "release"],
            corrupt=claim.corrupt + claim.undecodable,
            duration=round(time.time() - started, 4),
        )
        log.info(
            "recovery run: %d claimed, %d resubmitted, %d held back, %d corrupt",
            summary.claimed,
            len(summary.resubmitted),
            len(summary.waiting),
            len(summary.corrupt),
        )
        return summary

    def reopen_held(self, now: float | None = None) -> int:
        """Probe documents held back by a failed precondition; those whose cause is
        gone go back to due (where they were: nothing was counted)."""
        held = self.tracker.reports.to_probe(self.config.recovery_batch_size * PROBES_PER_BATCH)
        return self.tracker.claims.reopen(Holds.verdicts(held), now)

    def sweep_lost(self, now: float | None = None) -> int:
        """Record in-flight runs past their deadline as worker_lost failures (all of
        them: each recorded entry leaves the in-flight index)."""
        store = self.tracker.store
        bound = self.tracker.connection.server_time() if now is None else now
        recorded = 0
        while calls := store.lost_runs(bound):
            for call in calls:
                if store.record_lost_run(call, bound, now).state == "skipped":
                    continue
                recorded += 1
                log.error(
                    "run %s of %s never reported: recorded as worker_lost", call.task_id, call.path
                )
        return recorded

    def breakers(self) -> dict[str, dict[str, Any]]:
        """Each category's circuit breaker: state and its recent recovery outcomes."""
        return self.holds.breakers()

    def environments(self) -> dict[str, int]:
        """Each worker's environment generation, as recorded when it last started."""
        return self.tracker.reports.environments()

    def recover_all(
        self,
        *,
        force: bool = False,
        max_batches: int = 10_000,
        on_batch: Callable[[RunSummary], None] | None = None,
    ) -> RecoveryTotals:
        """Run batch after batch until nothing eligible is left; a summary of all.
        The upkeep (steps 1 to 4) runs once, before the first batch, and the open
        breakers' canaries are spent across all batches: a document held back stays
        held for the call, where reopening it for the next batch would send a canary a
        batch. It stops early after a batch that could send none of what it claimed
        (the broker is down): the next would claim the same documents again.
        ``on_batch`` sees each batch's summary as it ends (a progress bar)."""
        upkeep, canaries = self._upkeep(None), self.holds.canaries()
        batches: list[RunSummary] = []
        for _ in range(max_batches):
            batch = self._batch(time.time(), upkeep, None, force, canaries)
            upkeep = NO_UPKEEP
            if on_batch is not None:
                on_batch(batch)
            batches.append(batch)
            if batch.claimed + len(batch.corrupt) < self.config.recovery_batch_size:
                break  # what is eligible ran out within this batch
            if batch.released and not batch.resubmitted:
                log.error("recovery stopped: no document of the last batch could be sent")
                break
        return RecoveryTotals(
            batches=len(batches),
            claimed=sum(b.claimed for b in batches),
            resubmitted=[sent for b in batches for sent in b.resubmitted],
            waiting=[held for b in batches for held in b.waiting],
            released=[doc_id for b in batches for doc_id in b.released],
            status=self.tracker.reports.status(),
        )

    def preview(self, now: float | None = None, *, force: bool = False) -> Preview:
        """What the next batch would do and why — resubmit or hold back — changing
        nothing: the claim script decides as in a run, without writing."""
        claim = self.tracker.claims.claim_due(
            self.config.recovery_batch_size, now, mode="preview", force=force
        )
        plans = [self.resubmitter.plan(r) for r in claim.records]
        holds = self.holds.of(claim.records, self.holds.canaries())
        return Preview(
            would_resubmit=[p for p, h in zip(plans, holds, strict=True) if h is None],
            would_wait=[
                replace(p, why=h.detail) for p, h in zip(plans, holds, strict=True) if h is not None
            ],
            corrupt=claim.corrupt + claim.undecodable,
        )

    # --- manual operations -----------------------------------------------------

    def select(self, selection: Selection | None = None) -> list[str]:
        """Ids of tracked documents matching ``selection``, oldest failure first."""
        return self.tracker.reports.select(selection)

    def retry(self, doc_ids: list[str]) -> RetryResult:
        """Resubmit these documents now, dead ones too, as manual retries: they do not
        count against ``max_retry_count``. The set is fixed when called, and a document
        already claimed or in recovery is skipped, so none is enqueued twice."""
        sent: list[Resubmission] = []
        skipped: list[str] = []
        released: list[str] = []
        size = self.config.recovery_batch_size
        for start in range(0, len(doc_ids), size):
            chunk = doc_ids[start : start + size]
            claim = self.tracker.claims.claim_ids(chunk)
            taken = {r.doc_id for r in claim.records} | set(claim.undecodable)
            skipped += [d for d in chunk if d not in taken]
            outcomes = self.dispatch(claim, manual=True)
            sent += [resubmission for _, resubmission in outcomes if resubmission is not None]
            released += [o.doc_id for o, _ in outcomes if o.outcome == "release"]
        return RetryResult(sent, skipped, released)

    def delete(self, doc_ids: list[str]) -> int:
        """Stop tracking these documents (whatever their state)."""
        return self.tracker.maintenance.delete(doc_ids)

    def purge(self, *, dead_only: bool = True) -> int:
        """Delete every dead document (or, with ``dead_only=False``, every one)."""
        return self.delete(self.select(Selection(dead=True if dead_only else None)))

    def status(self) -> dict[str, Any]:
        """Counts under this manager's config, the seed's recovery metrics, the failure
        analysis and the circuit breakers."""
        status, analysis = self.tracker.reports.overview()
        status["analysis"] = analysis
        status["circuit_breakers"] = self.breakers()
        return status
