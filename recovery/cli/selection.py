"""Which documents ``list``, ``retry`` and ``delete`` act on: ids named on the command
line, or the filters of a :class:`~recovery.store.Selection` — an error group
(``--signature``) or ``--all`` of what the other filters match.

A selection is read once, when the command starts, and acted on as that snapshot: a
document that fails again meanwhile is not taken twice, and ``retry`` skips one that
is already being recovered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import click

from recovery.api import DOC_ID
from recovery.cli.text import shown
from recovery.manager import RecoveryManager
from recovery.store import Selection

#: What an error group's signature looks like (recovery/signatures.py).
SIGNATURE = re.compile(r"[0-9a-f]{12}")


class Finite(click.FloatRange):
    """A number in a range, never NaN nor infinite: NaN compares false with any bound,
    so click's FloatRange lets it through (and infinity too, without a bound on that
    side), and ``time.sleep`` or a cutoff computed from it fails or matches nothing."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _signature(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is not None and not SIGNATURE.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a signature: 12 hex digits, as docrecovery analyze or list shows"
        )
    return value


def document_ids(_: click.Context, __: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse what cannot be a document id, as the dashboard does, before Redis is asked:
    an id holding bytes that are not UTF-8 (a shell argument) cannot be sent to it."""
    for doc_id in value:
        if not DOC_ID.fullmatch(doc_id):
            raise click.BadParameter(
                f"'{shown(doc_id)}' is not a document id: 20 hex digits, as docrecovery list shows"
            )
    return value


def document_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """:func:`document_ids` for an argument that names one document."""
    return document_ids(ctx, param, (value,))[0]


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of a :class:`Selection`, passed to the command by their names."""
    decorators = [
        click.option("--category", help="Error category, e.g. file_not_found."),
        click.option("--worker", help="Worker hostname of the last failure."),
        click.option("--query", help="The query the document failed under."),
        click.option(
            "--signature",
            callback=_signature,
            metavar="S",
            help="Error group (12 hex digits, from analyze or list).",
        ),
        click.option(
            "--older-than",
            "older_than_hours",
            type=Finite(min=0),
            metavar="HOURS",
            help="First failed more than HOURS ago.",
        ),
        click.option("--dead/--live", default=None, help="Dead documents only / not dead only."),
        click.option(
            "--corrupt", is_flag=True, default=None, help="Records that cannot be read only."
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def targets(f: Callable[..., Any]) -> Callable[..., Any]:
    """What a command acts on: ids, or ``--all`` of what the filters select (see
    :func:`chosen`), passed as ``doc_ids``, ``all_`` and the filters."""
    f = selection_options(f)
    f = click.option("--all", "all_", is_flag=True, help="Every document the filters match.")(f)
    return click.argument("doc_ids", nargs=-1, metavar="[DOC]...", callback=document_ids)(f)


def selection_of(filters: dict[str, Any], limit: int | None = None) -> Selection:
    """The selection the filters name; ``--corrupt`` with ``--dead``/``--live`` is an
    error (a corrupt record's state cannot be trusted)."""
    if filters["corrupt"] and filters["dead"] is not None:
        raise click.UsageError("--corrupt cannot be combined with --dead or --live")
    return Selection(limit=limit, **filters)


def chosen(
    manager: RecoveryManager, doc_ids: tuple[str, ...], all_: bool, filters: dict[str, Any]
) -> list[str]:
    """The ids named on the command line, else what the filters select with ``--all``
    or ``--signature`` (an error group needs no ``--all``)."""
    selecting = all_ or filters["signature"] is not None
    if doc_ids:
        if selecting or any(value not in (None, False) for value in filters.values()):
            raise click.UsageError("name document ids or select with filters, not both")
        return list(doc_ids)
    if not selecting:
        raise click.UsageError("name document ids, or use --signature S or --all [filters]")
    return manager.select(selection_of(filters))
