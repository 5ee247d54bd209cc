"""The failed-document record and its Redis encoding.

A record is one Redis hash per document, keyed by :func:`document_id` (a stable hash
of path and query, so the same document under the same query is one record however
often it fails). It holds two kinds of field:

- the facts the Lua scripts read and write — state, counts, times, category, worker,
  query, task id — each in its own short-named field (``_FIELDS``);
- everything only Python needs to run the document again or show it — path, task
  name, args, kwargs, metadata, error type and message — in one ``body`` field: JSON,
  LZ4-compressed. A 2 KB traceback costs under a kilobyte, and a failure is written
  with a dozen script arguments instead of thirty.

Empty fields are not stored, and args that only repeat (path, query, metadata) are
kept as their count.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

import zstandard

from recovery.calls import RunCall, call_args, repeated_args
from recovery.categories import WORKER_LOST
from recovery.codec import decode_body, encode_body
from recovery.errors import CorruptRecord

FAILED = "failed"
CLAIMED = "claimed"
SENT = "sent"
RECOVERING = "recovering"
WAITING = "waiting"
DEAD = "dead"
STATES = (FAILED, CLAIMED, SENT, RECOVERING, WAITING, DEAD)
#: The seed's pipeline task: what a record made through the seed's API, which names no
#: task, runs again as, and what is tracked unless ``tracked_tasks`` says otherwise. A
#: worker's failure records carry the name of the task that failed.
SEED_TASK = "tasks.process_document"


_T = TypeVar("_T")


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


@dataclass(frozen=True)
class Attempt:
    """One entry of a document's history: a failure (``failed``: when, the task, the
    worker, its category and time limit) or a resubmission (``resubmitted``: when, the
    new task)."""

    kind: Literal["failed", "resubmitted"]
    at: float
    task_id: str
    worker: str = ""
    category: str = ""
    time_limit: float | None = None

    @classmethod
    def parse(cls, line: str) -> Attempt:
        """An entry as history_add (lua/_lib.lua) writes it; fields it lacks are empty."""
        kind, at, task_id, worker, category, limit = (line.split("\t") + [""] * 6)[:6]
        return cls(
            "resubmitted" if kind == "resubmitted" else "failed",
            _float_or(at, 0.0) or 0.0,
            task_id,
            worker,
            category,
            _float_or(limit, None),
        )


def _float_or(raw: str, default: float | None) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return default


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
    task_name: str = SEED_TASK
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
    #: The group of similar errors this one belongs to (see recovery/signatures.py).
    signature: str = ""
    #: Where the error was raised; ``error_message`` is the error itself (type: message).
    traceback: str = ""
    #: The document's attempts as the scripts note them (see :attr:`attempts`).
    history: str = ""

    def __post_init__(self) -> None:
        if self.first_failure_timestamp is None:
            self.first_failure_timestamp = self.failure_timestamp

    @property
    def doc_id(self) -> str:
        return document_id(self.document_path, self.query)

    @property
    def attempts(self) -> list[Attempt]:
        """Each failure and resubmission of this document, oldest first; the last
        HISTORY_KEEP (20) of them."""
        return [Attempt.parse(line) for line in self.history.splitlines() if line]

    def get_failure_age_hours(self, now: float | None = None) -> float:
        """Hours since this failure (``failure_timestamp``), as the seed reads it;
        retention is measured from ``first_failure_timestamp``."""
        at = time.time() if now is None else now
        return max(0.0, (at - self.failure_timestamp) / 3600.0)

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
        traceback: str = "",
    ) -> FailedDocumentRecord:
        """The failure record of one run of a tracked task."""
        return cls(
            document_path=call.path,
            task_id=call.task_id,
            error_message=message,
            traceback=traceback,
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

    def body(self, message_limit: int | None = None) -> bytes:
        """The ``body`` field: what only Python reads, as compressed JSON, with the error
        message and the traceback each cut to ``message_limit``."""
        message, trace = self.error_message, self.traceback
        if message_limit is not None:
            message = bound_message(message, message_limit)
            trace = bound_message(trace, message_limit)
        body: dict[str, Any] = {"path": self.document_path, "task": self.task_name}
        for name, value in (
            ("kwargs", self.kwargs),
            ("meta", self.metadata),
            ("etype", self.error_type),
            ("msg", message),
            ("tb", trace),
        ):
            if value:
                body[name] = value
        count = repeated_args(self.args, self.document_path, self.query, self.metadata)
        if count is not None:
            body["nargs"] = count
        elif self.args:
            body["args"] = self.args
        return encode_body(body)

    def to_redis(self, message_limit: int | None = None) -> dict[str, str | bytes]:
        """The hash this record is stored as. Optional fields that are empty or zero
        are left out (``from_redis`` restores the defaults)."""
        out: dict[str, str | bytes] = {}
        for attr, name in _FIELDS.items():
            value = getattr(self, attr)
            if value is None or (name not in _REQUIRED and value in _EMPTY):
                continue
            out[name] = str(value)
        out["body"] = self.body(message_limit)
        return out

    @classmethod
    def from_redis(cls, key: str, stored: dict[str, Any]) -> FailedDocumentRecord:
        """Decode a stored hash (str values, the body as the client read it); raises
        CorruptRecord naming what is wrong."""
        missing = [name for name in (*_REQUIRED, "body") if name not in stored]
        if missing:
            raise CorruptRecord(key, "missing field(s) " + ", ".join(missing))
        values: dict[str, Any] = {}
        for attr, name in _FIELDS.items():
            raw = stored.get(name)
            if raw is None or raw == "":
                continue
            kind = _KINDS.get(attr, str)
            try:
                values[attr] = strict(kind, raw)
            except (ValueError, TypeError):
                raise CorruptRecord(key, f"field {name!r} holds {str(raw)[:80]!r}") from None
        if values.get("state", FAILED) not in STATES:
            raise CorruptRecord(key, f"unknown state {values['state']!r}")
        body = _body(key, stored["body"])
        record = cls(
            document_path=_text(key, body, "path"),
            task_name=_text(key, body, "task"),
            error_message=str(body.get("msg", "")),
            traceback=str(body.get("tb", "")),
            error_type=str(body.get("etype", "")),
            kwargs=_typed(key, body, "kwargs", dict),
            metadata=_typed(key, body, "meta", dict),
            **values,
        )
        if "nargs" in body:
            count = body["nargs"]
            if type(count) is not int or not 1 <= count <= 3:  # of (path, query, metadata)
                raise CorruptRecord(key, f"body's 'nargs' is {str(count)[:80]!r}")
            record.args = call_args(count, record.document_path, record.query, record.metadata)
        else:
            record.args = _typed(key, body, "args", list)
        return record

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, for the spool (no derived values)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FailedDocumentRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


_NUMBER = {
    int: re.compile(r"-?(0|[1-9][0-9]{0,17})"),
    float: re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"),
}


def strict(kind: type, raw: Any) -> Any:
    """Numbers as the scripts write them: Python's int() and float() also take '02',
    ' 2', '1_0', 20 digits (past a 64-bit integer) and '1e5000' (infinity), which
    Redis's HINCRBY and HINCRBYFLOAT refuse — such a value is corrupt here too."""
    text = str(raw)
    pattern = _NUMBER.get(kind)
    if pattern is not None and not pattern.fullmatch(text):
        raise ValueError(text)
    value = kind(text)
    if kind is float and not math.isfinite(value):
        raise ValueError(text)
    return value


def _body(key: str, raw: Any) -> dict[str, Any]:
    data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogateescape")
    try:
        body = decode_body(data)
    except (zlib.error, zstandard.ZstdError, RuntimeError, ValueError) as exc:
        raise CorruptRecord(key, f"field 'body' cannot be read: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptRecord(key, "field 'body' is not an object")
    return body


def _typed(key: str, body: dict[str, Any], name: str, kind: type[_T]) -> _T:
    """A body's container field, empty when absent: a readable body can still hold a
    value of another type, which must not reach a run as a TypeError."""
    value = body.get(name)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise CorruptRecord(key, f"body's {name!r} is not a {kind.__name__}")
    return value


def _text(key: str, body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise CorruptRecord(key, f"body has no {name!r}")
    return value


#: attribute -> hash field; the Lua scripts read and write the same names.
_FIELDS: dict[str, str] = {
    "query": "query",
    "task_id": "task_id",
    "error_category": "cat",
    "first_failure_timestamp": "first",
    "failure_timestamp": "last",
    "retry_count": "retries",
    "recovery_attempts": "attempts",
    "failure_count": "failures",
    "worker_id": "worker",
    "state": "state",
    "state_reason": "reason",
    "last_recovery_at": "rec_at",
    "fingerprint": "fp",
    "time_limit": "tlimit",
    "signature": "sig",
    "history": "hist",
}
_KINDS: dict[str, type] = {
    "first_failure_timestamp": float,
    "failure_timestamp": float,
    "retry_count": int,
    "recovery_attempts": int,
    "failure_count": int,
    "last_recovery_at": float,
    "time_limit": float,
}
_REQUIRED = ("task_id", "cat", "last", "state", "retries", "failures")
_EMPTY: tuple[Any, ...] = ("", 0, 0.0)
