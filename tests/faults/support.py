"""What the root-cause and fault-injection tests share: documents, waits, Redis readers.

A document that keeps its worker busy is real work, not a patched task: a large HTML
file, whose parsing is pure Python (about half a second per MB on one core). Every
wait polls with a deadline, and a scenario ends with a census of its documents:
each must be processed (its result key exists) or tracked (its record exists).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import redis
from celery import Celery

from recovery.codec import decode_body
from recovery.config import RecoveryConfig
from recovery.keys import Keys
from recovery.records import document_id
from recovery.redis_server import RedisServer
from recovery.spool import Spool
from recovery.summaries import RunSummary
from tasks.documents import result_key

KEYS = Keys()
POLL_SECONDS = 0.02
#: Kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED = "unacked"
QUEUES = ("documents", "recovery", "highmem")
TASK = "tasks.process_document"

#: Worker-side recovery settings that make every failure due at once.
FAST_ENV: dict[str, str] = {
    "DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS": "0",
    "DOCRECOVERY_RETRY_JITTER": "0",
    "DOCRECOVERY_LEASE_GRACE_SECONDS": "1",
    "DOCRECOVERY_MAX_RETRY_COUNT": "3",
    "DOCRECOVERY_ENABLE_PERIODIC_RECOVERY": "false",
}

T = TypeVar("T")
#: ``dedicated_redis(name, *extra_args)`` (tests/faults/conftest.py).
StartRedis = Callable[..., RedisServer]


class Worker(Protocol):
    """The part of ``tests/conftest.py``'s WorkerProcess these tests use."""

    name: str
    process: Any

    @property
    def pid(self) -> int: ...

    def log(self) -> str: ...

    def children(self) -> list[int]: ...

    def kill(self, sig: int = ...) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


def fast_config(**overrides: Any) -> RecoveryConfig:
    """The test side's recovery settings, matching ``FAST_ENV``."""
    values: dict[str, Any] = {
        "min_retry_interval_hours": 0.0,
        "retry_jitter": 0.0,
        "lease_grace_seconds": 1,
        "max_retry_count": 3,
        "enable_periodic_recovery": False,
        "recovery_interval_minutes": 0.01,
        **overrides,
    }
    return RecoveryConfig.from_mapping(values)


# --- documents -------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    """One submitted document: the task's ``(document_path, query)`` and its id."""

    path: str
    query: str | None = None

    @property
    def doc_id(self) -> str:
        return document_id(self.path, self.query)

    @property
    def args(self) -> list[Any]:
        return [self.path, self.query, {}]


def write_text(path: Path, words: int = 300) -> Path:
    path.write_text(" ".join(f"word{i % 97} retry visibility" for i in range(words)))
    return path


def write_slow_html(path: Path, megabytes: float) -> Path:
    """An HTML document whose extraction takes about half a second per MB on one core."""
    path.write_bytes(b"<p><b>alpha</b> <i>beta</i></p>\n" * int(megabytes * 1024 * 1024 / 32))
    return path


def make_batch(
    root: Path,
    count: int,
    *,
    slow: Iterable[int] = (),
    missing: Iterable[int] = (),
    megabytes: float = 2.0,
    query: str = "retry",
) -> list[Doc]:
    """``count`` documents under ``root``: small text files, except the ``slow`` ones
    (large HTML) and the ``missing`` ones (not written yet: see ``restore``)."""
    slow, missing = set(slow), set(missing)
    docs = []
    for n in range(count):
        if n in slow:
            path = write_slow_html(root / f"doc-{n:02}.html", megabytes)
        else:
            path = root / f"doc-{n:02}.txt"
            if n not in missing:
                write_text(path)
        docs.append(Doc(str(path), query))
    return docs


def restore(docs: Iterable[Doc]) -> None:
    """The cause goes away: the missing documents are uploaded."""
    for doc in docs:
        write_text(Path(doc.path))


class Interrupted(BaseException):
    """Stands for an exception raised from a signal handler (a soft time limit's, ^C)."""


@contextlib.contextmanager
def at_call(
    function: str, action: Callable[[], object], after: int = 0, within: str | None = None
) -> Iterator[None]:
    """Run ``action`` as a call of a function named ``function`` starts, the first after
    ``after`` such calls (only calls made inside a call of a function named ``within``
    count, if given): what a signal, a pause or another process would do at that point
    (an exception ``action`` raises is raised there)."""
    calls = itertools.count()

    def hook(frame: FrameType, event: str, _: Any) -> None:
        if (
            event == "call"
            and frame.f_code.co_name == function
            and (within is None or _called_within(frame, within))
            and next(calls) == after
        ):
            action()

    sys.settrace(hook)
    try:
        yield
    finally:
        sys.settrace(None)


def _called_within(frame: FrameType, function: str) -> bool:
    caller = frame.f_back
    while caller is not None and caller.f_code.co_name != function:
        caller = caller.f_back
    return caller is not None


def interrupted_at(
    function: str,
    raising: type[BaseException] = Interrupted,
    after: int = 0,
    within: str | None = None,
) -> contextlib.AbstractContextManager[None]:
    """Raise ``raising`` (a soft time limit's, say) as a call of a function named
    ``function`` starts (inside a call of ``within``, if given), the first after
    ``after`` such calls, as a signal would there: at redis-py's ``parse_response`` a
    command has gone out and its reply is not read yet."""

    def interrupt() -> None:
        raise raising

    return at_call(function, interrupt, after, within)


# --- waiting -----------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after
    ``timeout`` seconds (with ``explain()``, e.g. a worker's log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = explain() if explain else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(POLL_SECONDS)


def wait_steady(
    probe: Callable[[], bool],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
    hold: float = 0.3,
) -> None:
    """Wait until ``probe`` holds and still holds ``hold`` seconds later (a document
    between two script calls of a worker must not pass for settled)."""

    def steady() -> bool:
        if not probe():
            return False
        time.sleep(hold)
        return probe()

    wait_for(steady, timeout, what, explain)


def wait_unchanged(read: Callable[[], T], timeout: float, what: str, hold: float = 0.3) -> T:
    """Wait until ``read()`` gives the same value twice, ``hold`` seconds apart."""
    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(hold)
        value = read()
        if value == last:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} to settle")
        last = value


def log_tail(*workers: Worker, chars: int = 4000) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {w.name} ---\n{w.log()[-chars:]}" for w in workers)


def kill_children(worker: Worker) -> list[int]:
    """SIGKILL the pool's children (not the node), as the OOM killer takes a child."""
    killed = []
    for pid in worker.children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


# --- reading the tracker and the broker ---------------------------------------------


def record(client: redis.Redis, doc_id: str) -> dict[str, Any]:
    """The record hash of a document ({} when untracked), its compressed body opened
    into the same dict (path, task, etype, msg, ...)."""
    fields: dict[str, Any] = client.hgetall(KEYS.record(doc_id))  # type: ignore[assignment]
    body = fields.pop("body", None)
    if isinstance(body, str):
        fields.update(decode_body(body.encode("utf-8", "surrogateescape")))
    return fields


def stats(client: redis.Redis) -> dict[str, int]:
    raw: dict[str, str] = client.hgetall(KEYS.stats)  # type: ignore[assignment]
    return {k: int(float(v)) for k, v in raw.items()}


def inflight_score(client: redis.Redis, task_id: str) -> float | None:
    score = client.zscore(KEYS.inflight, task_id)
    return None if score is None else float(score)


def inflight_calls(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Running tracked tasks: task id -> the call stored when the run checked in."""
    raw: dict[str, str] = client.hgetall(KEYS.inflight_tasks)  # type: ignore[assignment]
    return {task_id: json.loads(call) for task_id, call in raw.items()}


def processed(client: redis.Redis, doc: Doc) -> bool:
    return bool(client.exists(result_key(KEYS, doc.doc_id)))


def messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Kombu messages waiting in ``queue``, oldest first."""
    raw: list[str] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
    return [json.loads(item) for item in reversed(raw)]


def body(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))


def header_doc_ids(client: redis.Redis, queue: str = "documents") -> Counter[str]:
    """How many messages in ``queue`` carry each document id in their recovery header."""
    return Counter(
        m["headers"]["docrecovery"]["doc_id"]
        for m in messages(client, queue)
        if "docrecovery" in m.get("headers", {})
    )


def broker_idle(client: redis.Redis) -> bool:
    """No message waiting in any queue, none delivered and unacknowledged."""
    return not any(client.llen(q) for q in QUEUES) and not client.hlen(UNACKED)


# --- the census every scenario ends with ---------------------------------------------

#: A record in one of these states waits on nothing that is running.
RESTING = {"failed", "waiting", "dead"}


@dataclass(frozen=True)
class Census:
    scenario: str
    submitted: int
    processed: list[Doc]
    tracked: list[Doc]
    lost: list[Doc]

    def line(self) -> str:
        return (
            f"[{self.scenario}] submitted {self.submitted} / processed {len(self.processed)}"
            f" / tracked {len(self.tracked)} / lost {len(self.lost)}"
        )


def take_census(client: redis.Redis, scenario: str, docs: Sequence[Doc]) -> Census:
    """Each document is processed (result key), else tracked (record), else lost.
    The counts are printed (``pytest -s``) and belong in the assertion message."""
    done = [d for d in docs if processed(client, d)]
    tracked = [d for d in docs if d not in done and record(client, d.doc_id)]
    lost = [d for d in docs if d not in done and d not in tracked]
    census = Census(scenario, len(docs), done, tracked, lost)
    print(census.line())
    return census


def assert_every_document_processed(
    client: redis.Redis,
    scenario: str,
    docs: Sequence[Doc],
    timeout: float,
    explain: Callable[[], str],
) -> None:
    """Wait until the batch has settled with no message left in a queue, then check
    that every document was processed and none lost (the census names the rest)."""
    wait_steady(
        lambda: settled(client, docs) and not any(client.llen(q) for q in QUEUES),
        timeout,
        f"the batch to settle after the {scenario}",
        lambda: describe(client, docs) + explain(),
    )
    census = take_census(client, scenario, docs)
    assert (len(census.processed), census.lost) == (len(docs), []), census.line()


def settled(client: redis.Redis, docs: Iterable[Doc], running: Iterable[str] = ()) -> bool:
    """Every document is processed, or tracked in a resting state. Task ids in
    ``running`` (runs of a killed node) may stay in flight, and their documents with
    them: only recovery can find those."""
    calls = inflight_calls(client)
    allowed = set(running)
    if set(calls) - allowed:
        return False
    stranded = {document_id(c["path"], c.get("query")) for t, c in calls.items() if t in allowed}
    for doc in docs:
        if processed(client, doc) or doc.doc_id in stranded:
            continue
        if record(client, doc.doc_id).get("state") not in RESTING:
            return False
    return True


def describe(client: redis.Redis, docs: Iterable[Doc]) -> str:
    """Where each unprocessed document is, for a failed wait's message."""
    lines = [f"in flight: {sorted(inflight_calls(client))}"]
    lines += [f"queue {q}: {client.llen(q)}" for q in QUEUES]
    lines.append(f"unacked: {client.hlen(UNACKED)}")
    for doc in docs:
        if not processed(client, doc):
            fields = record(client, doc.doc_id)
            lines.append(f"{doc.path}: {fields.get('state')} {fields.get('cat')}")
    return "\n".join(lines)


def resubmitted_ids(summaries: Iterable[RunSummary]) -> Counter[str]:
    return Counter(item.doc_id for s in summaries for item in s.resubmitted)


def sending_app(name: str, broker: str, backend: str, **conf: Any) -> Celery:
    """An app that only sends, as a client outside the workers does: JSON, results on
    ``backend``, ``conf`` on top (a Sentinel broker's ``master_name``, say)."""
    app = Celery(name, broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_serializer="json",
        task_default_queue="documents",
        **conf,
    )
    return app


def spooled_events(spool: Path) -> int:
    """Events waiting in a worker's spool directory (a file a replayer takes meanwhile
    counts as empty)."""
    return Spool(spool).count()
