"""What a recovery run, a dry run and a manual retry did, as typed values.

The manager returns these; code inside reads their attributes. Each ``to_dict()`` is
the JSON the edges hand out — ``recovery.run``'s task result, the seed's coroutines,
the CLI's ``--json`` and the dashboard's API — with its keys in their documented
order, so that output does not depend on how the values are held.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal


@dataclass(frozen=True)
class _Json:
    """A summary whose JSON is its fields, in their declared order."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan(_Json):
    """How one document would be resubmitted, and why (a dry run's entry)."""

    doc_id: str
    path: str
    task: str
    category: str
    #: This resubmission's number among the document's recovery attempts (from 1).
    attempt: int
    retry_count: int
    queue: str
    time_limit: float
    #: Why it is resubmitted; for a held-back document, why it is held.
    why: str


@dataclass(frozen=True)
class Resubmission(Plan):
    """A plan carried out: the new task, and the one it replaces."""

    task_id: str
    replaces: str
    #: An operator's retry, which does not count against ``max_retry_count``.
    manual: bool


@dataclass(frozen=True)
class Held(_Json):
    """A claimed document held back uncounted (a failed precondition, an open breaker)."""

    doc_id: str
    reason: str


@dataclass(frozen=True)
class RunSummary(_Json):
    """One recovery run (``RecoveryManager.run_batch``)."""

    started_at: float
    #: Records removed by retention: ``{"expired": n, "dead_trimmed": n}``.
    cleaned: dict[str, int]
    lost_runs_recorded: int
    imports_promoted: int
    claims_returned: int
    reopened: int
    claimed: int
    resubmitted: list[Resubmission]
    waiting: list[Held]
    #: Ids given back to due because their resubmission failed.
    released: list[str]
    corrupt: list[str]
    duration: float


@dataclass(frozen=True)
class RecoveryTotals(_Json):
    """Every batch of ``recover_all``, with the store's status once they are done."""

    batches: int
    claimed: int
    resubmitted: list[Resubmission]
    waiting: list[Held]
    #: Ids given back because their resubmission failed (the broker refused it).
    released: list[str]
    #: The store's report (``Reports.status()``), JSON as it is everywhere else.
    status: dict[str, Any]


@dataclass(frozen=True)
class Preview(_Json):
    """What the next run would do, changing nothing (a dry run)."""

    would_resubmit: list[Plan]
    #: Plans held back, each ``why`` saying what holds it.
    would_wait: list[Plan]
    corrupt: list[str]
    #: Tells a dry run's task result from a run's; first in the JSON.
    dry_run: ClassVar[Literal[True]] = True

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, **asdict(self)}


@dataclass(frozen=True)
class RetryResult(_Json):
    """An operator's retry: what was resubmitted, the ids skipped (not tracked, or
    already claimed or in recovery), and those given back uncounted (to due, a dead one
    to dead) because their resubmission failed or their record cannot be decoded."""

    resubmitted: list[Resubmission]
    skipped: list[str]
    released: list[str]
