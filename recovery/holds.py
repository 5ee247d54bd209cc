"""What keeps a claimed document back, uncounted: a cause that is still there (its
file missing or unreadable, probed from here), or its category's open circuit breaker
(only its canaries go, a run). A held document waits; each run probes it again."""

from __future__ import annotations

from typing import Any

from recovery import policy
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.store import Settlement, Tracker

#: Why a record that cannot be decoded is held: kept and shown, never sent.
UNDECODABLE = "undecodable record"


class Holds:
    """The holds of one manager's runs, under its config."""

    def __init__(self, tracker: Tracker, config: RecoveryConfig) -> None:
        self.tracker = tracker
        self.config = config

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

    def canaries(self) -> dict[str, int]:
        """What each category whose breaker is open may send: its canaries."""
        return {
            cat: self.config.breaker_canary_size
            for cat, b in self.breakers().items()
            if b["state"] == "open"
        }

    def of(
        self, records: list[FailedDocumentRecord], canaries: dict[str, int]
    ) -> list[Settlement | None]:
        """For each record, the hold that keeps it back, or None to send it; spends
        ``canaries``. Nothing else changes: the dry run shows what a run would do."""
        holds: list[Settlement | None] = []
        for record in records:
            category = record.error_category
            reason = policy.probe(record) if self.config.probe_preconditions else None
            if reason is None and category in canaries:
                if canaries[category] > 0:
                    canaries[category] -= 1
                else:
                    reason = f"circuit open for {category}: only a canary is sent per run"
            holds.append(None if reason is None else Settlement(record.doc_id, "wait", reason))
        return holds

    @staticmethod
    def verdicts(
        held: list[tuple[str, FailedDocumentRecord | None]],
    ) -> list[tuple[str, str | None]]:
        """Held documents probed again: each id with what still holds it, or None when
        its cause is gone. One that cannot be read stays held, its probe time renewed,
        so it never keeps the others from their turn."""
        return [
            (doc_id, UNDECODABLE if record is None else policy.probe(record))
            for doc_id, record in held
        ]
