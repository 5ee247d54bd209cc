"""A resubmission, recognisable where Celery users look: Flower, ``AsyncResult``, events.

Recovery resubmits a document as a NEW task (so a redelivered old message can be told
apart and dropped). Three things tie the new task to the one it replaces, each in a
place Celery's own tools already show:

- **its kwargs as shown** — the message's ``kwargsrepr``, which workers put in their
  task-sent and task-received events and Flower lists, searches and shows on the task
  page, gets a ``docrecovery`` entry: ``'recovery attempt 2 of <task id>'`` or
  ``'manual retry of <task id>'``. Only the text shown changes; the task is called
  with its real kwargs, and the ``docrecovery`` header still carries the marker.
- **its parent** — ``parent_id`` is the task it replaces, so Flower links the new
  task's page to the old one (Parent id) and the old one's to the new (Children).
- **the replaced task's result** — after the send, the old task's meta in the result
  backend gets the new task in Celery's ``children`` (``AsyncResult(old).children``)
  and ``docrecovery: {"replaced_by": <new id>, "attempt": n, "manual": bool}``. Its
  state, error and expiry are kept. This is best effort: a backend that is not a
  key-value store (or is off) has no meta to amend, and a failure to amend is logged,
  never fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.backends.base import BaseKeyValueStoreBackend
from celery.backends.redis import RedisBackend
from celery.utils.saferepr import saferepr

from recovery.calls import HEADER, Marker
from recovery.categories import cut_off

log = logging.getLogger(__name__)

#: As Celery bounds the kwargs it shows (``app.amqp.kwargsrepr_maxsize``).
REPR_MAX = 1024


@dataclass(frozen=True)
class Replacement:
    """A task sent in place of another, for one document."""

    replaced: str
    task_id: str
    attempt: int
    manual: bool

    def meta(self) -> dict[str, Any]:
        return {"replaced_by": self.task_id, "attempt": self.attempt, "manual": self.manual}


def describe(marker: Marker, replaced: str) -> str:
    """What the resubmission is, in words: ``recovery attempt 2 of <task id>``."""
    what = f"task {replaced}" if replaced else f"document {marker.doc_id}"
    if marker.manual:
        return f"manual retry of {what}"
    return f"recovery attempt {marker.attempt} of {what}"


def send_options(marker: Marker, replaced: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``send_task`` options that make the resubmission recognisable (see above)."""
    shown = {**kwargs, HEADER: describe(marker, replaced)}
    options: dict[str, Any] = {
        "headers": marker.header(),
        "kwargsrepr": saferepr(shown, REPR_MAX),
    }
    if replaced:
        options["parent_id"] = replaced
    return options


def link(app: Celery, replacements: Sequence[Replacement]) -> int:
    """Name each replacement in its replaced task's result meta; returns how many were
    amended. Tasks without a stored result (expired, never stored) are left alone."""
    backend = app.backend
    wanted = [r for r in replacements if r.replaced]
    if not wanted or not isinstance(backend, BaseKeyValueStoreBackend):
        return 0
    try:
        keys = [backend.get_key_for_task(r.replaced) for r in wanted]
        amended = []
        for replacement, key, raw in zip(wanted, keys, backend.mget(keys), strict=True):
            meta = backend.decode(raw) if raw is not None else None
            if not isinstance(meta, dict):
                continue
            child = [[replacement.task_id, None], None]  # AsyncResult.as_tuple(), as JSON
            meta["children"] = [*(meta.get("children") or []), child]
            meta[HEADER] = replacement.meta()
            amended.append((key, backend.encode(meta)))
        return _write(backend, amended)
    except Exception as exc:  # the backend's own errors: any kind, never the run's end
        if cut_off(exc):
            raise  # the run's own limit, not the backend's: the run must stop
        log.warning("docrecovery: could not name replacements in the result backend: %s", exc)
        return 0


def _write(backend: BaseKeyValueStoreBackend, amended: list[tuple[Any, Any]]) -> int:
    """Store the amended results; how many were. A Redis backend takes a batch's in one
    round trip, each keeping its expiry (``backend.set`` is a round trip per result,
    and restarts its expiry) and only while it exists: one that expired since it was
    read is not brought back, with no expiry at all. Other key-value stores take them
    one by one."""
    if isinstance(backend, RedisBackend):
        with backend.client.pipeline(transaction=False) as pipe:
            for key, value in amended:
                pipe.set(key, value, keepttl=True, xx=True)
            return sum(bool(stored) for stored in pipe.execute())
    for key, value in amended:
        backend.set(key, value)
    return len(amended)
