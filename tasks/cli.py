"""The ``docrecovery`` program (also ``python main.py``): the recovery commands of
:mod:`recovery.cli` on the pipeline's app, plus the pipeline's own ``submit`` and
``demo``::

    docrecovery submit samples/*.txt --query "visibility timeout" --wait 30
    docrecovery status | list | show DOC | analyze | recover | retry | delete | purge
    python main.py --recover [--redis-url URL] [--verbose] [--dry-run] [--now]
    docrecovery demo

The Redis is ``--redis-url``, else ``REDIS_URL``, else the default the workers use
too (:func:`recovery.store.default_redis_url`). A command that cannot reach it exits 2
naming the URL: it never reports on a fresh empty server. Only ``demo``, given neither,
starts an embedded redis-server on loopback with its data in ``.docrecovery/redis``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from celery.exceptions import TimeoutError as ResultTimeout

from recovery.broker import celery_urls
from recovery.cli import EXIT_FAILED, Session, build, check_broker, operation, shared, shown
from recovery.cli.render import progress
from recovery.redis_server import RedisServer

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

DATA_DIR = Path(os.environ.get("DOCRECOVERY_DATA_DIR", ".docrecovery"))


class PipelineApp:
    """The pipeline's app (``tasks.app``), its broker and result backend pointed at
    the command's Redis, as is any child process (``REDIS_URL``)."""

    def app_for(self, redis_url: str) -> Celery:
        from tasks.app import app

        os.environ["REDIS_URL"] = redis_url
        app.conf.update(**celery_urls(redis_url))
        return app


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILE...")
@click.option("--query", help="The query to score each document's chunks against.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Wait up to SECONDS for each result and print it; exit 1 if any failed.",
)
@shared(data=True)
@operation
def submit(session: Session, paths: tuple[str, ...], query: str | None, wait: float) -> int:
    """Send documents to the pipeline (tasks.process_document), one task each.

    \b
    Example:
      docrecovery submit samples/*.txt --query "visibility timeout" --wait 30
    """
    app = session.app()
    check_broker(app)
    with progress(enabled=not session.json) as bar:
        sending = bar.add_task("sending", total=len(paths))
        sent = []
        for path in paths:
            args: list[Any] = [str(Path(path).resolve()), query, {}]
            sent.append((path, app.send_task("tasks.process_document", args=args)))
            bar.advance(sending)
        outcomes = [_sent(path, result) for path, result in sent]
        if wait:
            waiting = bar.add_task("waiting", total=len(sent))
            for outcome, (_, result) in zip(outcomes, sent, strict=True):
                outcome.update(_result(result, wait))
                bar.advance(waiting)
    if session.json:
        click.echo(json.dumps(outcomes, indent=2, default=str))
    else:
        _print_submitted(outcomes, wait > 0)
    return EXIT_FAILED if any(o.get("status") not in (None, "ok") for o in outcomes) else 0


def _sent(path: str, result: AsyncResult) -> dict[str, Any]:
    return {"path": path, "task_id": result.id}


def _result(result: AsyncResult, wait: float) -> dict[str, Any]:
    """A task's outcome within ``wait`` seconds: ok with its result, failed with the
    error, or pending."""
    try:
        value = result.get(timeout=wait, propagate=False)
    except ResultTimeout:
        return {"status": "pending", "error": f"no result within {wait:g} s"}
    if result.failed():
        return {"status": "failed", "error": f"{type(value).__name__}: {value}"}
    return {"status": "ok", "result": value}


def _print_submitted(outcomes: list[dict[str, Any]], waited: bool) -> None:
    for outcome in outcomes:
        click.echo(f"{outcome['task_id']}  {shown(outcome['path'])}")
    if not waited:
        return
    for outcome in outcomes:
        name = shown(outcome["path"])
        if outcome["status"] == "ok":
            value = outcome["result"]
            top = value["top_chunks"][0]["score"] if value["top_chunks"] else 0.0
            click.echo(
                f"ok      {name}: {value['type']}, {value['characters']} chars, top {top:.2f}"
            )
        else:
            click.echo(f"{outcome['status'].upper():7} {name}: {shown(outcome['error'])}")


@contextmanager
def demo_redis(explicit: str | None) -> Iterator[str]:
    """The demo's Redis: the one named, else an embedded server of its own for the
    duration of the command (the other commands are about the failures the workers
    recorded, which live in the workers' Redis)."""
    if explicit or os.environ.get("REDIS_URL"):
        yield explicit or os.environ["REDIS_URL"]
        return
    with RedisServer(DATA_DIR / "redis") as server:
        click.echo(f"embedded redis-server at {server.url} (data in {server.data_dir})", err=True)
        yield server.url


@click.command()
@shared(data=False)
@operation
def demo(session: Session) -> int:
    """The pipeline and its recovery end to end on the bundled samples: a worker and
    beat, two documents missing then restored, one corrupt. Exit 0 when recovered.

    \b
    Example:
      docrecovery demo
    """
    with demo_redis(session.options.redis_url) as url:
        session.url = url
        session.app()
        from tasks.demo import run_demo

        return run_demo(url, DATA_DIR / "demo")


cli = build(submit, demo)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; its exit code."""
    try:
        code = cli.main(
            args=None if argv is None else list(argv),
            prog_name="docrecovery",
            standalone_mode=False,
            obj=PipelineApp(),
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return EXIT_FAILED
    return code if isinstance(code, int) else 0
