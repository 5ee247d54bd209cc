"""What each page shows, as plain JSON-ready data: the HTML pages render it and the
``/api/`` endpoints return it, so the two never disagree.

Every number comes from the manager's and the store's existing reads — status and
analysis (one script call, O(1) in the number of records), cursor pages over the
indexes, one record — never from a scan of the store.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from recovery.errors import CorruptRecord
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord
from recovery.store import redact
from recovery.store.listings import Page

from .filters import Listing

#: Held documents whose reasons the overview tallies (the least recently probed).
HELD_SHOWN = 200
#: Rows of a bar chart (workers, queries: the most tracked first).
CHART_ROWS = 15
#: Buckets of recoveries over time the overview draws (two days of hours).
SERIES_SHOWN = 48


def overview(manager: RecoveryManager) -> dict[str, Any]:
    """Totals, recovery metrics, breakers, the analysis and recoveries over time."""
    reports = manager.tracker.reports
    status = manager.status()
    analysis = status.pop("analysis")
    breakers = status.pop("circuit_breakers")
    reasons = Counter(r.state_reason or "(no reason recorded)" for r in reports.held(HELD_SHOWN))
    return {
        "redis": redact(manager.tracker.url),
        "status": status,
        "waiting_reasons": dict(reasons.most_common()),
        "circuit_breakers": breakers,
        "analysis": analysis,
        "recoveries_over_time": [asdict(b) for b in reports.recoveries_over_time()],
        "read_at": time.time(),
    }


def charts(data: dict[str, Any]) -> dict[str, Any]:
    """The overview's bar rows, (label, value, note), and its series' last buckets."""
    analysis = data["analysis"]

    def rated(rows: dict[str, dict[str, float]]) -> list[tuple[str, int, str]]:
        ranked = sorted(rows.items(), key=lambda kv: (-kv[1]["tracked"], kv[0]))[:CHART_ROWS]
        return [
            (
                name,
                int(r["tracked"]),
                f"{r['failure_rate']:.0%} of {int(r['processed'])} runs failed",
            )
            for name, r in ranked
        ]

    shown = data["recoveries_over_time"][-SERIES_SHOWN:]
    totals = {k: sum(b[k] for b in shown) for k in ("resubmitted", "recovered", "failed")}
    return {
        "age": [(bucket, n, "") for bucket, n in analysis["age_distribution"].items()],
        "category": [(c, n, "") for c, n in analysis["error_categories"].items()],
        "worker": rated(analysis["workers"]),
        "query": rated(analysis["queries"]),
        "series": {
            "buckets": shown,
            "top": max([1, *(b[k] for b in shown for k in totals)]),
            **totals,
        },
    }


def groups(manager: RecoveryManager) -> list[dict[str, Any]]:
    """Errors grouped by similarity, the largest group first."""
    groups: list[dict[str, Any]] = manager.tracker.reports.analysis()["error_signatures"]
    return groups


def row(record: FailedDocumentRecord) -> dict[str, Any]:
    """A record as the documents list shows it."""
    return {
        "doc_id": record.doc_id,
        "path": record.document_path,
        "state": record.state,
        "reason": record.state_reason,
        "category": record.error_category,
        "error_type": record.error_type,
        "message": record.error_message.strip().splitlines()[0][:300]
        if record.error_message.strip()
        else "",
        "signature": record.signature,
        "worker": record.worker_id,
        "query": record.query,
        "retry_count": record.retry_count,
        "recovery_attempts": record.recovery_attempts,
        "first_failure": record.first_failure_timestamp,
        "last_failure": record.failure_timestamp,
        "next_retry_at": record.next_retry_at,
    }


def documents(manager: RecoveryManager, listing: Listing) -> dict[str, Any]:
    """One cursor page of a tab, with the filters that made it."""
    reports = manager.tracker.reports
    page: Page = reports.page(listing.tab, listing.selection, listing.after, listing.limit)
    readable = {r.doc_id: r for r in page.records}
    return {
        "tab": listing.tab,
        "documents": [row(readable[d]) for d in page.ids if d in readable],
        # ids whose record cannot be read: listed so they can be deleted
        "unreadable": [d for d in page.ids if d not in readable],
        "next": page.next,
        "examined": page.examined,
    }


def detail(manager: RecoveryManager, doc_id: str, flower_url: str | None) -> dict[str, Any] | None:
    """Every field of one record, or None when it is not tracked."""
    try:
        record = manager.tracker.reports.get_record(doc_id)
    except CorruptRecord as exc:
        return {"doc_id": doc_id, "corrupt": str(exc)}
    if record is None:
        return None
    fields = record.to_dict()
    fields.pop("history")
    fields["doc_id"] = record.doc_id
    # each failure and resubmission the scripts noted, the last 20 (records.Attempt)
    history = [
        {
            "event": "failed" if attempt.kind == "failed" else "resubmitted",
            "outcome": attempt.kind,
            "at": attempt.at,
            "worker": attempt.worker,
            "task_id": attempt.task_id,
            "category": attempt.category,
            "time_limit": attempt.time_limit,
        }
        for attempt in record.attempts
    ]
    return {
        "doc_id": record.doc_id,
        "record": fields,
        "history": history,
        "flower": f"{flower_url.rstrip('/')}/task/{quote(record.task_id)}"
        if flower_url and record.task_id
        else None,
    }
