"""Request parameters into store selections, refusing what cannot be used.

The pages and the JSON API read the same filters as ``docrecovery list``: category,
signature (an error group), worker, query and age in hours, plus the tab (which
index a page walks), a cursor and a page size. An empty value means "any" (what an
HTML form sends for a blank field); an unknown parameter or a value that cannot be
used is a :class:`BadRequest` naming it, never silently ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from recovery.api import DOC_ID
from recovery.store import Selection
from recovery.store.listings import PageIndex, parse_cursor

#: The documents page's tabs: which index each walks and which records it shows.
TABS: tuple[PageIndex, ...] = get_args(PageIndex)
FILTERS = ("category", "signature", "worker", "query", "older_than")
SIGNATURE = re.compile(r"[0-9a-f]{12}")
#: A page size as given: ASCII digits only (str.isdigit also takes '²' and '①', which
#: int() refuses), few enough for int() to read.
PAGE_SIZE = re.compile(r"[0-9]{1,9}")
#: Page sizes a request may ask for.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class BadRequest(ValueError):
    """Raised when a request parameter is unknown or holds a value that cannot be used."""


@dataclass(frozen=True)
class Listing:
    """One documents page as asked: tab, filters, cursor and size."""

    tab: PageIndex
    selection: Selection
    after: str | None
    limit: int


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    return value or None


def check_known(params: Mapping[str, str], known: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")


def selection(params: Mapping[str, str], *, dead: bool | None = None) -> Selection:
    """The filters of ``params`` as a Selection (``dead`` picks the state)."""
    signature = _text(params, "signature")
    if signature is not None and not SIGNATURE.fullmatch(signature):
        raise BadRequest(f"signature {signature!r}: expected 12 hex digits (an error group)")
    older = _text(params, "older_than")
    hours = None
    if older is not None:
        try:
            hours = float(older)
        except ValueError:
            hours = math.nan
        if not math.isfinite(hours) or hours < 0:
            raise BadRequest(f"older_than {older!r}: expected a number of hours >= 0")
    return Selection(
        category=_text(params, "category"),
        worker=_text(params, "worker"),
        query=_text(params, "query"),
        signature=signature,
        older_than_hours=hours,
        dead=dead,
    )


def listing(params: Mapping[str, str]) -> Listing:
    """A documents page request: ``tab``, the filters, ``after`` (cursor), ``limit``."""
    check_known(params, ("tab", *FILTERS, "after", "limit"))
    given = _text(params, "tab") or "failed"
    tab = next((t for t in TABS if t == given), None)
    if tab is None:
        raise BadRequest(f"tab {given!r}: expected one of {', '.join(TABS)}")
    after = _text(params, "after")
    if after is not None:
        try:
            parse_cursor(after)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    raw = _text(params, "limit") or str(DEFAULT_LIMIT)
    if not PAGE_SIZE.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit {raw!r}: expected a whole number from 1 to {MAX_LIMIT}")
    # the failed tab lists live documents; the dead and waiting indexes hold their own
    dead = {"failed": False, "dead": True}.get(tab)
    return Listing(tab, selection(params, dead=dead), after, int(raw))


def doc_ids(values: list[str]) -> list[str]:
    """Document ids as given (form checkboxes, a JSON list), each checked."""
    bad = [v for v in values if not DOC_ID.fullmatch(v)]
    if bad:
        raise BadRequest(f"not a document id: {bad[0]!r} (expected 20 hex digits)")
    if not values:
        raise BadRequest("no document ids given")
    return list(dict.fromkeys(values))
