"""A tracked task run, in one shape: what ran, where, under which header.

:class:`RunCall` is what a worker knows of a run when it starts (the in-flight entry
that lets a later sweep record a run whose worker died) and when it fails (the
record's call). :class:`Marker` is the ``docrecovery`` header a resubmission carries.
Both come from untrusted places — message headers, JSON stored in Redis — so they
are validated once, here, and a malformed value is reported and treated as absent
instead of breaking every reader after it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

#: Header a resubmitted task carries: {"doc_id": ..., "attempt": n, "manual": bool}.
HEADER = "docrecovery"
#: Metadata key naming what :func:`bound_metadata` cut: {"keys": [...], "bytes": n}.
CUT = "docrecovery_cut"
#: Cut keys named at most, each to this many characters.
CUT_NAMES, CUT_NAME_CHARS = 20, 100


def repeated_args(args: list[Any], path: str, query: str | None, metadata: Any) -> int | None:
    """How many args there are when they only repeat (path, query, metadata) — then
    they are stored as that count, so metadata is stored once — else None."""
    return len(args) if args and args == [path, query, metadata][: len(args)] else None


def call_args(count: int, path: Any, query: Any, metadata: Any) -> list[Any]:
    """The args :func:`repeated_args` counted, rebuilt."""
    return [path, query, metadata][:count]


@dataclass(frozen=True)
class Marker:
    """The ``docrecovery`` header of a run that recovery (or an operator) resubmitted."""

    doc_id: str
    attempt: int
    manual: bool = False

    @property
    def counted(self) -> bool:
        """Manual retries never use up ``max_retry_count``."""
        return not self.manual

    def header(self) -> dict[str, Any]:
        return {HEADER: {"doc_id": self.doc_id, "attempt": self.attempt, "manual": self.manual}}

    @classmethod
    def parse(cls, raw: Any) -> Marker | None:
        """The marker of a header value, None when there is none or it is malformed."""
        if raw is None or raw == {}:
            return None
        if isinstance(raw, dict):
            doc_id, attempt, manual = raw.get("doc_id"), raw.get("attempt"), raw.get("manual")
            if (
                isinstance(doc_id, str)
                and doc_id
                and isinstance(attempt, int)
                and not isinstance(attempt, bool)
                and attempt >= 0
                and isinstance(manual, bool | None)
            ):
                return cls(doc_id, attempt, bool(manual))
        log.warning("docrecovery: ignoring a malformed %r header: %.200r", HEADER, raw)
        return None


def message_time_limit(raw: Any) -> float | None:
    """The hard limit of a message's ``timelimit`` header ``[hard, soft]``, None when
    it sets none; ValueError when it is not a positive number (the caller reports it
    and falls back to the configured limit, so the run is still tracked)."""
    if not raw:
        return None
    if isinstance(raw, list | tuple):
        hard = raw[0]
        if hard is None or (hard == 0 and not isinstance(hard, bool)):
            return None
        if isinstance(hard, int | float) and not isinstance(hard, bool):
            try:
                limit = float(hard)
            except OverflowError:
                limit = math.inf
            if math.isfinite(limit) and limit > 0:
                return limit
    raise ValueError(f"malformed 'timelimit' header: {raw!r:.200}")


def counted(marker: Marker | None) -> bool:
    """Whether a failure of this run counts as a retry of its document."""
    return marker is None or marker.counted


@dataclass(frozen=True)
class RunCall:
    """One run of a tracked task: its call, where it ran and what limit it had."""

    task_id: str
    task: str
    path: str
    query: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    #: Hard time limit of the run, seconds: when it counts as lost, how a timeout grows.
    time_limit: float | None = None
    marker: Marker | None = None

    def to_json(self, checkin: str = "") -> str:
        """The in-flight entry, without the task id (its key in the in-flight hash);
        args that only repeat path, query and metadata are kept as their count, as
        the record body keeps them, so metadata is stored once. ``checkin`` names the
        check-in that stores it, so the same call applied twice (its reply lost) is
        told from a redelivery of the run (see ``lua/begin.lua``)."""
        # one level deep: asdict would copy every argument and metadata value on the
        # way, a third of a check-in's Python, for the same JSON
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "task_id"}
        if self.marker is not None:
            body["marker"] = asdict(self.marker)
        count = repeated_args(self.args, self.path, self.query, self.metadata)
        if count is not None:
            del body["args"]
            body["nargs"] = count
        if checkin:
            body["checkin"] = checkin
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, task_id: str, raw: str | None) -> RunCall | None:
        """Decode an in-flight entry; None (logged) when it is not one."""
        try:
            body = json.loads(raw) if raw else None
            if not isinstance(body, dict):
                raise TypeError(f"not an object: {type(body).__name__}")
            marker = Marker.parse(body.pop("marker", None))
            body.pop("checkin", None)
            nargs = body.pop("nargs", None)
            if isinstance(nargs, int):
                path, query, meta = body.get("path"), body.get("query"), body.get("metadata", {})
                body["args"] = call_args(nargs, path, query, meta)
            call = cls(task_id=task_id, marker=marker, **body)
            if not isinstance(call.path, str) or not isinstance(call.task, str):
                raise TypeError("path and task must be strings")
            return call
        except (TypeError, ValueError) as exc:
            log.warning("in-flight entry of task %s is unreadable (%s): %.200r", task_id, exc, raw)
            return None


def bound_metadata(metadata: dict[str, Any], limit: int) -> dict[str, Any]:
    """``metadata`` within about ``limit`` bytes of JSON: the largest entries are
    dropped first and named under :data:`CUT`, so whoever reads the record, or runs
    the task again, can tell what is missing."""
    sizes = {key: len(json.dumps([key, value], default=str)) for key, value in metadata.items()}
    total = sum(sizes.values())
    if total <= limit:
        return metadata
    kept, cut = dict(metadata), []
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= limit:
            break
        del kept[key]
        cut.append(str(key)[:CUT_NAME_CHARS])
        total -= sizes[key]
    kept[CUT] = {"keys": cut[:CUT_NAMES], "bytes": sum(sizes.values())}
    return kept


@cache
def _signature(run: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(run)
    except (TypeError, ValueError):
        return None


def describe(
    task: Any,
    task_id: str,
    args: Any,
    kwargs: Any,
    *,
    worker: str | None,
    time_limit: float | None,
    marker: Marker | None,
    max_metadata_bytes: int,
) -> RunCall:
    """The run of a task whose document is its first argument (or one named
    ``document_path``), with ``query`` and ``metadata`` taken by name when its
    signature has them — what any Celery task that takes a path looks like.
    Metadata past ``max_metadata_bytes`` is cut (:func:`bound_metadata`) wherever
    the call holds it, args and kwargs included."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    sig = _signature(task.run)
    values: dict[str, Any] = {}
    if sig is not None:
        try:
            values = dict(sig.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            values = {}
    path = values.get("document_path", args[0] if args else kwargs.get("document_path", ""))
    query, metadata = values.get("query"), values.get("metadata")
    if isinstance(metadata, dict):
        bounded = bound_metadata(metadata, max_metadata_bytes)
        if bounded is not metadata:
            args = [bounded if arg is metadata else arg for arg in args]
            kwargs = {k: bounded if v is metadata else v for k, v in kwargs.items()}
            metadata = bounded
    return RunCall(
        task_id=str(task_id),
        task=str(task.name),
        path=str(path),
        query=None if query is None else str(query),
        metadata=metadata if isinstance(metadata, dict) else {},
        args=args,
        kwargs=kwargs,
        worker=worker,
        time_limit=time_limit,
        marker=marker,
    )
