"""The recovery run's side of the store: claiming, settling and releasing documents.

A run selects its candidates with one read-only script, claims them atomically (the
claim re-checks each under the run's own settings, so two runs never take one
document), and settles what it did in one more call. Documents held back by a failed
precondition are probed and reopened here too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from recovery import policy
from recovery.errors import CorruptRecord
from recovery.records import FailedDocumentRecord
from recovery.store import series
from recovery.store.changes import CHUNK, ClaimMode, _at
from recovery.store.connection import Part, strs, wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimResult:
    """Claimed records; ids moved aside as corrupt (unreadable: not a hash, a missing
    or malformed field), or claimed but undecodable in Python (the caller holds those
    back, so they stay tracked and visible)."""

    records: list[FailedDocumentRecord]
    corrupt: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settlement:
    """What a recovery run did with one claimed document."""

    doc_id: str
    outcome: Literal["sent", "release", "wait"]
    #: The new task id when sent, else the reason.
    detail: str = ""


class Claims(Part):
    """Claims of recovery runs and operators' retries, one Lua call per change."""

    def claim_due(
        self,
        limit: int,
        now: float | None = None,
        *,
        mode: Literal["due", "preview"] = "due",
        force: bool = False,
    ) -> ClaimResult:
        """Claim up to ``limit`` documents eligible under this store's config — under
        ``max_retry_count``, past their backoff (``force``: whatever their backoff),
        inside retention — oldest attempt first (``mode="preview"``: decide the same,
        change nothing). Candidates come from one read-only script, O(levels × log N
        + limit); the claim script re-checks each, so concurrent runs never claim the
        same document."""
        delays = policy.level_delays(self.config, force=force)
        jitter = self.config.retry_jitter
        with self.connection.errors("claim"):
            at, ids = self.scripts.select_due(
                now=_at(now), limit=limit, delays=delays, jitter=jitter
            )
        return self._claim(strs(ids), mode, float(at), delays, jitter)

    def claim_ids(self, doc_ids: Sequence[str], now: float | None = None) -> ClaimResult:
        """Claim these documents for an operator's retry, dead ones included; any that
        is already claimed, sent or being recovered is left alone (never sent twice)."""
        return self._claim(doc_ids, "manual", now, "[]", 0.0)

    def _claim(
        self,
        ids: Sequence[str],
        mode: ClaimMode,
        now: float | None,
        delays: str,
        jitter: float,
    ) -> ClaimResult:
        if not ids:
            return ClaimResult([])
        config = self.config
        with self.connection.errors("claim"):
            claimed, corrupt = self.scripts.claim(
                items=[self.keys.record(doc_id) for doc_id in ids],
                item_args=ids,
                now=_at(now),
                lease=config.recovery_timeout + config.lease_grace_seconds,
                retention=config.retention_seconds,
                mode=mode,
                delays=delays,
                jitter=jitter,
            )
        records = []
        undecodable = []
        for item in claimed:
            doc_id, flat = item[0], item[1:]
            stored = dict(zip(flat[::2], flat[1::2], strict=True))
            try:
                records.append(FailedDocumentRecord.from_redis(self.keys.record(doc_id), stored))
            except CorruptRecord as exc:
                log.warning("claimed record cannot be decoded: %s", exc)
                undecodable.append(doc_id)
        for doc_id in corrupt:
            log.warning("corrupt record %s moved aside by claim", self.keys.record(doc_id))
        return ClaimResult(records, strs(corrupt), undecodable)

    def settle(self, outcomes: Sequence[Settlement], now: float | None = None) -> int:
        """Mark resubmitted documents, release or hold back the others, stamp the run."""
        with self.connection.errors("settle"):
            sent = self.scripts.settle(
                items=[self.keys.record(s.doc_id) for s in outcomes],
                item_args=[
                    value for s in outcomes for value in (s.doc_id, s.outcome, wire(s.detail))
                ],
                now=_at(now),
                resend=self.config.resend_after_hours * 3600,
                step=series.STEP,
                keep=series.KEEP,
            )
        return int(sent)

    def reopen(self, verdicts: Sequence[tuple[str, str | None]], now: float | None = None) -> int:
        """Probe results of held documents, (doc id, reason it is still held or None):
        the others go back to due where they were. Returns how many were reopened."""
        if not verdicts:
            return 0
        with self.connection.errors("reopen held documents"):
            reopened = self.scripts.reopen(
                items=[self.keys.record(doc_id) for doc_id, _ in verdicts],
                item_args=[
                    value
                    for doc_id, reason in verdicts
                    for value in (doc_id, "hold" if reason else "open", wire(reason or ""))
                ],
                now=_at(now),
            )
        return len(reopened)

    def release_expired(self, now: float | None = None) -> list[str]:
        """Return documents whose claim ran out to due, uncounted (see
        ``lua/release.lua``); a run that checked in and vanished is counted by the
        in-flight sweep instead. Returns the ids released."""
        bound = self.connection.server_time() if now is None else now
        released: list[str] = []
        client = self.connection.client
        with self.connection.errors("release expired claims"):
            while ids := strs(client.zrangebyscore(self.keys.claimed, "-inf", bound, 0, CHUNK)):
                released += self._release(ids, bound, force=False)
                if len(ids) < CHUNK:
                    break
        return released

    def release(self, doc_ids: Sequence[str], now: float | None = None) -> list[str]:
        """Give claimed documents back to due at once."""
        with self.connection.errors("release"):
            return self._release(doc_ids, now, force=True) if doc_ids else []

    def _release(self, ids: Sequence[str], now: float | None, force: bool) -> list[str]:
        return strs(
            self.scripts.release(
                items=[self.keys.record(doc_id) for doc_id in ids],
                item_args=ids,
                now=_at(now),
                force=int(force),
            )
        )
