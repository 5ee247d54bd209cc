"""The ``docrecovery`` commands, on click and rich, for any Celery app.

::

    docrecovery status [--watch [SECONDS]] [--json]
    docrecovery list [--dead|--live|--corrupt] [--signature S] [--category C] ...
    docrecovery show DOC
    docrecovery analyze
    docrecovery recover [--dry-run] [--now]        # python main.py --recover
    docrecovery retry DOC... | --signature S | --all [filters]
    docrecovery delete DOC... | --signature S | --all [filters]
    docrecovery purge [--everything]
    docrecovery metrics [--host H] [--port P]       # Prometheus, recovery/exporter.py
    docrecovery dashboard [--host H] [--port P]     # the web UI, recovery/dashboard
    celery -A tasks docrecovery status             # the same, as a Celery sub-command

:data:`docrecovery` is registered with Celery through the ``celery.commands`` entry
point, as Flower registers ``celery flower``; there it uses the app ``-A`` loaded (see
:mod:`recovery.cli.runtime`). The pipeline's own ``docrecovery`` program
(``tasks/cli.py``) is :func:`build` with its ``submit`` and ``demo`` added. A new
command is a click command whose callback is wrapped in ``@operation``, added to
:data:`COMMANDS`.
"""

from __future__ import annotations

import click

from recovery.cli import actions, servers, views
from recovery.cli.runtime import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    AppSource,
    Failed,
    Session,
    check_broker,
    operation,
    shared,
)
from recovery.cli.text import shown

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_UNAVAILABLE",
    "AppSource",
    "Failed",
    "Session",
    "build",
    "check_broker",
    "docrecovery",
    "operation",
    "shared",
    "shown",
]

#: The group's commands, in the order ``--help`` lists them.
COMMANDS: tuple[click.Command, ...] = (
    views.status,
    views.list_,
    views.show,
    views.analyze,
    actions.recover,
    actions.retry,
    actions.delete,
    actions.purge,
    servers.metrics,
    servers.dashboard,
)
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Commands(click.Group):
    """The command group; ``--recover`` before any command is the ``recover`` command
    (``python main.py --recover [--dry-run] [--now]``, as the seed runs it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002
        return list(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--recover" in args:
            at = args.index("--recover")
            if not any(arg in self.commands for arg in args[:at]):
                args = ["recover", *args[:at], *args[at + 1 :]]
        return super().parse_args(ctx, args)


def build(*extra: click.Command) -> click.Group:
    """The ``docrecovery`` group: the recovery commands and ``extra`` ones."""

    @click.group(name="docrecovery", cls=Commands, context_settings=CONTEXT)
    @shared(data=True)
    def group() -> None:
        """Failed documents of a Celery pipeline: what failed, why, what recovery is
        doing, and acting on it. Exit codes: 0 done, 1 the work failed, 2 Redis
        unreachable or refusing, a bad setting or bad usage.

        \b
        python main.py --recover [--redis-url URL] [--verbose] is docrecovery recover.
        Options before the command apply to it: docrecovery --json status.
        """

    for command in (*COMMANDS, *extra):
        group.add_command(command)
    return group


docrecovery = build()
