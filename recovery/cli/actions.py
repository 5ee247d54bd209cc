"""The commands that act: ``recover``, ``retry``, ``delete`` and ``purge``.

``retry`` and ``delete`` take ids, an error group (``--signature``) or ``--all`` of
what filters match (:mod:`recovery.cli.selection`).
"""

from __future__ import annotations

from typing import Any

import click

from recovery.cli import render
from recovery.cli.render import print_json
from recovery.cli.runtime import Session, operation, shared
from recovery.cli.selection import chosen, targets
from recovery.cli.text import shown
from recovery.manager import RecoveryManager
from recovery.summaries import Preview, RecoveryTotals, RunSummary

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
    summary: Preview | RecoveryTotals
    with session.manager() as manager:
        if dry_run:
            summary = manager.preview(force=now)
        else:
            summary = _recover_with_progress(session, manager, now)
    if session.json:
        print_json(summary.to_dict())
    elif isinstance(summary, Preview):
        _print_preview(summary)
    else:
        _print_recovery(summary)
    return 1 if isinstance(summary, RecoveryTotals) and summary.released else 0


def _recover_with_progress(
    session: Session, manager: RecoveryManager, force: bool
) -> RecoveryTotals:
    status = manager.tracker.reports.status()
    due = status["eligible_for_recovery"] + (status["scheduled"] if force else 0)
    with render.progress(enabled=not session.json) as bar:
        task = bar.add_task("recovering", total=due)

        def advance(batch: RunSummary) -> None:
            bar.advance(task, batch.claimed + len(batch.corrupt))

        summary = manager.recover_all(force=force, on_batch=advance)
        bar.update(task, completed=due)
    return summary


def _print_preview(preview: Preview) -> None:
    plan = preview.would_resubmit
    click.echo(f"dry run: the next batch would resubmit {len(plan)} document(s)")
    for verb, items in (("resubmit", plan), ("hold", preview.would_wait)):
        for item in items:
            click.echo(f"  {verb:8} {shown(item.path)}  -> {item.queue}: {shown(item.why)}")
    for doc_id in preview.corrupt:
        click.echo(f"  corrupt  {doc_id}: record cannot be decoded")


def _print_recovery(totals: RecoveryTotals) -> None:
    sent, held = totals.resubmitted, totals.waiting
    click.echo(
        f"recovery: {len(sent)} resubmitted in {totals.batches} batch(es), {len(held)} held back"
    )
    for item in sent:
        click.echo(f"  {shown(item.path)}  attempt {item.attempt} -> {item.queue}")
    for held_back in held:
        click.echo(f"  held     {held_back.doc_id}: {shown(held_back.reason)}")
    for doc_id in totals.released:
        click.echo(f"  not sent {doc_id}: resubmission failed, due again")
    click.echo("\n".join(render.status_lines(totals.status)))


@click.command()
@targets
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
    failed = 1 if result.released else 0
    if session.json:
        print_json(result.to_dict())
        return failed
    for item in result.resubmitted:
        click.echo(f"resubmitted {item.doc_id}  {shown(item.path)} -> {item.queue}")
    for doc_id in result.skipped:
        click.echo(f"skipped     {shown(doc_id)}  (not tracked, or already being recovered)")
    for doc_id in result.released:
        click.echo(f"not sent    {doc_id}  (resubmission failed; left as it was)")
    return failed


@click.command()
@targets
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
        print_json({"deleted": deleted})
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
        print_json({"purged": removed, "which": what})
    else:
        click.echo(f"purged {removed} {what} document(s)")
    return 0
