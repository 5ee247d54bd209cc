"""The recovery commands: status, list, show, analyze, recover, retry, delete, purge.

Each is a click command whose callback takes the :class:`~recovery.cli.runtime.Session`
first; :data:`COMMANDS` is what :func:`recovery.cli.build` puts in a group.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext, suppress
from typing import Any

import click
from rich.live import Live

from recovery.cli import render
from recovery.cli.runtime import Failed, Session, operation, shared
from recovery.cli.selection import chosen, selection_of, selection_options
from recovery.cli.text import masked, shown
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord
from recovery.spool import Spool
from recovery.store import redact

#: Documents held back whose reasons ``status`` shows (the longest waiting first).
HELD_SHOWN = 10
#: Seconds between refreshes of ``status --watch`` given no value.
WATCH_SECONDS = 2.0


def _print_json(value: Any, *, indent: int | None = 2) -> None:
    click.echo(json.dumps(value, indent=indent, default=str))


def _as_json(record: FailedDocumentRecord) -> dict[str, Any]:
    return masked(vars(record)) | {"doc_id": record.doc_id}


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
    type=click.FloatRange(min=0.1),
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


def _show_status(session: Session, status: dict[str, Any], out: Any) -> None:
    if session.json:
        _print_json(status)
    elif out.is_terminal:
        out.print(render.status_view(status, time.time()))
    else:
        click.echo("\n".join(render.status_text(status)))


def _watch(
    session: Session, manager: RecoveryManager, every: float, count: int | None, out: Any
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
                _print_json(status, indent=None)
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
        _print_json([_as_json(r) for r in records])
    elif out.is_terminal:
        out.print(render.list_view(records, ids, time.time()))
    else:
        click.echo("\n".join(render.list_text(records, ids)))
    return 0


@click.command()
@click.argument("doc_id", metavar="DOC")
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
        _print_json(_as_json(record))
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
        _print_json(analysis)
    else:
        render.console().print(render.analysis_view(analysis, time.time()))
    return 0


# --- recover, retry, delete, purge -------------------------------------------------------


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what the next batch would do; change nothing.")
@click.option("--now", is_flag=True, help="Ignore every backoff (recovery.run(force=True)).")
@shared(data=True)
@operation
def recover(session: Session, dry_run: bool, now: bool) -> int:
    """Resubmit every eligible failed document, batch after batch (what beat's
    recovery.run does one batch at a time). Same as: python main.py --recover

    \b
    Examples:
      docrecovery recover --dry-run
      python main.py --recover --redis-url redis://localhost:6379/0
    """
    with session.manager() as manager:
        if dry_run:
            summary = manager.preview(force=now)
        else:
            summary = _recover_with_progress(session, manager, now)
    if session.json:
        _print_json(summary)
    elif dry_run:
        _print_preview(summary)
    else:
        _print_recovery(summary)
    return 0


def _recover_with_progress(session: Session, manager: RecoveryManager, force: bool) -> Any:
    status = manager.tracker.reports.status()
    due = status["eligible_for_recovery"] + (status["scheduled"] if force else 0)
    with render.progress(enabled=not session.json) as bar:
        task = bar.add_task("recovering", total=due)

        def advance(batch: dict[str, Any]) -> None:
            bar.advance(task, batch["claimed"] + len(batch["corrupt"]))

        summary = manager.recover_all(force=force, on_batch=advance)
        bar.update(task, completed=due)
    return summary


def _print_preview(summary: dict[str, Any]) -> None:
    plan = summary["would_resubmit"]
    click.echo(f"dry run: the next batch would resubmit {len(plan)} document(s)")
    for verb, key in (("resubmit", "would_resubmit"), ("hold", "would_wait")):
        for item in summary[key]:
            click.echo(
                f"  {verb:8} {shown(item['path'])}  -> {item['queue']}: {shown(item['why'])}"
            )
    for doc_id in summary["corrupt"]:
        click.echo(f"  corrupt  {doc_id}: record cannot be decoded")


def _print_recovery(summary: dict[str, Any]) -> None:
    sent, held = summary["resubmitted"], summary["waiting"]
    click.echo(
        f"recovery: {len(sent)} resubmitted in {summary['batches']} batch(es), "
        f"{len(held)} held back"
    )
    for item in sent:
        click.echo(f"  {shown(item['path'])}  attempt {item['attempt']} -> {item['queue']}")
    for item in held:
        click.echo(f"  held     {item['doc_id']}: {shown(item['reason'])}")
    click.echo("\n".join(render.status_lines(summary["status"])))


@click.command()
@click.argument("doc_ids", nargs=-1, metavar="[DOC]...")
@click.option("--all", "all_", is_flag=True, help="Every document the filters match.")
@selection_options
@shared(data=True)
@operation
def retry(session: Session, doc_ids: tuple[str, ...], all_: bool, **filters: Any) -> int:
    """Resubmit documents now, dead ones too, as manual retries (not counted against
    max_retry_count). The set is fixed when the command starts and a document already
    in recovery is skipped, so none is sent twice.

    \b
    Examples:
      docrecovery retry 5d41402abc4b2a76b971
      docrecovery retry --signature 3f2a9c0d1b7e
      docrecovery retry --all --category file_not_found
    """
    with session.manager() as manager:
        result = manager.retry(chosen(manager, doc_ids, all_, filters))
    if session.json:
        _print_json(result)
        return 0
    for item in result["resubmitted"]:
        click.echo(f"resubmitted {item['doc_id']}  {shown(item['path'])} -> {item['queue']}")
    for doc_id in result["skipped"]:
        click.echo(f"skipped     {shown(doc_id)}  (not tracked, or already being recovered)")
    return 0


@click.command()
@click.argument("doc_ids", nargs=-1, metavar="[DOC]...")
@click.option("--all", "all_", is_flag=True, help="Every document the filters match.")
@selection_options
@shared(data=True)
@operation
def delete(session: Session, doc_ids: tuple[str, ...], all_: bool, **filters: Any) -> int:
    """Stop tracking documents, whatever their state.

    \b
    Examples:
      docrecovery delete 5d41402abc4b2a76b971
      docrecovery delete --signature 3f2a9c0d1b7e
    """
    with session.manager() as manager:
        deleted = manager.delete(chosen(manager, doc_ids, all_, filters))
    if session.json:
        _print_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} document(s)")
    return 0


@click.command()
@click.option("--everything", is_flag=True, help="Delete every tracked document, not only dead.")
@shared(data=True)
@operation
def purge(session: Session, everything: bool) -> int:
    """Delete the dead documents (or, with --everything, all of them).

    \b
    Example:
      docrecovery purge
    """
    with session.manager() as manager:
        removed = manager.purge(dead_only=not everything)
    what = "tracked" if everything else "dead"
    if session.json:
        _print_json({"purged": removed, "which": what})
    else:
        click.echo(f"purged {removed} {what} document(s)")
    return 0


COMMANDS: tuple[click.Command, ...] = (
    status,
    list_,
    show,
    analyze,
    recover,
    retry,
    delete,
    purge,
)
