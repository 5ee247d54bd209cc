"""What a worker reports to the tracker, and how a report is never lost.

A tracked run ends in a :class:`FailureEvent` or a :class:`SuccessEvent`. The
:class:`Reporter` applies it to the tracker; when Redis cannot be reached it appends
the event to the local spool (:mod:`recovery.spool`) and replays the spool, oldest
first, before the next event it applies — a success must not overtake the failure it
followed. An event that can never be applied is set aside in ``rejected.jsonl``,
never dropped.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from recovery.errors import CorruptRecord, TrackerUnavailable
from recovery.records import FailedDocumentRecord
from recovery.spool import Spool
from recovery.store import Tracker

log = logging.getLogger(__name__)

#: How often a process looks for spooled events of other processes on its host.
SPOOL_CHECK_SECONDS = 30.0
#: What keeps an event from Redis without saying anything about the event: Redis
#: unreachable, or a soft time limit firing while the event is on its way (a run ending
#: near its limit, or on a worker cut off from Redis, whose limits fire late).
NOT_DELIVERED = (TrackerUnavailable, SoftTimeLimitExceeded)


@dataclass(frozen=True)
class FailureEvent:
    """A tracked run failed. ``live``: applied as it happens, on the server's clock;
    a replayed event keeps the time its worker saw it happen. ``event_id`` travels
    with it into the spool, so a replay of a failure Redis already has counts once."""

    record: FailedDocumentRecord
    counted: bool
    recovery_attempt: bool
    live: bool = True
    event_id: str = field(default_factory=lambda: secrets.token_hex(8))

    kind = "failure"

    def apply(self, tracker: Tracker) -> None:
        tracker.store.record_failure(
            self.record,
            counted=self.counted,
            recovery_attempt=self.recovery_attempt,
            now="server" if self.live else None,
            event=self.event_id,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "record": self.record.to_dict(),
            "counted": self.counted,
            "recovery_attempt": self.recovery_attempt,
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class SuccessEvent:
    """A tracked run succeeded; ``at`` and ``live`` as for :class:`FailureEvent`.
    ``event_id`` travels with it into the spool, and only a replay sends it: Redis keeps
    the ids of replayed successes (by retention), so a replay cut off after Redis
    applied one, which keeps it spooled, does not count it again. A live success sends
    none: keeping every success's id would cost Redis some 130 bytes a success for the
    retention period. The price: one Redis applied whose answer was lost (a failover,
    a soft time limit between send and reply) is spooled, and its replay counts its
    worker's and query's run again."""

    doc_id: str
    worker: str | None
    query: str | None
    recovery_attempt: bool
    task_id: str
    at: float
    live: bool = True
    event_id: str = field(default_factory=lambda: secrets.token_hex(8))

    kind = "success"

    def apply(self, tracker: Tracker) -> None:
        tracker.store.resolve(
            self.doc_id,
            worker=self.worker,
            query=self.query,
            recovery_attempt=self.recovery_attempt,
            task_id=self.task_id,
            now=None if self.live else self.at,
            event="" if self.live else self.event_id,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "doc_id": self.doc_id,
            "worker": self.worker,
            "query": self.query,
            "recovery_attempt": self.recovery_attempt,
            "task_id": self.task_id,
            "at": self.at,
            "event_id": self.event_id,
        }


Event = FailureEvent | SuccessEvent


def from_json(raw: dict[str, Any]) -> Event:
    """Decode a spooled event (replayed, so not live); raises CorruptRecord, KeyError
    or TypeError when it is not one."""
    if raw["kind"] == "failure":
        record = FailedDocumentRecord.from_dict(raw["record"])
        return FailureEvent(
            record,
            bool(raw["counted"]),
            bool(raw["recovery_attempt"]),
            live=False,
            event_id=str(raw.get("event_id", "")),
        )
    if raw["kind"] == "success":
        return SuccessEvent(
            str(raw["doc_id"]),
            raw["worker"],
            raw["query"],
            bool(raw["recovery_attempt"]),
            str(raw.get("task_id", "")),
            float(raw["at"]),
            live=False,
            event_id=str(raw.get("event_id", "")),
        )
    raise CorruptRecord("spooled event", f"unknown kind {raw['kind']!r}")


class Reporter:
    """Applies events to a tracker, spooling what cannot reach Redis."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._spool_checked = 0.0

    def deliver(self, tracker: Tracker, event: Event) -> None:
        """Apply an event, or spool it when Redis cannot be reached: never lose it.
        Spooled events go first: they happened before this one, so when their replay
        fails (Redis away, or the spool's own trouble, such as a disk that takes no
        rejected event) this one is spooled behind them."""
        try:
            if self._spool_may_hold_events():
                self.spool.replay(lambda raw: from_json(raw).apply(tracker), NOT_DELIVERED)
        except Exception as exc:
            if not isinstance(exc, NOT_DELIVERED):
                log.exception("docrecovery: the spool's replay failed")
            self._spool(event, exc)
            return
        try:
            event.apply(tracker)
        except NOT_DELIVERED as exc:
            self._spool(event, exc)
        except Exception:
            log.exception("docrecovery: %s event cannot be applied; rejected", event.kind)
            self.spool.reject(event.to_json())

    def _spool(self, event: Event, exc: Exception) -> None:
        where = self.spool.append(event.to_json())
        self._spool_checked = 0.0
        log.error("docrecovery: %s event spooled to %s, not delivered: %r", event.kind, where, exc)

    def replay(self, tracker: Tracker) -> int:
        """Apply every spooled event; 0 when Redis is still away (they stay spooled).
        A soft time limit that cuts the replay off keeps them too and is raised on: it
        is the calling task's (``recovery.run``), which must stop, not go on past it."""
        try:
            replayed = self.spool.replay(lambda raw: from_json(raw).apply(tracker), NOT_DELIVERED)
        except TrackerUnavailable as exc:
            log.warning("docrecovery: spool replay stopped, events not applied kept: %r", exc)
            return 0
        except SoftTimeLimitExceeded:
            log.warning(
                "docrecovery: soft time limit: spool replay stopped, events not applied kept"
            )
            raise
        if replayed:
            log.warning("docrecovery: replayed %d spooled events", replayed)
        return replayed

    def _spool_may_hold_events(self) -> bool:
        """Whether to look at the spool before applying an event. Looking lists a
        directory, so a process does it right after it spooled, else every
        SPOOL_CHECK_SECONDS (events of other processes on this host)."""
        now = time.monotonic()
        if now - self._spool_checked < SPOOL_CHECK_SECONDS:
            return False
        self._spool_checked = now
        return self.spool.pending()
