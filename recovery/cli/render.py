"""What commands print: rich tables on a terminal, stable lines in a pipe.

``status`` and ``list`` print tables when stdout is a terminal and, piped or
redirected, the same one-line-per-fact text they always printed (scripts grep it; a
table's column widths change with its contents). ``show`` and ``analyze`` are for
people and always print tables; every command has ``--json`` for scripts.

Rich never reads markup in stored text: consoles are made with ``markup=False`` and
every cell is a :class:`~rich.text.Text` of :func:`~recovery.cli.text.shown` text, so a
path with ``[bold]`` in its name prints as it is.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.bar import Bar
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from recovery.cli.text import ago, masked, moment, next_attempt, shown, shown_lines
from recovery.records import FailedDocumentRecord
from recovery.signatures import error_line

BAR_WIDTH = 16
SIGNATURES_TITLE = "error groups (docrecovery list|retry|delete --signature S)"
#: Characters of an error group's example message ``analyze`` shows (``show`` has all).
EXAMPLE_CHARS = 72
#: Count lines of ``status``, in order: the label and the status key.
STATE_COUNTS = (
    ("due now", "eligible_for_recovery"),
    ("due later", "scheduled"),
    ("out of retries", "exhausted"),
    ("in recovery", "in_recovery"),
    ("waiting", "waiting"),
    ("dead", "dead"),
    ("corrupt", "corrupt"),
)


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """``value`` as JSON on stdout; ``indent=None``: one line (``status --watch``)."""
    print(json.dumps(value, indent=indent, default=str), flush=True)


def record_json(record: FailedDocumentRecord) -> dict[str, Any]:
    """A record's fields for ``--json``, with its id."""
    return masked(vars(record)) | {"doc_id": record.doc_id}


def console(*, stderr: bool = False) -> Console:
    """A console that never reads markup, emoji codes or highlights in what it prints."""
    return Console(
        file=sys.stderr if stderr else sys.stdout, markup=False, emoji=False, highlight=False
    )


def progress(*, enabled: bool) -> Progress:
    """A progress bar on stderr, shown only there is a terminal there: stdout stays
    what the command prints."""
    err = console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not (enabled and err.is_terminal),
    )


def cell(value: object) -> Text:
    return Text(shown(value))


def bar(value: float, largest: float) -> Bar:
    return Bar(size=largest or 1, begin=0, end=value, width=BAR_WIDTH)


def table(title: str, *columns: str) -> Table:
    grid = Table(title=title, title_justify="left", title_style="bold")
    for name in columns:
        numeric = name in ("count", "tracked", "failures", "processed", "rate", "retries")
        grid.add_column(name, justify="right" if numeric else "left", overflow="fold")
    return grid


# --- status ----------------------------------------------------------------------------


def status_lines(status: dict[str, Any]) -> list[str]:
    """The counts, recovery metrics and categories, as ``recover`` and ``status`` print
    them in a pipe."""
    m = status["recovery_metrics"]
    counts = ", ".join(f"{status[key]} {label}" for label, key in STATE_COUNTS)
    lines = [
        f"tracked {status['total_failed_documents']}: {counts}",
        f"recoveries: {m['recovery_attempts']} attempted, {m['successful_recoveries']} succeeded,"
        f" {m['failed_recoveries']} failed ({m['recovery_success_rate']:.0%}),"
        f" average {m['average_recovery_time']:.2f}s",
    ]
    analysis = status.get("analysis")
    if analysis and analysis["error_categories"]:
        cats = ", ".join(f"{k} {v}" for k, v in analysis["error_categories"].items())
        lines.append(f"by category: {cats}")
    return lines


def status_text(status: dict[str, Any]) -> list[str]:
    """``status`` in a pipe: every fact on a line of its own."""
    lines = [f"redis: {status['redis']}", *status_lines(status)]
    lines += [f"  waiting  {h['doc_id']}  {shown(h['reason'])}" for h in status["held_back"]]
    envs = ", ".join(f"{shown(w)} gen {g}" for w, g in status["environments"].items())
    lines.append(f"worker environments: {envs or 'none recorded'}")
    if status["spooled_events_here"]:
        lines.append(f"{status['spooled_events_here']} failure event(s) spooled on this host")
    lines += [f"WARNING: {shown(warning)}" for warning in status["warnings"]]
    return lines


def status_view(status: dict[str, Any], now: float) -> RenderableType:
    """``status`` on a terminal: counts with bars, recoveries, categories with their
    circuit breakers, and the documents held back with their reasons."""
    total = status["total_failed_documents"] + status["corrupt"]
    counts = table(f"tracked {status['total_failed_documents']}", "state", "count", "")
    for label, key in STATE_COUNTS:
        counts.add_row(label, str(status[key]), bar(status[key], total))
    m = status["recovery_metrics"]
    runs = table("recoveries", "attempted", "succeeded", "failed", "success", "average", "last run")
    for column in runs.columns[:5]:
        column.justify = "right"
    runs.add_row(
        str(m["recovery_attempts"]),
        str(m["successful_recoveries"]),
        str(m["failed_recoveries"]),
        f"{m['recovery_success_rate']:.0%}",
        f"{m['average_recovery_time']:.2f}s",
        moment(m["last_recovery_run"], now),
    )
    parts: list[RenderableType] = [Text(f"redis: {status['redis']}"), counts, runs]
    categories = status["analysis"]["error_categories"]
    breakers = status["circuit_breakers"]
    if categories or breakers:
        cats = table("by category", "category", "count", "", "circuit", "recent failures")
        for name in sorted(set(categories) | set(breakers), key=lambda c: -categories.get(c, 0)):
            breaker = breakers.get(name, {"state": "closed", "failure_rate": 0.0})
            cats.add_row(
                cell(name),
                str(categories.get(name, 0)),
                bar(categories.get(name, 0), max(categories.values(), default=0)),
                breaker["state"],
                f"{breaker['failure_rate']:.0%}",
            )
        parts.append(cats)
    if status["held_back"]:
        held = table(f"waiting {status['waiting']} (held back)", "document", "reason")
        for item in status["held_back"]:
            held.add_row(item["doc_id"], cell(item["reason"]))
        parts.append(held)
    envs = ", ".join(f"{shown(w)} gen {g}" for w, g in status["environments"].items())
    parts.append(Text(f"worker environments: {envs or 'none recorded'}"))
    if status["spooled_events_here"]:
        parts.append(Text(f"{status['spooled_events_here']} failure event(s) spooled here"))
    parts += [Text(f"WARNING: {shown(w)}", style="bold red") for w in status["warnings"]]
    return Group(*parts)


# --- list ----------------------------------------------------------------------------


def list_text(records: Sequence[FailedDocumentRecord], ids: Sequence[str]) -> list[str]:
    """``list`` in a pipe: one document a line, the id first; every id is listed, one
    whose record cannot be read saying so and how to remove it (:func:`unreadable`)."""
    lines = [
        f"{r.doc_id}  {r.state:10} {r.error_category:14} retries {r.retry_count}"
        f"  {shown(r.document_path)}  {shown(r.state_reason)}"
        for r in records
    ]
    lines += [
        f"{shown(doc_id)}  {'unreadable':10} {unreadable(doc_id)}"
        for doc_id in _unreadable(records, ids)
    ]
    return [*lines, f"{len(ids)} document(s)"]


def list_view(
    records: Sequence[FailedDocumentRecord], ids: Sequence[str], now: float
) -> RenderableType:
    """``list`` on a terminal, with each document's error group (``--signature``)."""
    grid = Table(
        title=f"{len(ids)} document(s)",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("document", "state", "category", "retries", "next attempt", "signature"):
        copyable = name in ("document", "signature")
        grid.add_column(
            name,
            no_wrap=copyable,
            overflow="fold",
            justify="right" if name == "retries" else "left",
        )
    grid.add_column("path / reason", overflow="fold", ratio=1)
    for r in records:
        where = Text(shown(r.document_path))
        where.append("\n" + shown(r.state_reason or error_line(r.error_message)), style="dim")
        grid.add_row(
            r.doc_id,
            r.state,
            cell(r.error_category),
            str(r.retry_count),
            next_attempt(r.next_retry_at, now),
            r.signature or "-",
            where,
        )
    for doc_id in _unreadable(records, ids):
        grid.add_row(cell(doc_id), "unreadable", "", "", "", "", unreadable(doc_id))
    return grid


def unreadable(doc_id: str) -> str:
    """What ``list`` says of a record it cannot read. Not "corrupt": that state is the
    corrupt index's, which only a claim fills, so ``list --corrupt``, ``status`` and
    ``purge`` may not know of it yet; ``delete`` removes it whatever its indexes."""
    return f"record cannot be read (remove it: docrecovery delete {shown(doc_id)})"


def _unreadable(records: Iterable[FailedDocumentRecord], ids: Sequence[str]) -> list[str]:
    readable = {r.doc_id for r in records}
    return [doc_id for doc_id in ids if doc_id not in readable]


# --- show ----------------------------------------------------------------------------

#: Fields ``show`` prints as sections of their own, below the others.
LONG_FIELDS = ("error_message", "traceback")


def record_view(record: FailedDocumentRecord, max_retries: int, now: float) -> RenderableType:
    """Every field of one record; the error and its traceback in full."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("doc id", record.doc_id)
    for field in dataclasses.fields(record):
        if field.name in LONG_FIELDS:
            continue
        value = getattr(record, field.name)
        grid.add_row(field.name.replace("_", " "), _field(field.name, value, max_retries, now))
    parts: list[RenderableType] = [grid]
    for name in LONG_FIELDS:
        text = getattr(record, name)
        parts += [Text(""), Text(name.replace("_", " "), style="bold"), Text(shown_lines(text))]
    return Group(*parts)


def _field(name: str, value: Any, max_retries: int, now: float) -> Text:
    if name == "next_retry_at":
        return Text(
            next_attempt(value, now) if value is None or value <= now else moment(value, now)
        )
    if name.endswith(("_timestamp", "_at")):
        return Text(moment(value, now))
    if name == "retry_count":
        return Text(f"{value} of {max_retries}")
    if isinstance(value, dict | list):
        return cell(json.dumps(value, ensure_ascii=False))
    return cell("-" if value in (None, "") else value)


# --- analyze ---------------------------------------------------------------------------


def analysis_view(analysis: dict[str, Any], now: float) -> RenderableType:
    """The seed's breakdowns: age, error groups, categories, workers and queries."""
    ages = analysis["age_distribution"]
    age = table("age (since first failure)", "age", "count", "")
    for bucket, count in ages.items():
        age.add_row(bucket, str(count), bar(count, max(ages.values(), default=0)))
    groups = analysis["error_signatures"]
    largest = max((g["count"] for g in groups), default=0)
    sigs = table(SIGNATURES_TITLE, "signature", "count", "", "category", "example")
    sigs.columns[0].min_width = 12
    sigs.add_column("last seen")
    for g in groups:
        sigs.add_row(
            g["signature"],
            str(g["count"]),
            bar(g["count"], largest),
            cell(g["category"]),
            cell(_cut(g["example"], EXAMPLE_CHARS)),
            ago(g["last_seen"], now),
        )
    cats = analysis["error_categories"]
    by_category = table("categories", "category", "count", "")
    for name, count in cats.items():
        by_category.add_row(cell(name), str(count), bar(count, max(cats.values())))
    return Group(
        age,
        sigs,
        by_category,
        _rates("workers", "worker", analysis["workers"]),
        _rates("queries", "query", analysis["queries"]),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rates(title: str, label: str, rates: dict[str, dict[str, float]]) -> Table:
    grid = table(title, label, "tracked", "failures", "processed", "rate", "")
    for name, r in rates.items():
        grid.add_row(
            cell(name or "(none)"),
            str(int(r["tracked"])),
            str(int(r["failures"])),
            str(int(r["processed"])),
            f"{r['failure_rate']:.0%}",
            bar(r["failure_rate"], 1.0),
        )
    return grid
