"""Publishing a run's resubmissions to Celery, apart from deciding what to resubmit.

A resubmission is a NEW task sent by name, with its record's args, a ``docrecovery``
header naming the document and attempt (:mod:`recovery.lineage`), and the queue and
time limit its error category calls for. A batch goes through one producer, in one
pipelined publish where kombu can (5.7+): acquiring a producer and a Redis client per
``send_task`` is most of what a message costs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

from celery import Celery

from recovery import lineage, policy
from recovery.broker import default_broker_url, default_result_backend, queue_type
from recovery.calls import Marker
from recovery.categories import cut_off
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord
from recovery.store import Settlement
from recovery.summaries import Plan, Resubmission

log = logging.getLogger(__name__)

#: Why a claimed document was not sent: its run took longer than its claim's lease.
LEASE_OVER = "not sent: the run outlived its claim's lease"

#: What became of one claimed document: its settlement, and its resubmission if sent.
Outcome = tuple[Settlement, Resubmission | None]


def sender_app(redis_url: str) -> Celery:
    """A bare app that can only send tasks by name, for use outside a worker: to the
    broker the workers consume from (``CELERY_BROKER_URL``, else the tracker's Redis),
    declaring queues the way they do. Its result backend (``CELERY_RESULT_BACKEND``,
    else the tracker's Redis, as celeryconfig.py reads it) is where a replaced task's
    result is told its replacement."""
    app = Celery(
        "docrecovery-sender",
        broker=default_broker_url(redis_url),
        backend=default_result_backend(redis_url),
        set_as_current=False,
    )
    kind = queue_type()
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_default_queue_type=kind,
        task_create_missing_queue_type=kind,
    )
    return app


def _buffers(producer: Any) -> bool:
    """Whether kombu's batch holds the producer's messages until it ends (a transport
    that batches, such as Redis, with kombu 5.7+); on the others each message is
    published as it is sent, batch or not. Asks the producer's channel, so only once
    a message went through it (before, it would connect)."""
    channel = producer.channel
    return callable(getattr(channel, "create_publish_batch", None)) and bool(
        getattr(channel, "supports_batch_publish", True)
    )


class Resubmitter:
    """Sends documents as new tasks through ``app``, as ``config`` routes them."""

    def __init__(self, app: Celery, config: RecoveryConfig) -> None:
        self.app = app
        self.config = config

    def plan(self, record: FailedDocumentRecord) -> Plan:
        """Where and how ``record`` would be sent: what a dry run shows, too."""
        category = record.error_category
        return Plan(
            doc_id=record.doc_id,
            path=record.document_path,
            task=record.task_name,
            category=category,
            attempt=record.recovery_attempts + 1,
            retry_count=record.retry_count,
            queue=policy.queue_for(self.config, category),
            time_limit=policy.time_limit_for(self.config, category, record.time_limit),
            why=(
                f"{category} failure ({record.error_type}); "
                f"{record.retry_count}/{self.config.max_retry_count} retries used"
            ),
        )

    def send(
        self,
        records: list[FailedDocumentRecord],
        holds: list[Settlement | None],
        *,
        manual: bool = False,
        expires: float,
        out: list[Outcome],
    ) -> list[Outcome]:
        """Resubmit each record that is not held, all through one producer and, where
        kombu can, one pipelined publish. The batch is flushed once, at the end, so if
        that fails every message of it is released (none counted), as one whose own
        send failed. ``out`` gets each resubmission once its message has left: as it is
        sent where kombu publishes at once (RabbitMQ), when the batch is flushed where
        it holds them (Redis): a caller cut off meanwhile settles those and gives the
        rest back, so none is sent twice (but for the one RabbitMQ was publishing as the
        cut came, given back though it may have left). A flush cut off (a soft time limit, ^C) may
        have published any of the batch, so all of it goes to ``out`` and the cut is
        raised on: a message that never left is resent once the resend bound passes,
        one given back that did leave would be sent twice. None is sent once
        ``expires`` (the claim's lease, on the monotonic clock) has passed: another run
        may have taken it since, so it is released instead (a no-op if it was)."""
        decided: list[Outcome] = []
        buffered: bool | None = None  # known once a message went through the producer
        with self._producer() as producer:
            batch = getattr(producer, "batch", None)
            try:
                with batch(max_size=sys.maxsize) if batch else nullcontext():
                    for record, wait in zip(records, holds, strict=True):
                        if wait:
                            outcome: Outcome = (wait, None)
                        elif time.monotonic() >= expires:
                            outcome = (Settlement(record.doc_id, "release", LEASE_OVER), None)
                        else:
                            outcome = self._resubmit(record, manual=manual, producer=producer)
                        decided.append(outcome)
                        if outcome[1] is not None:
                            if buffered is None:
                                buffered = batch is not None and _buffers(producer)
                            if not buffered:
                                out.append(outcome)
            except BaseException as exc:
                if len(decided) < len(records) or not buffered:
                    raise  # out has what left; a held batch not flushed yet is dropped, unsent
                cut = cut_off(exc)
                if cut is None:
                    log.error("could not resubmit a batch of %d: %s", len(records), exc)
                    return [
                        (Settlement(s.doc_id, "release", f"resubmission failed: {exc}"), None)
                        if s.outcome == "sent"
                        else (s, sent)
                        for s, sent in decided
                    ]
                maybe = [outcome for outcome in decided if outcome[1] is not None]
                out.extend(maybe)
                # the flush's replies may be unread on the producer's connection, which
                # kombu pools for every app of that broker in the process: the next
                # publish would read them as its own. Dropped, the pool connects anew.
                with suppress(Exception):  # the cut reaches the caller, whatever happens
                    producer.connection.collect()
                log.warning(
                    "publishing a batch of %d was cut off (%r): all counted as sent, "
                    "any that did not leave is resent once its resend bound passes",
                    len(maybe),
                    cut,
                )
                if cut is exc:
                    raise
                raise cut from None  # unwrapped from kombu's BatchPublishError: the caller's own
            if buffered:  # the batch was flushed as its block ended
                out.extend(outcome for outcome in decided if outcome[1] is not None)
        return decided

    @contextmanager
    def _producer(self) -> Iterator[Any]:
        """One producer for a batch's messages, or None when none can be had (the
        broker is down): each message is then sent, and fails, on its own. A soft time
        limit is no broker's failure: it is raised on, and the run stops."""
        try:
            acquired = self.app.producer_or_acquire()
            producer = acquired.__enter__()
        except Exception as exc:
            if cut_off(exc) is not None:
                raise
            log.warning("no producer for this batch, sending one by one: %s", exc)
            yield None
            return
        try:
            yield producer
        finally:
            acquired.__exit__(None, None, None)

    def _resubmit(
        self, record: FailedDocumentRecord, *, manual: bool = False, producer: Any = None
    ) -> Outcome:
        """Send one record; a send that fails releases it. A soft time limit is not a
        failed send: it is raised on, so the run stops rather than send the rest."""
        plan = self.plan(record)
        doc_id = plan.doc_id
        marker = Marker(doc_id, plan.attempt, manual)
        try:
            result = self.app.send_task(
                record.task_name,
                args=record.args,
                kwargs=record.kwargs,
                queue=plan.queue,
                time_limit=plan.time_limit,
                soft_time_limit=policy.soft_limit(plan.time_limit),
                producer=producer,
                **lineage.send_options(marker, record.task_id, record.kwargs),
            )
        except Exception as exc:
            if cut_off(exc) is not None:
                raise
            log.error("could not resubmit %s: %s", record.document_path, exc)
            return Settlement(doc_id, "release", f"resubmission failed: {exc}"), None
        sent = Resubmission(**vars(plan), task_id=result.id, replaces=record.task_id, manual=manual)
        return Settlement(doc_id, "sent", result.id), sent

    def link(self, sent: list[Resubmission]) -> None:
        """Name each resubmission in the result of the task it replaces (lineage.py)."""
        lineage.link(
            self.app,
            [lineage.Replacement(s.replaces, s.task_id, s.attempt, s.manual) for s in sent],
        )
