"""The commands that read: ``status``, ``list``, ``show DOC`` and ``analyze``.

Each is a click command whose callback takes the :class:`~recovery.cli.runtime.Session`
first (``@operation``); :data:`recovery.cli.COMMANDS` puts them in the group.
"""

from __future__ import annotations

import time
from contextlib import nullcontext, suppress
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from recovery.cli import render
from recovery.cli.render import print_json, record_json
from recovery.cli.runtime import Failed, Session, operation, shared
from recovery.cli.selection import Finite, document_id, selection_of, selection_options
from recovery.cli.text import shown
from recovery.manager import RecoveryManager
from recovery.spool import Spool
from recovery.store import redact

#: Documents held back whose reasons ``status`` shows (the longest waiting first).
HELD_SHOWN = 10
#: Seconds between refreshes of ``status --watch`` given no value.
WATCH_SECONDS = 2.0
#: The longest ``status --watch`` may wait between refreshes: a day.
WATCH_MAX_SECONDS = 86400.0


# --- status ----------------------------------------------------------------------------


def gather_status(session: Session, manager: RecoveryManager) -> dict[str, Any]:
    """Counts, metrics, analysis, breakers, held documents, environments, warnings."""
    status = manager.status()
    status["environments"] = manager.environments()
    status["spooled_events_here"] = Spool(manager.config.spool_dir).count()
    status["warnings"] = manager.tracker.warnings()
    status["held_back"] = [
        {"doc_id": r.doc_id, "path": r.document_path, "reason": r.state_reason}
        for r in manager.tracker.reports.held(HELD_SHOWN)
    ]
    status["redis"] = redact(session.url)
    return status


@click.command()
@click.option(
    "--watch",
    type=Finite(min=0.1, max=WATCH_MAX_SECONDS),
    is_flag=False,
    flag_value=WATCH_SECONDS,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS ({WATCH_SECONDS:g} if not given) until Ctrl-C.",
)
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="With --watch: stop after N."
)
@shared(data=True)
@operation
def status(session: Session, watch: float | None, count: int | None) -> int:
    """Counts by state (due now, due later, waiting, dead ...), recovery metrics,
    categories with their circuit breakers, and why held documents wait.

    \b
    Example:
      docrecovery status --watch 5
    """
    if count is not None and watch is None:
        raise click.UsageError("--count only applies with --watch")
    out = render.console()
    with session.manager() as manager:
        if watch is None:
            _show_status(session, gather_status(session, manager), out)
            return 0
        with suppress(KeyboardInterrupt):
            _watch(session, manager, watch, count, out)
    return 0


def _show_status(session: Session, status: dict[str, Any], out: Console) -> None:
    if session.json:
        print_json(status)
    elif out.is_terminal:
        out.print(render.status_view(status, time.time()))
    else:
        click.echo("\n".join(render.status_text(status)))


def _watch(
    session: Session, manager: RecoveryManager, every: float, count: int | None, out: Console
) -> None:
    """Status every ``every`` seconds: redrawn in place on a terminal, else one block
    (one JSON line with ``--json``) per refresh."""
    live = out.is_terminal and not session.json
    shown_times = 0
    with Live(console=out, auto_refresh=False) if live else nullcontext() as screen:
        while True:
            status = gather_status(session, manager)
            if screen is not None:
                screen.update(render.status_view(status, time.time()), refresh=True)
            elif session.json:
                print_json(status, indent=None)
            else:
                click.echo("\n".join(render.status_text(status)) + "\n")
            shown_times += 1
            if count is not None and shown_times >= count:
                return
            time.sleep(every)


# --- list, show, analyze ------------------------------------------------------------


@click.command(name="list")
@selection_options
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N documents.")
@shared(data=True)
@operation
def list_(session: Session, limit: int | None, **filters: Any) -> int:
    """Tracked documents, oldest failure first, with state, category, retries, next
    attempt, error group and reason.

    \b
    Examples:
      docrecovery list --dead
      docrecovery list --signature 3f2a9c0d1b7e --json
    """
    selection = selection_of(filters, limit)
    with session.manager() as manager:
        ids = manager.select(selection)
        records = manager.tracker.reports.get_records(ids)
    out = render.console()
    if session.json:
        print_json([record_json(r) for r in records])
    elif out.is_terminal:
        out.print(render.list_view(records, ids, time.time()))
    else:
        click.echo("\n".join(render.list_text(records, ids)))
    return 0


@click.command()
@click.argument("doc_id", metavar="DOC", callback=document_id)
@shared(data=True)
@operation
def show(session: Session, doc_id: str) -> int:
    """Every field of one tracked document, with its error and traceback in full.

    \b
    Example:
      docrecovery show 5d41402abc4b2a76b971
    """
    with session.manager() as manager:
        record = manager.tracker.reports.get_record(doc_id)
        max_retries = manager.config.max_retry_count
    if record is None:
        raise Failed(f"{shown(doc_id)} is not tracked (docrecovery list shows the ids)")
    if session.json:
        print_json(record_json(record))
    else:
        render.console().print(render.record_view(record, max_retries, time.time()))
    return 0


@click.command()
@shared(data=True)
@operation
def analyze(session: Session) -> int:
    """What failed and where: age, error groups (with the signature to act on one),
    categories, workers and queries with their failure rates.

    \b
    Example:
      docrecovery analyze
    """
    with session.manager() as manager:
        analysis = manager.tracker.reports.analysis()
    if session.json:
        print_json(analysis)
    else:
        render.console().print(render.analysis_view(analysis, time.time()))
    return 0
