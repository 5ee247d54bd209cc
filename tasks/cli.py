"""The ``docrecovery`` command (also ``python main.py``).

::

    docrecovery submit samples/*.txt --query "visibility timeout" --wait 30
    docrecovery status [--json]
    docrecovery recover [--dry-run] [--now]   # same as: python main.py --recover
    docrecovery list [--dead|--live|--corrupt] [--category C] [--worker W] [--query Q] ...
    docrecovery retry DOC_ID... | --all [filters]    # manual: not counted as a retry
    docrecovery delete DOC_ID... | --all [filters]
    docrecovery purge [--everything]       # delete dead documents (or all)
    docrecovery demo

The Redis is ``--redis-url``, else ``REDIS_URL``, else the default the workers use
too (:func:`recovery.store.default_redis_url`). A command that cannot reach it exits 2
naming the URL: it never reports on a fresh empty server. Only ``demo``, given neither,
starts an embedded redis-server on loopback with its data in ``.docrecovery/redis``.
Exit codes: 0 done, 1 the work itself failed, 2 Redis unreachable or bad settings.

Paths are whatever the file system holds, so every path and stored text is printed
through :func:`shown`: one document stays one line, and bytes that are not UTF-8 cannot
crash a command after it already changed something.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from recovery import (
    ConfigError,
    DocumentRecoveryManager,
    RecoveryConfig,
    TrackerFailed,
    TrackerRefused,
    TrackerUnavailable,
)
from recovery.categories import exception_chain
from recovery.redis_server import RedisServer
from recovery.spool import Spool
from recovery.store import Selection, default_redis_url, redact
from recovery.store.connection import DEFAULT_URL

if TYPE_CHECKING:
    from celery import Celery

DATA_DIR = Path(os.environ.get("DOCRECOVERY_DATA_DIR", ".docrecovery"))
#: Documents held back whose reasons `status` shows (the longest waiting first).
HELD_SHOWN = 10
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2
#: Seconds the broker gets to accept a connection and answer before submit gives up.
BROKER_CHECK_SECONDS = 3.0

#: Characters that would break a line apart, hide text or be ambiguous when printed:
#: C0 and C1 controls, DEL, line and paragraph separators, the backslash that starts an
#: escape, and lone surrogates (undecodable bytes of a path, see os.fsdecode).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]")
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: object) -> str:
    """``text`` as one line of printable text, escaped the way Python writes string
    literals; an undecodable byte of a path shows as ``\\xNN``, the byte itself."""
    return _UNPRINTABLE.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")


def safe_streams() -> None:
    """Escape, rather than die on, what the terminal's encoding cannot take: text that
    does not pass through ``shown`` (a log line, an error message) may hold a path."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


@contextmanager
def redis_url_for(command: str, explicit: str | None) -> Iterator[str]:
    """The Redis ``command`` uses: :func:`default_redis_url`'s. Only the demo, given no
    URL at all, runs on an embedded server of its own for the duration of the command:
    the others are about the failures the workers recorded, which live in that Redis."""
    if command != "demo" or explicit or os.environ.get("REDIS_URL"):
        yield default_redis_url(explicit)
        return
    with RedisServer(DATA_DIR / "redis") as server:
        print(f"embedded redis-server at {server.url} (data in {server.data_dir})", file=sys.stderr)
        yield server.url


def use_redis(url: str) -> None:
    """Point the pipeline app, and any child process, at ``url``."""
    from tasks.app import app

    os.environ["REDIS_URL"] = url
    app.conf.update(broker_url=url, result_backend=url)


class BrokerUnavailable(Exception):
    """Raised when the broker cannot be reached or refuses us; exits with code 2."""


def check_broker(app: Celery) -> None:
    """Connect to the broker once with short timeouts, so an unreachable Redis or a
    wrong password ends ``submit`` at once with its cause, not after Celery's
    publish retries and a page of traceback."""
    quick = {"socket_connect_timeout": BROKER_CHECK_SECONDS, "socket_timeout": BROKER_CHECK_SECONDS}
    with app.connection_for_write(transport_options=quick) as connection:
        try:
            connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        except connection.connection_errors as exc:
            raise BrokerUnavailable(broker_problem(exc)) from exc


def broker_problem(exc: BaseException) -> str:
    """The cause of a failed broker connection in a few words."""
    for link in exception_chain(exc):
        if isinstance(link, redis.AuthenticationError):
            return "authentication failed"
        if isinstance(link, redis.TimeoutError | TimeoutError):
            return "timeout"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def cmd_submit(args: argparse.Namespace) -> int:
    from tasks.app import app

    check_broker(app)
    ids = [
        app.send_task("tasks.process_document", args=[str(Path(p).resolve()), args.query, {}])
        for p in args.paths
    ]
    for path, result in zip(args.paths, ids, strict=True):
        print(f"{result.id}  {shown(path)}")
    if not args.wait:
        return 0
    failed = 0
    for path, result in zip(args.paths, ids, strict=True):
        value = result.get(timeout=args.wait, propagate=False)
        name = shown(path)
        if result.failed():
            failed += 1
            print(f"FAILED  {name}: {type(value).__name__}: {shown(value)}")
        else:
            top = value["top_chunks"][0]["score"] if value["top_chunks"] else 0.0
            print(f"ok      {name}: {value['type']}, {value['characters']} chars, top {top:.2f}")
    return EXIT_FAILED if failed else 0


def cmd_recover(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        if args.dry_run:
            summary = manager.preview(force=args.now)
        else:
            summary = manager.recover_all(force=args.now)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif args.dry_run:
        plan = summary["would_resubmit"]
        print(f"dry run: the next batch would resubmit {len(plan)} document(s)")
        for verb, key in (("resubmit", "would_resubmit"), ("hold", "would_wait")):
            for item in summary[key]:
                print(f"  {verb:8} {shown(item['path'])}  -> {item['queue']}: {shown(item['why'])}")
        for doc_id in summary["corrupt"]:
            print(f"  corrupt  {doc_id}: record cannot be decoded")
    else:
        sent = summary["resubmitted"]
        status = summary["status"]
        held = summary["waiting"]
        print(
            f"recovery: {len(sent)} resubmitted in {summary['batches']} batch(es), "
            f"{len(held)} held back"
        )
        for item in sent:
            print(f"  {shown(item['path'])}  attempt {item['attempt']} -> {item['queue']}")
        for item in held:
            print(f"  held     {item['doc_id']}: {shown(item['reason'])}")
        print_status(status)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        status = manager.status()
        status["environments"] = manager.environments()
        status["spooled_events_here"] = Spool(manager.config.spool_dir).count()
        status["warnings"] = manager.tracker.warnings()
        status["held_back"] = [
            {"doc_id": r.doc_id, "path": r.document_path, "reason": r.state_reason}
            for r in manager.tracker.reports.held(HELD_SHOWN)
        ]
    status["redis"] = redact(args.url)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(f"redis: {status['redis']}")
        print_status(status)
        for held in status["held_back"]:
            print(f"  waiting  {held['doc_id']}  {shown(held['reason'])}")
        envs = ", ".join(f"{shown(w)} gen {g}" for w, g in status["environments"].items())
        print(f"worker environments: {envs or 'none recorded'}")
        if status["spooled_events_here"]:
            print(f"{status['spooled_events_here']} failure event(s) spooled on this host")
        for warning in status["warnings"]:
            print(f"WARNING: {shown(warning)}")
    return 0


def print_status(status: dict[str, Any]) -> None:
    m = status["recovery_metrics"]
    print(
        f"tracked {status['total_failed_documents']}: {status['eligible_for_recovery']} due now, "
        f"{status['scheduled']} due later, {status['exhausted']} out of retries, "
        f"{status['in_recovery']} in recovery, {status['waiting']} waiting, "
        f"{status['dead']} dead, {status['corrupt']} corrupt"
    )
    print(
        f"recoveries: {m['recovery_attempts']} attempted, {m['successful_recoveries']} succeeded,"
        f" {m['failed_recoveries']} failed ({m['recovery_success_rate']:.0%}),"
        f" average {m['average_recovery_time']:.2f}s"
    )
    analysis = status.get("analysis")
    if analysis and analysis["error_categories"]:
        cats = ", ".join(f"{k} {v}" for k, v in analysis["error_categories"].items())
        print(f"by category: {cats}")


@contextmanager
def _manager(args: argparse.Namespace) -> Iterator[DocumentRecoveryManager]:
    from tasks.app import app

    manager = DocumentRecoveryManager(args.url, recovery_config(args), app=app)
    try:
        yield manager
    finally:
        manager.close()


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(
        category=args.category,
        worker=args.worker,
        query=args.query,
        older_than_hours=args.older_than,
        dead=args.dead,
        limit=getattr(args, "limit", None),
        corrupt=getattr(args, "corrupt", None),
    )


def _chosen(args: argparse.Namespace, manager: DocumentRecoveryManager) -> list[str]:
    """The ids named on the command line, else those the filters select with --all."""
    if args.doc_ids:
        return list(args.doc_ids)
    if not args.all:
        raise UsageError(f"docrecovery {args.command}: name document ids or use --all")
    return manager.select(_selection(args))


class UsageError(Exception):
    """Raised when a command's arguments cannot be acted on; exits with code 2."""


def cmd_list(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        ids = manager.select(_selection(args))
        records = manager.tracker.reports.get_records(ids)
    if args.json:
        print(json.dumps([vars(r) | {"doc_id": r.doc_id} for r in records], indent=2))
        return 0
    for r in records:
        print(
            f"{r.doc_id}  {r.state:10} {r.error_category:14} retries {r.retry_count}"
            f"  {shown(r.document_path)}  {shown(r.state_reason)}"
        )
    # every selected id is listed: one whose record cannot be read says so
    readable = {r.doc_id for r in records}
    for doc_id in ids:
        if doc_id not in readable:
            print(f"{shown(doc_id)}  {'corrupt':10} record cannot be read (delete or purge it)")
    print(f"{len(ids)} document(s)")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        result = manager.retry(_chosen(args, manager))
    for item in result["resubmitted"]:
        print(f"resubmitted {item['doc_id']}  {shown(item['path'])} -> {item['queue']}")
    for doc_id in result["skipped"]:
        print(f"skipped     {shown(doc_id)}  (not tracked, or already being recovered)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        print(f"deleted {manager.delete(_chosen(args, manager))} document(s)")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    with _manager(args) as manager:
        removed = manager.purge(dead_only=not args.everything)
    print(f"purged {removed} {'tracked' if args.everything else 'dead'} document(s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.demo import run_demo

    return run_demo(args.url, DATA_DIR / "demo")


def recovery_config(args: argparse.Namespace) -> RecoveryConfig:
    return RecoveryConfig.from_env({"verbose": True} if args.verbose else {})


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the command (``--json status`` or ``status --json``)."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--redis-url", help=f"Redis to use (default: $REDIS_URL, else {DEFAULT_URL})", **default
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging", **default)
    parser.add_argument("--json", action="store_true", help="print JSON", **default)
    parser.add_argument("--dry-run", action="store_true", help="recover: change nothing", **default)
    parser.add_argument(
        "--now", action="store_true", help="recover: ignore every backoff", **default
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docrecovery", description="Celery document pipeline with failure recovery."
    )
    _add_common(parser, top=True)
    parser.add_argument("--recover", action="store_true", help="same as the recover command")
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, top=False)
    sub = parser.add_subparsers(dest="command")
    submit = sub.add_parser("submit", parents=[common], help="send documents to the pipeline")
    submit.add_argument("paths", nargs="+")
    submit.add_argument("--query")
    submit.add_argument("--wait", type=float, default=0, help="seconds to wait for results")
    sub.add_parser("recover", parents=[common], help="resubmit every eligible failed document")
    sub.add_parser("status", parents=[common], help="counts, metrics and failure analysis")
    sub.add_parser("demo", parents=[common], help="pipeline and recovery on the bundled samples")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--category", help="error category, e.g. file_not_found")
    filters.add_argument("--worker", help="worker hostname of the last failure")
    filters.add_argument("--query", help="the query the document failed under")
    filters.add_argument("--older-than", type=float, metavar="HOURS", help="first failed before")
    state = filters.add_mutually_exclusive_group()
    state.add_argument("--dead", action="store_true", default=None, help="dead documents only")
    state.add_argument("--live", dest="dead", action="store_false", help="not dead only")
    state.add_argument(
        "--corrupt", action="store_true", default=None, help="unreadable records only"
    )
    listing = sub.add_parser("list", parents=[common, filters], help="tracked documents")
    listing.add_argument("--limit", type=int)
    for name, text in (("retry", "resubmit now (manual: not counted)"), ("delete", "forget")):
        cmd = sub.add_parser(name, parents=[common, filters], help=text)
        cmd.add_argument("doc_ids", nargs="*", metavar="DOC_ID")
        cmd.add_argument("--all", action="store_true", help="every document the filters match")
    purge = sub.add_parser("purge", parents=[common], help="delete dead documents")
    purge.add_argument("--everything", action="store_true", help="delete every tracked one")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": cmd_submit,
    "recover": cmd_recover,
    "status": cmd_status,
    "list": cmd_list,
    "retry": cmd_retry,
    "delete": cmd_delete,
    "purge": cmd_purge,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "recover" if args.recover else args.command
    if command is None:
        build_parser().print_help()
        return EXIT_UNAVAILABLE
    safe_streams()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with redis_url_for(command, args.redis_url) as url:
            use_redis(url)
            args.url = url
            try:
                return COMMANDS[command](args)
            except TrackerRefused as exc:
                print(f"docrecovery: Redis at {redact(url)} refused: {exc}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            except (TrackerUnavailable, BrokerUnavailable) as exc:
                print(f"docrecovery: cannot reach Redis at {redact(url)}: {exc}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            except TrackerFailed as exc:
                print(f"docrecovery: Redis at {redact(url)} failed: {exc}", file=sys.stderr)
                return EXIT_FAILED
    except ConfigError as exc:
        print(f"docrecovery: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNAVAILABLE
