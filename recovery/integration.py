"""docrecovery on a Celery app: ``recovery.install(app, config)``.

Installing connects thin signal handlers and registers the ``recovery.run`` task:

- ``task_failure`` of a tracked task records the failure (worker, query, metadata,
  task name and args, category from the exception chain);
- ``task_success`` removes the document from tracking, counting a successful
  recovery when the run carried the ``docrecovery`` header of a resubmission;
- a tracked task built on :class:`TrackedTask` checks in when it starts: it enters
  the in-flight index (so a run whose worker dies is found and recorded as
  ``worker_lost``), a stale duplicate of a message that recovery already replaced is
  dropped, and a run that keeps killing its worker ends dead instead of looping;
- ``worker_ready`` records the worker's environment fingerprint and replays events
  spooled while Redis was unreachable;
- beat runs ``recovery.run`` every ``recovery_interval_minutes`` when
  ``enable_periodic_recovery`` is set; a Redis lock keeps two runs from overlapping.

Handlers never raise into Celery. When Redis cannot be reached they log an error and
append the event to a local spool (``spool_dir``), replayed once Redis answers again.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
import weakref
from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import task_failure, task_revoked, task_success, worker_ready
from redis.exceptions import LockError, RedisError

from recovery.categories import IMPORT, categorize
from recovery.checks import check_redis
from recovery.config import RecoveryConfig
from recovery.environment import fingerprint
from recovery.errors import RecoveryError, TrackerUnavailable
from recovery.manager import HEADER, DocumentRecoveryManager, lost_run_record
from recovery.records import DEAD, FailedDocumentRecord, document_id
from recovery.spool import Spool
from recovery.tracker import FailedDocumentsTracker, SyncTracker, default_redis_url

log = logging.getLogger(__name__)

#: A recovery run holding the lock longer than this is presumed dead.
RUN_LOCK_SECONDS = 300
#: Seconds during which a second failure report of one task id is a duplicate.
REPORT_WINDOW = 60.0
#: How often a process looks for spooled events of other processes on its host.
SPOOL_CHECK_SECONDS = 30.0

_installed: weakref.WeakKeyDictionary[Celery, Recovery] = weakref.WeakKeyDictionary()


class Recovery:
    """The recovery system as installed on one app; ``recovery.installed(app)``."""

    def __init__(self, app: Celery, config: RecoveryConfig, redis_url: str | None) -> None:
        self.app = app
        self.config = config
        self._redis_url = redis_url
        self._tracker: FailedDocumentsTracker | None = None
        self.spool = Spool(config.spool_dir)
        # task id -> when its failure was handled here: Celery reports a hard time
        # limit twice (once without the run's context), and one run is one failure
        self._reported: dict[str, float] = {}
        self._spool_checked = 0.0

    @property
    def redis_url(self) -> str:
        """The explicit URL, else the app's broker when it is Redis, else REDIS_URL."""
        if self._redis_url:
            return self._redis_url
        broker = str(self.app.conf.broker_url or "")
        return broker if broker.startswith(("redis://", "rediss://")) else default_redis_url()

    @property
    def tracker(self) -> SyncTracker:
        return self._store().sync

    def _store(self) -> FailedDocumentsTracker:
        """The tracker for the current URL (tests and processors may repoint the app)."""
        if self._tracker is None or self._tracker.redis_url != self.redis_url:
            self._tracker = FailedDocumentsTracker(self.redis_url, self.config)
        return self._tracker

    def configure(self, config: RecoveryConfig, redis_url: str | None = None) -> None:
        """Swap the settings and, optionally, the tracker's Redis (which otherwise
        follows the app's broker)."""
        self.config = config
        self._redis_url = redis_url
        self.spool = Spool(config.spool_dir)
        self._tracker = None

    def manager(self) -> DocumentRecoveryManager:
        return DocumentRecoveryManager(app=self.app, tracker=self._store())

    def tracks(self, task: Task | None) -> bool:
        return task is not None and task.app is self.app and task.name in self.config.tracked_tasks

    # --- events ------------------------------------------------------------------

    def failure_event(
        self, task: Task, task_id: str, exc: BaseException, args: Any, kwargs: Any, tb: str
    ) -> dict[str, Any]:
        request = task.request
        path, query, metadata = document_call(task, args, kwargs)
        marker = getattr(request, HEADER, None) or {}
        record = FailedDocumentRecord(
            document_path=path,
            task_id=task_id,
            error_message=tb or "".join(traceback.format_exception(exc)),
            failure_timestamp=time.time(),
            query=query,
            worker_id=request.hostname,
            metadata=metadata,
            task_name=task.name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            error_type=type(exc).__name__,
            time_limit=self._time_limit(request),
        )
        record.error_category = categorize(exc, self.config.category_overrides)
        if record.error_category == IMPORT:
            record.fingerprint = fingerprint()
        return {
            "kind": "failure",
            "fields": record.to_redis(),
            "counted": not marker.get("manual", False),
            "recovery_attempt": bool(marker),
        }

    def _time_limit(self, request: Any) -> float:
        """The hard limit a run has: its message's, else the app's, else (no limit)
        ``recovery_timeout`` as the horizon after which it counts as lost."""
        limit = (request.timelimit or (None, None))[0] or self.app.conf.task_time_limit
        return float(limit or self.config.recovery_timeout)

    def success_event(self, task: Task) -> dict[str, Any]:
        request = task.request
        path, query, _ = document_call(task, request.args or (), request.kwargs or {})
        marker = getattr(request, HEADER, None) or {}
        return {
            "kind": "success",
            "doc_id": document_id(path, query),
            "worker": request.hostname,
            "query": query,
            "recovery_attempt": bool(marker),
            "task_id": request.id,
            "at": time.time(),
        }

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one event to the tracker; raises TrackerUnavailable if Redis is away."""
        if event["kind"] == "failure":
            record = FailedDocumentRecord.from_redis("spooled event", event["fields"])
            self.tracker.record_failure(
                record, counted=event["counted"], recovery_attempt=event["recovery_attempt"]
            )
        else:
            self.tracker.resolve(
                event["doc_id"],
                worker=event["worker"],
                query=event["query"],
                recovery_attempt=event["recovery_attempt"],
                task_id=event.get("task_id", ""),
                now=event["at"],
            )

    def deliver(self, event: dict[str, Any]) -> None:
        """Apply an event, or spool it when Redis cannot be reached: never lose it.
        Spooled events go first: they happened before this one."""
        try:
            if self._spool_may_hold_events():
                self.spool.replay(self.apply, TrackerUnavailable)
            self.apply(event)
        except TrackerUnavailable as exc:
            where = self.spool.append(event)
            self._spool_checked = 0.0
            log.error(
                "docrecovery: Redis unreachable (%s); %s event spooled to %s",
                exc,
                event["kind"],
                where,
            )
        except Exception:
            log.exception("docrecovery: %s event cannot be applied; rejected", event["kind"])
            self.spool.reject(event)

    def _spool_may_hold_events(self) -> bool:
        """Whether to look at the spool before applying an event. Looking lists a
        directory, so a process does it right after it spooled, else every
        SPOOL_CHECK_SECONDS (events of other processes on this host)."""
        now = time.monotonic()
        if now - self._spool_checked < SPOOL_CHECK_SECONDS:
            return False
        self._spool_checked = now
        return self.spool.pending()

    def replay_spool(self) -> int:
        try:
            replayed = self.spool.replay(self.apply, TrackerUnavailable)
        except TrackerUnavailable as exc:
            log.warning("docrecovery: spool replay stopped, Redis unreachable: %s", exc)
            return 0
        if replayed:
            log.warning("docrecovery: replayed %d spooled events", replayed)
        return replayed

    def begin(self, task: Task) -> bool:
        """Check a tracked run in before it starts; False means drop this message.

        See ``lua/begin.lua``: a superseded task id is a stale duplicate; a task id
        already in flight means its earlier run died silently, which is recorded as a
        ``worker_lost`` failure (counted, so a crash loop ends dead) before this run
        checks in again. With Redis away the run goes ahead: its outcome is spooled.
        """
        request = task.request
        if request.called_directly or request.is_eager or not self.tracks(task):
            return True
        path, query, metadata = document_call(task, request.args, request.kwargs)
        doc_id = document_id(path, query)
        now = time.time()
        limit = self._time_limit(request)
        call = {
            "path": path,
            "query": query,
            "metadata": metadata,
            "task": task.name,
            "args": list(request.args or ()),
            "kwargs": dict(request.kwargs or {}),
            "worker": request.hostname,
            "tlimit": limit,
            "marker": getattr(request, HEADER, None) or {},
        }
        deadline = now + limit + self.config.lease_grace_seconds
        try:
            verdict, _ = self.tracker.begin(doc_id, request.id, deadline, call, now)
            if verdict == "lost":
                lost = lost_run_record({**call, "task_id": request.id}, now)
                outcome = self.tracker.record_failure(
                    lost,
                    lost_run="any",
                    counted=not call["marker"].get("manual", False),
                    recovery_attempt=bool(call["marker"]),
                    now=now,
                )
                log.error(
                    "docrecovery: an earlier run of task %s died without reporting;"
                    " recorded as worker_lost (%s)",
                    request.id,
                    outcome.state,
                )
                if outcome.state == DEAD:
                    return False
                verdict, _ = self.tracker.begin(doc_id, request.id, deadline, call, now)
        except TrackerUnavailable as exc:
            log.error("docrecovery: cannot check task %s in (%s); running it", request.id, exc)
            return True
        if verdict == "stale":
            log.warning(
                "docrecovery: dropping task %s for %s: recovery already resubmitted"
                " it as a newer task",
                request.id,
                path,
            )
            return False
        return True

    def end_run(self, task_id: str) -> None:
        try:
            self.tracker.end_run(task_id)
        except TrackerUnavailable as exc:
            log.error("docrecovery: could not take task %s out of flight: %s", task_id, exc)

    def register_environment(self, worker: str) -> None:
        fingerprint.cache_clear()
        generation, new = self.tracker.register_environment(worker, fingerprint())
        if new:
            log.warning("docrecovery: new environment generation %d (%s)", generation, worker)

    # --- signal handlers: thin, and never raising into Celery ----------------------

    def on_task_failure(
        self,
        sender: Task | None = None,
        task_id: str = "",
        exception: BaseException | None = None,
        args: Any = (),
        kwargs: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        if exception is None or sender is None or not self.tracks(sender):
            return
        if self._seen(task_id):
            return
        try:
            tb = str(einfo.traceback) if einfo is not None else ""
            self.deliver(self.failure_event(sender, task_id, exception, args, kwargs, tb))
        except Exception:
            log.exception("docrecovery: could not record the failure of task %s", task_id)

    def _seen(self, task_id: str) -> bool:
        now = time.monotonic()
        if now - self._reported.get(task_id, -REPORT_WINDOW) < REPORT_WINDOW:
            return True
        if len(self._reported) >= 1024:
            self._reported = {t: at for t, at in self._reported.items() if now - at < REPORT_WINDOW}
        self._reported[task_id] = now
        return False

    def on_task_success(self, sender: Task | None = None, **_: Any) -> None:
        if sender is None or not self.tracks(sender):
            return
        try:
            self.deliver(self.success_event(sender))
        except Exception:
            log.exception("docrecovery: could not clear task %s", sender.request.id)

    def on_task_revoked(self, sender: Task | None = None, request: Any = None, **_: Any) -> None:
        if sender is not None and request is not None and self.tracks(sender):
            self.end_run(str(request.id))

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        try:
            self.register_environment(str(sender.hostname))
            for warning in check_redis(self.tracker.client):
                log.warning("docrecovery: %s", warning)
        except TrackerUnavailable as exc:
            log.error("docrecovery: could not record this worker's environment: %s", exc)
        except RedisError as exc:
            log.error("docrecovery: could not check the tracker's Redis: %s", exc)
        self.replay_spool()

    # --- the recovery.run task ----------------------------------------------------

    def run(self, *, dry_run: bool = False) -> dict[str, Any]:
        """One locked recovery run: spool replay, then a batch (or a dry-run preview)."""
        manager = self.manager()
        if dry_run:
            return manager.run_batch(dry_run=True)
        lock = self.tracker.client.lock(
            self.tracker.keys.run_lock, timeout=RUN_LOCK_SECONDS, blocking=False
        )
        try:
            if not lock.acquire():
                return {"skipped": "another recovery run holds the lock"}
        except RedisError as exc:
            raise TrackerUnavailable(f"recovery run lock: {exc}") from exc
        try:
            replayed = self.replay_spool()
            summary = manager.run_batch()
            summary["spool_replayed"] = replayed
            return summary
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("docrecovery: the run lock expired before the run ended")


@cache
def _signature(run: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(run)
    except (TypeError, ValueError):
        return None


def document_call(task: Task, args: Any, kwargs: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(path, query, metadata) of a call shaped like ``f(document_path, query, metadata)``."""
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    sig = _signature(task.run)
    values: dict[str, Any] = {}
    if sig is not None:
        try:
            values = dict(sig.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            values = {}
    path = values.get("document_path", args[0] if args else kwargs.get("document_path", ""))
    query = values.get("query")
    metadata = values.get("metadata")
    return (
        str(path),
        None if query is None else str(query),
        metadata if isinstance(metadata, dict) else {},
    )


def install(
    app: Celery, config: RecoveryConfig | None = None, *, redis_url: str | None = None
) -> Recovery:
    """Track failures of ``config.tracked_tasks`` on ``app`` and register ``recovery.run``."""
    config = config or RecoveryConfig.from_env()
    if app in _installed:
        _installed[app].configure(config, redis_url)
        return _installed[app]
    rec = Recovery(app, config, redis_url)
    _installed[app] = rec

    task_failure.connect(rec.on_task_failure, weak=False)
    task_success.connect(rec.on_task_success, weak=False)
    task_revoked.connect(rec.on_task_revoked, weak=False)
    worker_ready.connect(rec.on_worker_ready, weak=False)

    @app.task(name="recovery.run", ignore_result=False)  # type: ignore[untyped-decorator]
    def run(dry_run: bool = False) -> dict[str, Any]:
        """Run one recovery batch and return its JSON summary."""
        return rec.run(dry_run=dry_run)

    if config.enable_periodic_recovery:
        app.conf.beat_schedule = {
            **(app.conf.beat_schedule or {}),
            "docrecovery-recovery-run": {
                "task": "recovery.run",
                "schedule": timedelta(minutes=config.recovery_interval_minutes),
                "options": {"queue": "recovery", "expires": config.recovery_interval_minutes * 60},
            },
        }
    return rec


class TrackedTask(Task):  # type: ignore[misc]
    """Base class of tasks whose runs recovery should see start (``base=TrackedTask``).

    Without it failures and successes are still tracked; with it, a run that dies
    with its worker is found too, and stale duplicates are dropped.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rec = _installed.get(self.app)
        if rec is None:
            return super().__call__(*args, **kwargs)
        if not rec.begin(self):
            # the STARTED state is already stored: leave a final state, not a hang
            self.update_state(state=states.IGNORED, meta={"reason": "dropped by docrecovery"})
            raise Ignore()
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            # ends with neither success nor failure: a retry comes back under the same
            # id, which must not look like a run that died
            rec.end_run(self.request.id)
            raise


def installed(app: Celery) -> Recovery:
    """The recovery system installed on ``app``."""
    try:
        return _installed[app]
    except KeyError:
        raise RecoveryError("docrecovery is not installed on this app; call install()") from None
