"""The dashboard's actions — retry, delete, purge, a recovery run — apart from HTTP.

A confirmed form and an API call resolve what they act on and act the same way here:
through the manager operation the CLI uses, logged with who asked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recovery.integration import RUN_LOCK_SECONDS
from recovery.manager import RecoveryManager

from . import filters
from .filters import BadRequest

log = logging.getLogger("recovery.dashboard")

ACTIONS = ("retry", "delete", "purge", "run")


@dataclass(frozen=True)
class Target:
    """What an action acts on: ids chosen by hand, by an error group or by filters."""

    ids: list[str]
    description: str


class Actions:
    """Resolves what an action acts on, and does it, through one manager."""

    def __init__(self, manager: RecoveryManager) -> None:
        self.manager = manager

    def target(self, action: str, fields: Mapping[str, Any]) -> Target:
        """The documents an action acts on, from its scope: ``ids``, ``group`` (an
        error signature) or ``filter`` (the documents page's tab and filters)."""
        if action == "purge":
            return Target([], "every dead document")
        if action == "run":
            return Target([], "the next batch of eligible documents (one recovery run)")
        scope = fields.get("scope") or "ids"
        if scope == "ids":
            ids = filters.doc_ids(list(fields.get("ids") or []))
            return Target(ids, f"{len(ids)} chosen document(s)")
        if scope == "group":
            params = {"signature": fields.get("signature") or ""}
            if not params["signature"]:
                raise BadRequest("scope 'group' needs a signature")
            chosen = filters.selection(params)
            ids = self.manager.select(chosen)
            return Target(ids, f"error group {chosen.signature}: {len(ids)} document(s)")
        if scope == "filter":
            params = {k: str(fields.get(k) or "") for k in ("tab", *filters.FILTERS)}
            if params["tab"] == "waiting":
                raise BadRequest("by filter: choose the failed or dead tab (waiting: pick ids)")
            listing = filters.listing(params)
            ids = self.manager.select(listing.selection)
            return Target(ids, f"{len(ids)} {listing.tab} document(s) matching the filters")
        raise BadRequest(f"scope {scope!r}: expected ids, group or filter")

    def act(self, action: str, target: Target, who: str) -> dict[str, Any]:
        """Do it; the result as the API's JSON, which the done page shows too."""
        manager = self.manager
        result: dict[str, Any]
        if action == "retry":
            retried = manager.retry(target.ids)
            summary = f"{len(retried.resubmitted)} resubmitted, {len(retried.skipped)} skipped"
            result = retried.to_dict()
        elif action == "delete":
            result = {"deleted": manager.delete(target.ids)}
            summary = f"{result['deleted']} deleted"
        elif action == "purge":
            result = {"purged": manager.purge()}
            summary = f"{result['purged']} purged"
        else:
            with manager.tracker.exclusive(RUN_LOCK_SECONDS) as acquired:
                run = manager.run_batch() if acquired else None
            if run is None:
                summary = "another recovery run holds the lock"
                result = {"skipped": summary}
            else:
                summary = f"{len(run.resubmitted)} resubmitted"
                result = run.to_dict()
        log.info("dashboard: %s of %s by %s: %s", action, target.description, who, summary)
        return {"summary": summary, **result}


def api_fields(action: str, body: dict[str, Any]) -> dict[str, Any]:
    """An API body as the fields of a form: ``{"ids": [...]}``, ``{"signature": s}``
    or ``{"filter": {"tab": ..., "category": ...}}``."""
    if action in ("purge", "run"):
        if body:
            raise BadRequest(f"{action} takes no parameters; got {', '.join(sorted(body))}")
        return {}
    known = {"ids", "signature", "filter"}
    if len(set(body) & known) != 1 or set(body) - known:
        raise BadRequest('give exactly one of "ids" (a list), "signature" or "filter" (an object)')
    if "ids" in body:
        ids = body["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest('"ids" must be a list of document ids')
        return {"scope": "ids", "ids": ids}
    if "signature" in body:
        return {"scope": "group", "signature": str(body["signature"])}
    chosen = body["filter"]
    if not isinstance(chosen, dict):
        raise BadRequest('"filter" must be an object of filters')
    filters.check_known(chosen, ("tab", *filters.FILTERS))
    return {"scope": "filter", **{k: str(v) for k, v in chosen.items()}}
