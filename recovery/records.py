"""The failed-document record and its Redis encoding.

A record is one Redis hash per document, keyed by :func:`document_id` (a stable hash
of path and query, so the same document under the same query is one record however
often it fails). Field names in Redis are short because there may be millions of
records; ``_FIELDS`` maps them to the dataclass attributes, and the Lua scripts use
the same short names (listed in each script's header). For the same reason empty
fields are not stored, and args that only repeat (path, query, metadata) are stored
as their count (``nargs``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from recovery.calls import RunCall
from recovery.categories import WORKER_LOST
from recovery.errors import CorruptRecord

FAILED = "failed"
CLAIMED = "claimed"
RECOVERING = "recovering"
WAITING = "waiting"
DEAD = "dead"
STATES = (FAILED, CLAIMED, RECOVERING, WAITING, DEAD)


def document_id(path: str, query: str | None = None) -> str:
    """Stable id of a (path, query) pair: 20 hex digits of BLAKE2b."""
    raw = f"{path}\0{query or ''}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def bound_message(message: str, limit: int) -> str:
    """Keep the head and the tail of a long error: the type is at one end, the cause at
    the other, and a 10 MB traceback must not become a 10 MB record."""
    if len(message) <= limit:
        return message
    marker = f"\n... [{len(message) - limit} characters cut] ...\n"
    keep = max(0, limit - len(marker))
    head = keep // 2
    return message[:head] + marker + message[len(message) - (keep - head) :]


@dataclass
class FailedDocumentRecord:
    """One document whose processing failed, with what is needed to run it again."""

    document_path: str
    task_id: str
    error_message: str
    failure_timestamp: float = field(default_factory=time.time)
    retry_count: int = 0
    recovery_attempts: int = 0
    query: str | None = None
    worker_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    first_failure_timestamp: float | None = None
    task_name: str = "tasks.process_document"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    error_category: str = "other"
    state: str = FAILED
    state_reason: str = ""
    failure_count: int = 1
    next_retry_at: float | None = None
    last_recovery_at: float | None = None
    fingerprint: str = ""
    #: Hard time limit (seconds) the failed run had, to grow it for timeouts.
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.first_failure_timestamp is None:
            self.first_failure_timestamp = self.failure_timestamp

    @property
    def doc_id(self) -> str:
        return document_id(self.document_path, self.query)

    def get_failure_age_hours(self, now: float | None = None) -> float:
        """Hours since the document first failed (what retention is measured against)."""
        first = self.first_failure_timestamp or self.failure_timestamp
        return max(0.0, ((now if now is not None else time.time()) - first) / 3600.0)

    @classmethod
    def from_run(
        cls,
        call: RunCall,
        *,
        error_type: str,
        category: str,
        message: str,
        at: float,
        fingerprint: str = "",
    ) -> FailedDocumentRecord:
        """The failure record of one run of a tracked task."""
        return cls(
            document_path=call.path,
            task_id=call.task_id,
            error_message=message,
            failure_timestamp=at,
            query=call.query,
            worker_id=call.worker,
            metadata=call.metadata,
            task_name=call.task,
            args=call.args,
            kwargs=call.kwargs,
            error_type=error_type,
            error_category=category,
            time_limit=call.time_limit,
            fingerprint=fingerprint,
            recovery_attempts=call.marker.attempt if call.marker else 0,
        )

    @classmethod
    def lost(cls, call: RunCall, at: float) -> FailedDocumentRecord:
        """The failure record of a run that checked in and never reported."""
        return cls.from_run(
            call,
            error_type="WorkerLost",
            category=WORKER_LOST,
            message=(
                f"WorkerLost: run {call.task_id} on {call.worker} ended without reporting "
                "success or failure (worker killed, out of memory, or crashed)"
            ),
            at=at,
        )

    def to_redis(self, message_limit: int | None = None) -> dict[str, str]:
        """The hash fields this record is stored as (every value a string), with the
        error message cut to ``message_limit``. Optional fields that are empty or zero
        are left out: with millions of records every absent field saves its name and
        value (``from_redis`` restores the defaults)."""
        out: dict[str, str] = {}
        for attr, (name, kind) in _FIELDS.items():
            value = getattr(self, attr)
            if value is None or (name not in _REQUIRED and value in _EMPTY):
                continue
            out[name] = json.dumps(value, separators=(",", ":")) if kind is _JSON else str(value)
        if message_limit is not None:
            out["msg"] = bound_message(out["msg"], message_limit)
        if self.args and self.args == self._call_args()[: len(self.args)]:
            # args that repeat path, query and metadata are stored as their count
            out["nargs"] = str(len(self.args))
            out.pop("args")
        return out

    def _call_args(self) -> list[Any]:
        return [self.document_path, self.query, self.metadata]

    @classmethod
    def from_redis(cls, key: str, fields: dict[str, str]) -> FailedDocumentRecord:
        """Decode a stored hash; raises CorruptRecord naming what is wrong."""
        missing = [name for name in _REQUIRED if name not in fields]
        if missing:
            raise CorruptRecord(key, "missing field(s) " + ", ".join(missing))
        values: dict[str, Any] = {}
        for attr, (name, kind) in _FIELDS.items():
            raw = fields.get(name)
            if raw is None or (raw == "" and attr in _OPTIONAL):
                continue
            try:
                values[attr] = kind(raw)
            except (ValueError, TypeError) as exc:
                raise CorruptRecord(key, f"field {name!r} holds {raw[:80]!r}: {exc}") from None
        if values.get("state", FAILED) not in STATES:
            raise CorruptRecord(key, f"unknown state {values['state']!r}")
        record = cls(**values)
        if "nargs" in fields and "args" not in fields:
            try:
                record.args = record._call_args()[: int(fields["nargs"])]
            except ValueError:
                raise CorruptRecord(key, f"field 'nargs' holds {fields['nargs'][:80]!r}") from None
        return record


def _json(raw: str) -> Any:
    return json.loads(raw)


_JSON = _json

#: attribute -> (hash field, decoder). Lua scripts read and write the same names.
_FIELDS: dict[str, tuple[str, Any]] = {
    "document_path": ("path", str),
    "query": ("query", str),
    "task_name": ("task", str),
    "args": ("args", _JSON),
    "kwargs": ("kwargs", _JSON),
    "task_id": ("task_id", str),
    "error_type": ("etype", str),
    "error_category": ("cat", str),
    "error_message": ("msg", str),
    "first_failure_timestamp": ("first", float),
    "failure_timestamp": ("last", float),
    "retry_count": ("retries", int),
    "recovery_attempts": ("attempts", int),
    "failure_count": ("failures", int),
    "worker_id": ("worker", str),
    "metadata": ("meta", _JSON),
    "state": ("state", str),
    "state_reason": ("reason", str),
    "next_retry_at": ("next", float),
    "last_recovery_at": ("rec_at", float),
    "fingerprint": ("fp", str),
    "time_limit": ("tlimit", float),
}
_REQUIRED = ("path", "task", "msg", "last", "state")
_EMPTY: tuple[Any, ...] = ("", 0, [], {})
#: Optional numbers that may be stored empty by an older version of the scripts.
_OPTIONAL = {"next_retry_at", "last_recovery_at", "time_limit", "first_failure_timestamp"}
