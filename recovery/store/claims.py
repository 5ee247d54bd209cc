"""The recovery run's side of the store: claiming, settling and releasing documents.

A run selects its candidates with one read-only script, claims them atomically (the
claim re-checks each under the run's own settings, so two runs never take one
document), and settles what it did in one more call. Documents held back by a failed
precondition are probed and reopened here too.

With ``shards`` > 1 the selection reads every shard in one pipelined round trip and
the batch is dealt among the shards in turn, from a start that moves on each claim, so
no shard waits behind another; each shard's part is claimed and settled by its own
call (every shard's settle stamps the run, so each counts every run).
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from recovery import policy
from recovery.config import RecoveryConfig
from recovery.errors import CorruptCounter, CorruptRecord
from recovery.records import FailedDocumentRecord
from recovery.store import series
from recovery.store.changes import CHUNK, ClaimMode, _at
from recovery.store.connection import Connection, Part, Shard, strs, wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimResult:
    """Claimed records; ids moved aside as corrupt (unreadable: not a hash, a missing
    or malformed field), or claimed but undecodable in Python (the caller holds those
    back, so they stay tracked and visible). ``token`` is the claim's own: settling or
    giving back its documents takes it, so a run that outlived its lease changes
    nothing another run has claimed since. ``expires``: when the lease ends, on this
    process's monotonic clock (read before Redis's clock started the lease, so never
    late); past it, another run may take the documents, so none may be sent."""

    token: str
    expires: float
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
    """Claims of recovery runs and operators' retries, one Lua call per change (per
    shard touched)."""

    def __init__(self, connection: Connection, config: RecoveryConfig) -> None:
        super().__init__(connection, config)
        #: The shard a claim deals its first candidate from, moved on by each claim.
        self._start = itertools.count()

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
        # before the selection, whose server time starts the lease in Redis
        token, expires = self._new_claim()
        delays = policy.level_delays(self.config, force=force)
        jitter = self.config.retry_jitter
        args: dict[str, Any] = {
            "now": _at(now),
            "limit": limit,
            "delays": delays,
            "jitter": jitter,
            "retention": self.config.retention_seconds if mode == "preview" else "",
        }
        with self.connection.errors("claim"):
            if len(self.shards) == 1:
                replies = [self.scripts.select_due(**args)]
            else:
                calls = [
                    (s.scripts.select_due, *s.scripts.select_due.bind(**args)) for s in self.shards
                ]
                replies = self.connection.read_all(calls)
        chosen = _deal([strs(ids) for _, ids in replies], limit, next(self._start))
        results = [
            self._claim(shard, ids, mode, float(at), delays, jitter, token, expires)
            for shard, (at, _), ids in zip(self.shards, replies, chosen, strict=True)
            if ids
        ]
        return _merge(token, expires, results)

    def claim_ids(self, doc_ids: Sequence[str], now: float | None = None) -> ClaimResult:
        """Claim these documents for an operator's retry, dead ones included; any that
        is already claimed, sent or being recovered is left alone (never sent twice)."""
        token, expires = self._new_claim()
        return _merge(
            token,
            expires,
            [
                self._claim(shard, ids, "manual", now, "[]", 0.0, token, expires)
                for shard, ids in self.split(doc_ids, str)
            ],
        )

    def _claim(
        self,
        shard: Shard,
        ids: Sequence[str],
        mode: ClaimMode,
        now: float | None,
        delays: str,
        jitter: float,
        token: str,
        expires: float,
    ) -> ClaimResult:
        """One shard's part, in one script call. Applied twice under ``token`` (redis-py
        sends a call again when the connection drops before its reply), it answers
        what it took the first time (see ``lua/claim.lua``)."""
        with self.connection.errors("claim"):
            claimed, corrupt = shard.scripts.claim(
                items=[shard.keys.record(doc_id) for doc_id in ids],
                item_args=ids,
                now=_at(now),
                lease=self.config.claim_lease_seconds,
                retention=self.config.retention_seconds,
                mode=mode,
                delays=delays,
                jitter=jitter,
                token=token,
            )
        records = []
        undecodable = []
        for item in claimed:
            doc_id, flat = item[0], item[1:]
            stored = dict(zip(flat[::2], flat[1::2], strict=True))
            try:
                records.append(FailedDocumentRecord.from_redis(shard.keys.record(doc_id), stored))
            except CorruptRecord as exc:
                log.warning("claimed record cannot be decoded: %s", exc)
                undecodable.append(doc_id)
        for doc_id in corrupt:
            log.warning("corrupt record %s moved aside by claim", shard.keys.record(doc_id))
        return ClaimResult(token, expires, records, strs(corrupt), undecodable)

    def _new_claim(self) -> tuple[str, float]:
        """A claim's own token (random, so no two runs share one, whatever their
        clocks) and when its lease ends on this process's monotonic clock."""
        return secrets.token_hex(8), time.monotonic() + self.config.claim_lease_seconds

    def settle(
        self, outcomes: Sequence[Settlement], *, token: str, now: float | None = None
    ) -> int:
        """Mark resubmitted documents, release or hold back the others, stamp the run
        (in every shard, those without outcomes too); only documents still under the
        claim ``token`` change. A shard's part settled before under ``token`` (its reply
        lost) is not applied again: it changes and counts nothing twice. A shard whose
        stats refuse the count settles its documents even so (settle.lua), and the others
        go on: its CorruptCounter is raised once every shard is settled, as a document
        left claimed would be sent again."""
        parts = dict(self.split(outcomes, lambda s: s.doc_id))
        sent = 0
        refused: list[CorruptCounter] = []
        for shard in self.shards:
            mine = parts.get(shard, [])
            try:
                with self.connection.errors("settle"):
                    sent += int(
                        shard.scripts.settle(
                            keys={"settled": shard.keys.settled(token)},
                            items=[shard.keys.record(s.doc_id) for s in mine],
                            item_args=[
                                value
                                for s in mine
                                for value in (s.doc_id, s.outcome, wire(s.detail))
                            ],
                            now=_at(now),
                            resend=self.config.resend_after_hours * 3600,
                            step=series.STEP,
                            keep=series.KEEP,
                            token=token,
                            lease=self.config.claim_lease_seconds,
                        )
                    )
            except CorruptCounter as exc:
                refused.append(exc)
        if refused:
            raise refused[0]
        return sent

    def reopen(self, verdicts: Sequence[tuple[str, str | None]], now: float | None = None) -> int:
        """Probe results of held documents, (doc id, reason it is still held or None):
        the others go back to due where they were. Returns how many were reopened."""
        reopened = 0
        with self.connection.errors("reopen held documents"):
            for shard, mine in self.split(verdicts, lambda verdict: verdict[0]):
                reopened += len(
                    shard.scripts.reopen(
                        items=[shard.keys.record(doc_id) for doc_id, _ in mine],
                        item_args=[
                            value
                            for doc_id, reason in mine
                            for value in (doc_id, "hold" if reason else "open", wire(reason or ""))
                        ],
                        now=_at(now),
                    )
                )
        return reopened

    def release_expired(self, now: float | None = None) -> list[str]:
        """Return documents whose claim ran out to due, uncounted (see
        ``lua/release.lua``); a run that checked in and vanished is counted by the
        in-flight sweep instead. Returns the ids released."""
        bound = self.connection.server_time() if now is None else now
        released: list[str] = []
        client = self.connection.client
        with self.connection.errors("release expired claims"):
            for shard in self.shards:
                while ids := strs(
                    client.zrangebyscore(shard.keys.claimed, "-inf", bound, 0, CHUNK)
                ):
                    released += self._release(shard, ids, bound, "")
                    if len(ids) < CHUNK:
                        break
        return released

    def release(self, doc_ids: Sequence[str], *, token: str, now: float | None = None) -> list[str]:
        """Give back at once the documents still under the claim ``token``."""
        with self.connection.errors("release"):
            return [
                doc_id
                for shard, ids in self.split(doc_ids, str)
                for doc_id in self._release(shard, ids, now, token)
            ]

    def _release(
        self, shard: Shard, ids: Sequence[str], now: float | None, token: str
    ) -> list[str]:
        """``token`` '' returns the claims that ran out by ``now``; any other, those
        still under that claim, whatever their lease."""
        return strs(
            shard.scripts.release(
                items=[shard.keys.record(doc_id) for doc_id in ids],
                item_args=ids,
                now=_at(now),
                token=token,
            )
        )


def _deal(candidates: list[list[str]], limit: int, start: int) -> list[list[str]]:
    """Up to ``limit`` of the shards' candidates (each list oldest attempt first), one
    from each shard in turn beginning at shard ``start`` (mod their number): a batch
    split evenly among the shards that have some, the rest filled from those with more."""
    count = len(candidates)
    order = [(start + i) % count for i in range(count)]
    taken: list[list[str]] = [[] for _ in candidates]
    left = limit
    for depth in range(max(map(len, candidates), default=0)):
        for shard in order:
            if left and depth < len(candidates[shard]):
                taken[shard].append(candidates[shard][depth])
                left -= 1
    return taken


def _merge(token: str, expires: float, results: Sequence[ClaimResult]) -> ClaimResult:
    if len(results) == 1:
        return results[0]
    return ClaimResult(
        token,
        expires,
        [record for r in results for record in r.records],
        [doc_id for r in results for doc_id in r.corrupt],
        [doc_id for r in results for doc_id in r.undecodable],
    )
