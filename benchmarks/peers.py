"""The peers' failure paths, as same-run baselines for the figures (``run.py``).

Each peer does, on the bench Redis, what its own code does when a job fails, with the
payload our figures use (a 100-character path, the query, a 2 KB traceback):

- RQ: a real job, enqueued, dequeued and started as its worker does, then failed by
  ``Worker.handle_job_failure`` (job hash saved with ``exc_info``, a failure Result,
  the job moved from the started to the ``FailedJobRegistry``, worker counters).
- Dramatiq: a real ``RedisBroker``, and what its ``Retries`` middleware does with a
  failed message: ``retries`` and ``traceback`` in the message options, the backoff,
  then ``broker.enqueue(message, delay=...)``.
- Celery: what a worker does on ``self.retry(exc=..., countdown=...)``: the task's own
  ``retry`` sends the new message with an ETA to the Redis broker, and the tracer
  stores the RETRY state with the traceback in the Redis result backend.

Only the Redis work of a failure is timed, on both sides: logging, exception handlers
and running the job itself are left out. rq and dramatiq are bench-only dependencies
(the ``bench`` extra), imported here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from celery import Celery
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff
from dramatiq.middleware import Retries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.utils import now as rq_now

#: The function our pipeline runs, as RQ, Dramatiq and Celery would name it.
TASK = "tasks.process_document"
QUEUE = "documents"
#: The id of the job whose failure RQ's loader copies.
TEMPLATE_ID = "bench-template-job"
#: A job taken by the worker: the job and its execution.
Started = tuple[Job, Any]


@dataclass(frozen=True)
class Payload:
    """What every failure carries: the documents' paths, their query, the traceback."""

    paths: Sequence[str]
    query: str
    traceback: str


def memory_of_every_key(client: redis.Redis, batch: int = 1000) -> int:
    """Sum of MEMORY USAGE (exact: every element sampled) over the whole database."""
    total = 0
    names = list(client.scan_iter(count=batch))
    for low in range(0, len(names), batch):
        pipe = client.pipeline(transaction=False)
        for name in names[low : low + batch]:
            pipe.memory_usage(name, samples=0)
        total += sum(int(n or 0) for n in pipe.execute())
    return total


# --- RQ ------------------------------------------------------------------------------


class RQ:
    """An RQ queue and worker on the bench Redis (RQ wants raw bytes replies)."""

    def __init__(self, url: str) -> None:
        logging.getLogger("rq").setLevel(logging.WARNING)  # its worker logs every job
        self.client = redis.Redis.from_url(url)
        self.queue = Queue(QUEUE, connection=self.client)
        self.worker = Worker([self.queue], name="bench-rq-worker", connection=self.client)
        self.registry = FailedJobRegistry(queue=self.queue)

    def close(self) -> None:
        self.client.close()

    def started(self, payload: Payload, ids: Sequence[str] | None = None) -> list[Started]:
        """Enqueue a job per path, then take each as a worker does: dequeue, execution
        and started registry, job marked started. Untimed: this is not the failure."""
        for i, path in enumerate(payload.paths):
            self.queue.enqueue(TASK, path, payload.query, job_id=ids[i] if ids else None)
        return [self._take() for _ in payload.paths]

    def _take(self) -> Started:
        taken = self.worker.dequeue_job_and_maintain_ttl(timeout=None)
        if taken is None:
            raise RuntimeError("rq: the queue ran dry before every job was taken")
        job = taken[0]
        execution = self.worker.prepare_execution(job)
        self.worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started_at = rq_now()
        return job, execution

    def fail(self, started: Sequence[Started], traceback: str) -> None:
        """RQ worker's ``_finalize_failure`` minus logging and exception handlers."""
        worker, queue = self.worker, self.queue
        for job, execution in started:
            worker.handle_execution_ended(job, queue, job.failure_callback_timeout)
            worker.handle_job_failure(
                job,
                queue,
                started_job_registry=queue.started_job_registry,
                exc_string=traceback,
                execution=execution,
            )

    def failed_count(self) -> int:
        """What an RQ dashboard asks for: the registry's count (cleanup, then ZCARD)."""
        return int(self.registry.count)

    def load_failed(self, payload: Payload, count: int, batch: int = 1000) -> None:
        """``count`` failed jobs on an empty database, each written as one real
        failure wrote its keys: the keys named by its id DUMPed once and RESTOREd under
        each new id (with their TTL), the id added to the sorted sets the real job was
        in, at its score. Checked first against real failures, like bench.py's loader."""
        self.check_loader(payload)
        keys, members = self._template(payload)
        pipe = self.client.pipeline(transaction=False)
        for low in range(0, count, batch):
            ids = [job_ident(i) for i in range(low, min(count, low + batch))]
            for name, (ttl, dump) in keys.items():
                for job_id in ids:
                    pipe.restore(name.replace(TEMPLATE_ID, job_id), ttl, dump)
            for name, score in members.items():
                pipe.zadd(name, dict.fromkeys(ids, score))
            pipe.execute()

    def _template(self, payload: Payload) -> tuple[dict[str, tuple[int, bytes]], dict[str, float]]:
        """Fail one real job with a known id on an empty database, read back the keys
        named by its id and its memberships in sorted sets, and empty it again."""
        self.client.flushdb()
        self.fail(self.started(payload_of(payload, 1), [TEMPLATE_ID]), payload.traceback)
        keys: dict[str, tuple[int, bytes]] = {}
        members: dict[str, float] = {}
        for name in map(bytes.decode, self.client.scan_iter()):
            if TEMPLATE_ID in name:
                dump: bytes = self.client.dump(name)  # type: ignore[assignment]
                keys[name] = (max(int(self.client.pttl(name)), 0), dump)
            elif self.client.type(name) == b"zset":
                score = self.client.zscore(name, TEMPLATE_ID)
                if score is not None:
                    members[name] = float(score)
        if self.registry.key not in members:
            raise RuntimeError("rq: the template job is not in the FailedJobRegistry")
        self.client.flushdb()
        return keys, members

    def check_loader(self, payload: Payload) -> None:
        """The loader must leave the keys (name, type, expiring or not) and sorted-set
        memberships three real failures leave; values hold times and differ."""
        ids = [job_ident(i) for i in range(3)]
        self.client.flushdb()
        self.fail(self.started(payload_of(payload, 3), ids), payload.traceback)
        real = self._layout(ids)
        self.client.flushdb()
        keys, members = self._template(payload)
        for name, (ttl, dump) in keys.items():
            for job_id in ids:
                self.client.restore(name.replace(TEMPLATE_ID, job_id), ttl, dump)
        for name, score in members.items():
            self.client.zadd(name, dict.fromkeys(ids, score))
        cloned = self._layout(ids)
        self.client.flushdb()
        if real != cloned:
            raise RuntimeError(f"rq loader differs from a real failure: {real} != {cloned}")

    def _layout(self, ids: Sequence[str]) -> set[tuple[str, str, bool]]:
        """Per-job keys as (name, type, expires) and (zset, job id) memberships."""
        out: set[tuple[str, str, bool]] = set()
        for name in map(bytes.decode, self.client.scan_iter()):
            kind = str(self.client.type(name), "ascii")  # type: ignore[arg-type]
            if any(job_id in name for job_id in ids):
                out.add((name, kind, int(self.client.ttl(name)) > 0))
            elif kind == "zset":
                out |= {
                    (name, job_id, True)
                    for job_id in ids
                    if self.client.zscore(name, job_id) is not None
                }
        return out


def job_ident(i: int) -> str:
    return f"bench-job-{i:012d}"


def payload_of(payload: Payload, count: int) -> Payload:
    """The payload's first ``count`` documents."""
    return Payload(payload.paths[:count], payload.query, payload.traceback)


# --- Dramatiq --------------------------------------------------------------------------


class Dramatiq:
    """A RedisBroker on the bench Redis, with its default middleware and our actor."""

    def __init__(self, url: str) -> None:
        self.broker = RedisBroker(url=url)
        self.actor = dramatiq.actor(
            _never_run, actor_name=TASK, queue_name=QUEUE, broker=self.broker
        )
        self.retries = next(m for m in self.broker.middleware if isinstance(m, Retries))

    def close(self) -> None:
        self.broker.close()

    def delivered(self, payload: Payload) -> list[Message[Any]]:
        """Messages as a consumer holds them: built by the actor, with the Redis id
        the broker gave them. Untimed: this is not the failure."""
        return [
            self.actor.message(path, payload.query).copy(options={"redis_message_id": str(n)})
            for n, path in enumerate(payload.paths)
        ]

    def fail(self, messages: Sequence[Message[Any]], traceback: str) -> None:
        """The Retries middleware's ``after_process_message`` for a retryable error:
        retries counted, the traceback and requeue time in the options, the backoff,
        the message enqueued on the delay queue. Its ``traceback.format_exc`` is
        replaced by the payload's traceback, so both sides store the same text."""
        retries = self.retries
        for message in messages:
            count = message.options.setdefault("retries", 0)
            message.options["retries"] += 1
            message.options["traceback"] = traceback
            message.options["requeue_timestamp"] = int(time.time() * 1000)
            max_backoff = min(retries.max_backoff, DEFAULT_MAX_BACKOFF)
            _, delay = compute_backoff(count, factor=retries.min_backoff, max_backoff=max_backoff)
            self.broker.enqueue(message, delay=delay)


def _never_run(document_path: str, query: str | None = None) -> None:
    """The actor's body: the bench only fails its messages."""


# --- Celery's own retry ----------------------------------------------------------------


class CeleryRetry:
    """A Celery app on the bench Redis (broker and result backend), with a task of
    our task's name, whose ``retry`` is called as in a worker."""

    def __init__(self, url: str) -> None:
        self.app = Celery("bench-peer", broker=url, backend=url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json", accept_content=["json"], result_accept_content=["json"]
        )
        self.task = self.app.task(name=TASK, bind=True)(_never_run_bound)

    def close(self) -> None:
        self.app.close()

    def fail(self, payload: Payload, traceback: str) -> None:
        """Per document, a worker's request pushed, then what ``self.retry(exc=...,
        countdown=60)`` does there: ``Task.retry`` builds the signature from the request
        and ``apply_async``s it with its ETA to the broker, and the tracer's
        ``handle_retry`` stores the RETRY state with the traceback in the backend.
        Logging and the ``task_retry`` signal are left out."""
        task, exc = self.task, RuntimeError(traceback.rsplit(": ", 1)[-1].strip())
        for n, path in enumerate(payload.paths):
            task_id = f"00000000-0000-4000-9000-{n:012d}"
            task.push_request(
                id=task_id,
                args=[path, payload.query],
                kwargs={},
                retries=0,
                is_eager=False,
                called_directly=False,
                delivery_info={"exchange": "", "routing_key": QUEUE, "priority": 0},
            )
            try:
                task.retry(exc=exc, countdown=60, throw=False)
                task.backend.mark_as_retry(task_id, exc, traceback, request=task.request)
            finally:
                task.pop_request()


def _never_run_bound(task: Any, document_path: str, query: str | None = None) -> None:
    """The task's body: the bench only retries it."""
