"""The seed's API, at the edge: async faces of the synchronous core.

::

    tracker = FailedDocumentsTracker(redis_url="redis://localhost:6379/0")
    for doc in await tracker.get_failed_documents():
        print(doc.document_path, doc.error_message, doc.retry_count)

    manager = DocumentRecoveryManager(redis_url, {"max_retry_count": 3})
    status = await manager.get_recovery_status()

    result = await run_document_recovery(redis_url=..., config={...})

Each coroutine runs the same synchronous method in a thread, so there is no second
copy of any logic; configs may be the seed's plain dicts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from celery import Celery

from recovery.categories import OTHER, categorize_text
from recovery.config import RecoveryConfig
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord, document_id
from recovery.store import Tracker
from recovery.store.changes import FailureOutcome, FailureTime, Store
from recovery.store.claims import Claims
from recovery.store.listings import Listings
from recovery.store.maintenance import Maintenance
from recovery.store.reports import Reports

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

#: What a document id looks like (records.document_id); a path may too (a file named
#: by 20 hex digits), which ``mark_success`` tells apart.
DOC_ID = re.compile(r"[0-9a-f]{20}")
P = ParamSpec("P")
R = TypeVar("R")
Part = TypeVar("Part", Store, Claims, Maintenance, Listings, Reports)


def as_config(config: RecoveryConfig | dict[str, Any] | None) -> RecoveryConfig:
    """Accept the seed's plain dicts as well as a RecoveryConfig, over ``DOCRECOVERY_*``."""
    if isinstance(config, RecoveryConfig):
        return config
    return RecoveryConfig.from_env(config or {})


def _threaded(
    part: Callable[[Tracker], Part], method: Callable[Concatenate[Part, P], R]
) -> Callable[Concatenate[Tracker, P], Awaitable[R]]:
    """The async twin of a store method: the same code, run in a thread."""

    async def run(self: Tracker, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, part(self), *args, **kwargs)

    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


def _store(tracker: Tracker) -> Store:
    return tracker.store


def _claims(tracker: Tracker) -> Claims:
    return tracker.claims


def _maintenance(tracker: Tracker) -> Maintenance:
    return tracker.maintenance


def _reports(tracker: Tracker) -> Reports:
    return tracker.reports


class FailedDocumentsTracker(Tracker):
    """The seed's tracker: ``await tracker.get_failed_documents()`` and friends; its
    ``store``, ``maintenance`` and ``reports`` are the synchronous core."""

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | dict[str, Any] | None = None,
        *,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(redis_url, as_config(config), client=client)

    claim_due = _threaded(_claims, Claims.claim_due)
    cleanup_old_records = _threaded(_maintenance, Maintenance.cleanup)
    delete = _threaded(_maintenance, Maintenance.delete)
    get_record = _threaded(_reports, Reports.get_record)
    get_failed_documents = _threaded(_reports, Reports.get_failed_documents)
    get_status = _threaded(_reports, Reports.status)
    get_analysis = _threaded(_reports, Reports.analysis)

    async def track_failure(
        self,
        record: FailedDocumentRecord,
        *,
        counted: bool = True,
        recovery_attempt: bool = False,
        now: FailureTime = None,
    ) -> FailureOutcome:
        """Track a failure (:meth:`Store.record_failure`). A record that names no
        category (the seed's carry none: ``other`` is the default) is filed by its error
        type and message, as a worker files an error it knows only as text, so the
        per-category handling applies to it too (``category_overrides`` first). Its
        ``retry_count`` counts: the document keeps at least that many retries, so one
        imported at ``max_retry_count`` is not resubmitted."""
        if record.error_category == OTHER:
            category = categorize_text(
                record.error_type, record.error_message, self.config.category_overrides
            )
            record = replace(record, error_category=category)
        return await asyncio.to_thread(
            self.store.record_failure,
            record,
            counted=counted,
            recovery_attempt=recovery_attempt,
            now=now,
        )

    async def mark_success(self, document: str, query: str | None = None, **details: Any) -> bool:
        """Stop tracking a processed document, named by its id or — as the seed's
        tracker is given it — by its path (with the query when there is one). Returns
        False, and logs it, when nothing tracked matched.

        Twenty hex digits and no query read as an id or as a path: the id is probed
        first (one round trip when something is stored under it), and only when
        nothing is, the path, so the run is counted once either way."""
        resolve, done = self.store.resolve, None
        if query is None and DOC_ID.fullmatch(document):
            done = await asyncio.to_thread(resolve, document, probe=True, **details)
        if done is None or done.absent:
            doc_id = document_id(document, query)
            done = await asyncio.to_thread(resolve, doc_id, query=query, **details)
        if not done.tracked:
            log.info("mark_success: %r (query %r) is not tracked", document, query)
        return done.tracked

    async def get_metrics(self) -> dict[str, Any]:
        """The seed's recovery metrics."""
        status = await self.get_status()
        metrics: dict[str, Any] = status["recovery_metrics"]
        return metrics


class DocumentRecoveryManager(RecoveryManager):
    """The seed's manager: ``await manager.get_recovery_status()`` and friends;
    ``manager.tracker`` is the seed's tracker (``await tracker.get_failed_documents()``)."""

    tracker: FailedDocumentsTracker

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | dict[str, Any] | None = None,
        *,
        app: Celery | None = None,
        tracker: FailedDocumentsTracker | None = None,
    ) -> None:
        tracker = tracker or FailedDocumentsTracker(redis_url, config)
        super().__init__(app=app, tracker=tracker)

    async def run_recovery(self, *, dry_run: bool = False) -> dict[str, Any]:
        """One run's summary (or the dry run's plan) as the seed's dict."""
        summary = await asyncio.to_thread(self.run_batch, dry_run=dry_run)
        return summary.to_dict()

    async def recover(self) -> dict[str, Any]:
        """Every batch's totals as the seed's dict."""
        totals = await asyncio.to_thread(self.recover_all)
        return totals.to_dict()

    async def get_recovery_status(self) -> dict[str, Any]:
        """Counts, the seed's recovery metrics, and the failure analysis."""
        return await asyncio.to_thread(self.status)

    async def analyze_failures(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.tracker.reports.analysis)


async def run_document_recovery(
    redis_url: str | None = None, config: RecoveryConfig | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Recover every eligible document now (batch after batch); the seed's entry point.

    ``redis_url`` defaults to ``REDIS_URL``; ``config`` is a dict of recovery keys or
    a RecoveryConfig, layered over the ``DOCRECOVERY_*`` environment.
    """
    manager = DocumentRecoveryManager(redis_url, config)
    try:
        return await manager.recover()
    finally:
        manager.close()
