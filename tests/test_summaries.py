"""The summaries' JSON is what the task result, the seed's coroutines, ``--json`` and
the dashboard's API have always handed out: same keys, same order, same values."""

from __future__ import annotations

import json

from recovery.summaries import (
    Held,
    Plan,
    Preview,
    RecoveryTotals,
    Resubmission,
    RetryResult,
    RunSummary,
)

PLAN = Plan("d1", "/docs/a.pdf", "tasks.process_document", "memory", 1, 0, "highmem", 300, "w")
SENT = Resubmission(**vars(PLAN), task_id="new", replaces="old", manual=False)
SENT_JSON = (
    '{"doc_id": "d1", "path": "/docs/a.pdf", "task": "tasks.process_document", '
    '"category": "memory", "attempt": 1, "retry_count": 0, "queue": "highmem", '
    '"time_limit": 300, "why": "w", "task_id": "new", "replaces": "old", "manual": false}'
)


def test_a_runs_summary_is_its_json_in_order() -> None:
    summary = RunSummary(
        started_at=1.5,
        cleaned={"expired": 1, "dead_trimmed": 0},
        lost_runs_recorded=2,
        imports_promoted=0,
        claims_returned=3,
        reopened=4,
        claimed=5,
        resubmitted=[SENT],
        waiting=[Held("d2", "file still missing: /x")],
        released=["d3"],
        corrupt=["d4"],
        duration=0.25,
    )

    assert json.dumps(summary.to_dict()) == (
        '{"started_at": 1.5, "cleaned": {"expired": 1, "dead_trimmed": 0}, '
        '"lost_runs_recorded": 2, "imports_promoted": 0, "claims_returned": 3, '
        f'"reopened": 4, "claimed": 5, "resubmitted": [{SENT_JSON}], '
        '"waiting": [{"doc_id": "d2", "reason": "file still missing: /x"}], '
        '"released": ["d3"], "corrupt": ["d4"], "duration": 0.25}'
    )


def test_a_dry_run_says_so_first_and_a_held_plan_keeps_its_place_in_the_keys() -> None:
    held = Plan("d2", "/docs/b.pdf", "t", "file_not_found", 2, 1, "documents", 60.0, "gone")
    preview = Preview(would_resubmit=[PLAN], would_wait=[held], corrupt=["d4"])

    assert preview.dry_run is True
    assert json.dumps(preview.to_dict()) == (
        '{"dry_run": true, "would_resubmit": [{"doc_id": "d1", "path": "/docs/a.pdf", '
        '"task": "tasks.process_document", "category": "memory", "attempt": 1, '
        '"retry_count": 0, "queue": "highmem", "time_limit": 300, "why": "w"}], '
        '"would_wait": [{"doc_id": "d2", "path": "/docs/b.pdf", "task": "t", '
        '"category": "file_not_found", "attempt": 2, "retry_count": 1, '
        '"queue": "documents", "time_limit": 60.0, "why": "gone"}], "corrupt": ["d4"]}'
    )


def test_totals_and_a_manual_retry_are_their_json_in_order() -> None:
    totals = RecoveryTotals(
        batches=2, claimed=5, resubmitted=[SENT], waiting=[], released=["d6"], status={"dead": 0}
    )
    retried = RetryResult(resubmitted=[SENT], skipped=["d5"], released=["d6"])

    assert json.dumps(totals.to_dict()) == (
        f'{{"batches": 2, "claimed": 5, "resubmitted": [{SENT_JSON}], "waiting": [], '
        '"released": ["d6"], "status": {"dead": 0}}'
    )
    assert json.dumps(retried.to_dict()) == (
        f'{{"resubmitted": [{SENT_JSON}], "skipped": ["d5"], "released": ["d6"]}}'
    )
