"""Sending a claimed batch and settling it: the one path of recovery runs and manual
retries, between the claim and the summary.

A batch cut off between its claim and the end of its settle (any exception, a soft
time limit) settles what it sent and gives the rest back at once, uncounted, rather
than leaving it claimed until the lease ends, when it would be sent again. A settle
Redis applied before the cut, its reply unread, is not applied again: settle.lua
marks each claim it settled (per shard), so the guard's settle changes and counts
nothing twice, and its give-back takes only what is still under the claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Literal

from recovery.errors import CorruptCounter, RecoveryError
from recovery.holds import UNDECODABLE
from recovery.records import FailedDocumentRecord
from recovery.resubmit import Outcome, Resubmitter
from recovery.store import Settlement
from recovery.store.claims import ClaimResult, Claims

log = logging.getLogger(__name__)

#: Which of a batch's records to hold back, and why (None: send it).
Decide = Callable[[list[FailedDocumentRecord]], list[Settlement | None]]


def send_all(records: list[FailedDocumentRecord]) -> list[Settlement | None]:
    """An operator's retry holds nothing back."""
    return [None] * len(records)


class Dispatch:
    """Sends claimed documents through ``resubmitter`` and settles them in ``claims``."""

    def __init__(self, claims: Claims, resubmitter: Resubmitter) -> None:
        self.claims = claims
        self.resubmitter = resubmitter

    def __call__(
        self,
        claim: ClaimResult,
        decide: Decide = send_all,
        *,
        manual: bool = False,
        now: float | None = None,
    ) -> list[Outcome]:
        """Resubmit each claimed record ``decide`` does not hold back, settle the claim
        and name each resubmission in the result of the task it replaces."""
        # an undecodable record cannot be sent: a run holds it back, visible; an
        # operator's retry gives it back (a dead one to dead), saying it was not sent
        undecodable: Literal["release", "wait"] = "release" if manual else "wait"
        with self._given_back_on_error(claim, now) as out:
            decided = self.resubmitter.send(
                claim.records, decide(claim.records), manual=manual, expires=claim.expires, out=out
            )
            decided += [(Settlement(d, undecodable, UNDECODABLE), None) for d in claim.undecodable]
            self.claims.settle([outcome for outcome, _ in decided], token=claim.token, now=now)
        for settlement, sent in decided:
            if sent is not None:
                log.debug(
                    "resubmitted %s as %s to %s with a %s s limit",
                    sent.path,
                    sent.task_id,
                    sent.queue,
                    sent.time_limit,
                )
            else:
                log.debug("%s %s: %s", settlement.outcome, settlement.doc_id, settlement.detail)
        self.resubmitter.link([sent for _, sent in decided if sent is not None])
        return decided

    @contextmanager
    def _given_back_on_error(
        self, claim: ClaimResult, now: float | None
    ) -> Iterator[list[Outcome]]:
        """Settle what was sent (the list it yields, which the send fills with each
        resubmission whose message has left) and give the rest back if the block is cut
        off: given back, a document already sent would be sent again."""
        out: list[Outcome] = []
        try:
            yield out
        except BaseException:
            sent = [settlement for settlement, _ in out]
            done = {settlement.doc_id for settlement in sent}
            ids = [r.doc_id for r in claim.records] + claim.undecodable
            try:
                if sent:
                    with suppress(CorruptCounter):  # raised once the documents are settled
                        self.claims.settle(sent, token=claim.token, now=now)
                self.claims.release([i for i in ids if i not in done], token=claim.token, now=now)
            except RecoveryError as exc:
                log.error("could not give back a failed run's claim (its lease will): %s", exc)
            raise
