"""What every command shares: its options, its Redis, config and Celery app, and how
its errors become one line on stderr and an exit code.

A command's callback takes a :class:`Session` first (``@operation``). The session
resolves, once, from the command line and the context the command runs in:

- standalone (``docrecovery``, ``python main.py``): the Redis is ``--redis-url``, else
  ``REDIS_URL``, else the default (:func:`~recovery.store.default_redis_url`), and the
  :class:`AppSource` the entry point passes as ``obj`` points its app at it;
- ``celery -A APP docrecovery ...``: the app is the one Celery loaded, its broker and
  backend as configured; the Redis is ``--redis-url``, else the one the app's
  installed recovery records failures in (``REDIS_URL`` or the app's Redis broker).

Exit codes: 0 done, 1 the work itself failed, 2 Redis unreachable or refusing, a bad
setting or bad usage, or a server's address it cannot listen on.
"""

from __future__ import annotations

import functools
import io
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import click
from celery import Celery

from recovery.broker import BROKER_URL_ENV
from recovery.config import RecoveryConfig
from recovery.errors import (
    CannotListen,
    ConfigError,
    CorruptCounter,
    CorruptRecord,
    RecoveryError,
    TrackerBusy,
    TrackerFailed,
    TrackerRefused,
    TrackerUnavailable,
)
from recovery.integration import Recovery, installed
from recovery.manager import RecoveryManager
from recovery.resubmit import sender_app
from recovery.store import default_redis_url, redact
from recovery.store.redis_errors import connection_problem
from recovery.store.urls import DEFAULT_URL, check_url

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2
#: Seconds the broker gets to accept a connection and answer before a check gives up.
BROKER_CHECK_SECONDS = 3.0
_OPTIONS = "docrecovery.options"


@runtime_checkable
class AppSource(Protocol):
    """What a standalone entry point passes as click's ``obj``: its Celery app,
    pointed at the Redis the command uses."""

    def app_for(self, redis_url: str) -> Celery: ...


@dataclass
class Options:
    """The options every command accepts before or after its name."""

    redis_url: str | None = None
    verbose: bool = False
    json: bool = False


def options_of(ctx: click.Context) -> Options:
    options: Options = ctx.meta.setdefault(_OPTIONS, Options())
    return options


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a shared option given at either level (``--json status``, ``status --json``)."""
    if value is not None and value is not False and param.name:
        setattr(options_of(ctx), param.name, value)


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep ``--redis-url`` as :func:`_remember` does; an empty one is refused. Left out,
    the option falls back to ``$REDIS_URL`` and the default, but given empty it names
    no Redis: most likely a variable that was not set (``--redis-url "$URL"``), and
    falling back would act on a Redis nobody named."""
    if value == "":
        raise click.BadParameter(
            "an empty URL names no Redis: give one, or leave the option out for"
            f" $REDIS_URL, else {DEFAULT_URL}",
            ctx,
            param,
        )
    _remember(ctx, param, value)


def shared(*, data: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--redis-url`` and ``--verbose``; ``--json`` too for a command that prints data."""
    decorators = [
        click.option(
            "--redis-url",
            metavar="URL",
            expose_value=False,
            callback=_remember_url,
            help=f"Redis to use (default: $REDIS_URL, else {DEFAULT_URL}).",
        ),
        click.option(
            "--verbose", is_flag=True, expose_value=False, callback=_remember, help="Debug logs."
        ),
    ]
    if data:
        decorators.append(
            click.option(
                "--json",
                is_flag=True,
                expose_value=False,
                callback=_remember,
                help="Print JSON for scripts.",
            )
        )

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


class BrokerUnavailable(Exception):
    """Raised when the broker cannot be reached or refuses us; exits with code 2,
    naming the broker by its masked URL: it need not be the tracker's Redis."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(problem)
        self.url = url
        self.problem = problem


class Failed(Exception):
    """Raised when a command's own work fails (nothing to show, a corrupt record);
    exits with code 1 and the message."""


class Session:
    """One command's Redis, config and Celery app."""

    def __init__(self, ctx: click.Context) -> None:
        self.options = options_of(ctx)
        self._source = ctx.obj
        self._app: Celery | None = None
        self.url = self._resolve_url()
        # before anything builds on it (the pipeline's app derives its broker's URL)
        check_url(self.url)

    @property
    def json(self) -> bool:
        return self.options.json

    def _celery_app(self) -> Celery | None:
        """The app ``celery -A`` loaded, when running as its sub-command."""
        from celery.bin.base import CLIContext

        return self._source.app if isinstance(self._source, CLIContext) else None

    def _recovery(self) -> Recovery | None:
        """The recovery installed on the app Celery loaded, if any."""
        app = self._celery_app()
        if app is None:
            return None
        try:
            return installed(app)
        except RecoveryError:
            return None

    def _resolve_url(self) -> str:
        recovery = self._recovery()
        if self.options.redis_url or recovery is None:
            return default_redis_url(self.options.redis_url)
        return recovery.redis_url

    def config(self) -> RecoveryConfig:
        """The app's recovery settings under Celery (its key prefix, its policy), else
        ``DOCRECOVERY_*``; ``--verbose`` turns on the recovery's debug logs."""
        recovery = self._recovery()
        config = recovery.config if recovery else RecoveryConfig.from_env()
        return config.replace(verbose=True) if self.options.verbose else config

    def app(self) -> Celery:
        """The Celery app that sends what this command sends: the one Celery loaded, else
        the entry point's, pointed at ``self.url``, else a bare sender."""
        if self._app is None:
            source = self._source
            self._app = self._celery_app() or (
                source.app_for(self.url) if isinstance(source, AppSource) else sender_app(self.url)
            )
        return self._app

    @contextmanager
    def manager(self) -> Iterator[RecoveryManager]:
        manager = RecoveryManager(self.url, self.config(), app=self.app())
        try:
            yield manager
        finally:
            manager.close()


def operation(command: Callable[..., int]) -> Callable[..., None]:
    """Run ``command(session, **params)``; its exit code, and its errors as one line on
    stderr with the code they mean. Apply below click's decorators."""

    @functools.wraps(command)
    @click.pass_context
    def run(ctx: click.Context, /, **params: Any) -> None:
        _setup(options_of(ctx).verbose)
        code = _guarded(ctx, command, params)
        if code:
            ctx.exit(code)

    return run


def _guarded(ctx: click.Context, command: Callable[..., int], params: dict[str, Any]) -> int:
    where = "Redis"
    try:
        session = Session(ctx)
        where = f"Redis at {redact(session.url)}"
        return command(session, **params)
    except CorruptCounter as exc:  # a refusal of the scripts, not of the server
        return _fail(f"{where}: {exc}", EXIT_FAILED)
    except TrackerRefused as exc:
        return _fail(f"{where} refused: {exc}", EXIT_UNAVAILABLE)
    except TrackerBusy as exc:
        return _fail(f"{where} cannot serve now: {exc}", EXIT_UNAVAILABLE)
    except TrackerUnavailable as exc:
        return _fail(f"cannot reach {where}: {exc}", EXIT_UNAVAILABLE)
    except BrokerUnavailable as exc:
        return _fail(f"cannot reach the broker at {exc.url}: {exc.problem}", EXIT_UNAVAILABLE)
    except TrackerFailed as exc:
        return _fail(f"{where} failed: {exc}", EXIT_FAILED)
    except (ConfigError, CannotListen) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except (Failed, CorruptRecord) as exc:
        return _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    click.echo(f"docrecovery: {message}", err=True)
    return code


def _setup(verbose: bool) -> None:
    """Logs at the chosen level; stdout and stderr escape, rather than die on, what the
    terminal's encoding cannot take (a log line or error message may hold a path)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def check_broker(app: Celery) -> None:
    """Connect to the broker once with short timeouts, so an unreachable Redis or a
    wrong password ends a command at once with its cause, not after Celery's publish
    retries and a page of traceback. A scheme kombu has no transport for is a bad
    setting (its KeyError said so in a traceback)."""
    quick = {"socket_connect_timeout": BROKER_CHECK_SECONDS, "socket_timeout": BROKER_CHECK_SECONDS}
    named = app.conf.broker_write_url or app.conf.broker_url
    try:
        connection = app.connection_for_write(transport_options=quick)
    except KeyError as exc:
        allowed = f"a broker URL of a transport kombu has ({exc.args[0]})"
        raise ConfigError(BROKER_URL_ENV, redact(str(named)), allowed) from None
    where = redact(named) if named else connection.as_uri()
    with connection:
        try:
            connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        except connection.connection_errors as exc:
            raise BrokerUnavailable(where, connection_problem(exc)) from exc
