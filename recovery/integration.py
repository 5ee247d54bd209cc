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
append the event to a local spool (``spool_dir``), replayed once Redis answers again
(see :mod:`recovery.events`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref
from datetime import timedelta
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import (
    task_failure,
    task_revoked,
    task_success,
    worker_ready,
    worker_shutting_down,
)

from recovery.calls import HEADER, Marker, RunCall, counted, describe, message_time_limit
from recovery.categories import IMPORT, categorize
from recovery.config import RecoveryConfig
from recovery.environment import fingerprint
from recovery.errors import RecoveryError, TrackerError
from recovery.events import FailureEvent, Reporter, SuccessEvent
from recovery.manager import RecoveryManager
from recovery.records import DEAD, FailedDocumentRecord, document_id
from recovery.spool import Spool
from recovery.store import Tracker, tracker_url

log = logging.getLogger(__name__)

#: A recovery run holding the lock longer than this is presumed dead.
RUN_LOCK_SECONDS = 300
#: Seconds during which a second failure report of one task id is a duplicate.
REPORT_WINDOW = 60.0

_installed: weakref.WeakKeyDictionary[Celery, Recovery] = weakref.WeakKeyDictionary()


class Reported:
    """Task ids whose failure was handled here lately: Celery reports a hard time
    limit twice (once without the run's context), and one run is one failure."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def again(self, task_id: str) -> bool:
        """Whether ``task_id``'s failure was handled within REPORT_WINDOW; noted if not."""
        now = time.monotonic()
        if now - self._at.get(task_id, -REPORT_WINDOW) < REPORT_WINDOW:
            return True
        if len(self._at) >= 1024:
            self._at = {t: at for t, at in self._at.items() if now - at < REPORT_WINDOW}
        self._at[task_id] = now
        return False


class Recovery:
    """The recovery system as installed on one app; ``recovery.installed(app)``."""

    def __init__(self, app: Celery, config: RecoveryConfig, redis_url: str | None) -> None:
        self.app = app
        self._tracker: Tracker | None = None
        self.configure(config, redis_url)
        self._reported = Reported()
        self._replaying = threading.Event()
        # the last run described in each thread, with its request: see call_of
        self._described = threading.local()

    @property
    def redis_url(self) -> str:
        """The tracker's Redis: the explicit URL, else ``REDIS_URL``. Only with neither
        does a Redis broker serve (one Redis named once: ``celery -b redis://...``);
        never a broker of another kind (:mod:`recovery.broker`)."""
        return tracker_url(self._redis_url, lambda: str(self.app.conf.broker_url or ""))

    @property
    def tracker(self) -> Tracker:
        """The tracker for the current URL (``REDIS_URL`` may change, e.g. in tests)."""
        if self._tracker is None or self._tracker.url != self.redis_url:
            self._tracker = Tracker(self.redis_url, self.config)
        return self._tracker

    def configure(self, config: RecoveryConfig, redis_url: str | None = None) -> None:
        """Swap the settings and, optionally, the tracker's Redis (else ``REDIS_URL``)."""
        self.config = config
        self._redis_url = redis_url
        self._tracker = None
        self.reporter = Reporter(Spool(config.spool_dir))

    def manager(self) -> RecoveryManager:
        return RecoveryManager(app=self.app, tracker=self.tracker)

    def tracks(self, task: Task | None) -> bool:
        return task is not None and task.app is self.app and task.name in self.config.tracked_tasks

    # --- the run of a tracked task -------------------------------------------------

    def call_of(self, task: Task, task_id: str, args: Any, kwargs: Any) -> RunCall:
        """The run of ``task`` with these arguments, as its request describes it:
        described once a run, at its check-in, and read again by its outcome, which
        Celery reports while the run's request is still the task's."""
        request = task.request
        last: tuple[Any, RunCall] | None = getattr(self._described, "last", None)
        if last is not None and last[0] is request and last[1].task_id == task_id:
            return last[1]
        call = describe(
            task,
            task_id,
            args,
            kwargs,
            worker=request.hostname,
            time_limit=self._time_limit(request),
            marker=Marker.parse(getattr(request, HEADER, None)),
            max_metadata_bytes=self.config.max_metadata_bytes,
        )
        if request.id == task_id:
            self._described.last = (request, call)
        return call

    def _time_limit(self, request: Any) -> float:
        """The hard limit a run has: its message's, else the app's, else (no limit)
        ``recovery_timeout`` as the horizon after which it counts as lost. The message's
        header is untrusted: a malformed one counts as none."""
        try:
            limit = message_time_limit(request.timelimit)
        except ValueError as exc:
            log.warning("docrecovery: task %s: ignoring its %s", request.id, exc)
            limit = None
        return float(limit or self.app.conf.task_time_limit or self.config.recovery_timeout)

    def begin(self, task: Task) -> bool:
        """Check a tracked run in before it starts; False means drop this message.

        See ``lua/begin.lua``: a superseded task id is a stale duplicate; a task id
        already in flight under another check-in means its earlier run died silently
        (the broker redelivered it), which is recorded as a counted ``worker_lost``
        failure before this run checks in again — and once that leaves no retry under
        this worker's ``max_retry_count``, the message is dropped, so a crash loop
        ends (the record stays, for a run with a larger maximum). With Redis away the
        run goes ahead: its outcome is spooled.
        """
        request = task.request
        if request.called_directly or request.is_eager or not self.tracks(task):
            return True
        call = self.call_of(task, request.id, request.args, request.kwargs)
        doc_id = document_id(call.path, call.query)
        limit = (call.time_limit or 0) + self.config.lease_grace_seconds
        store = self.tracker.store
        try:
            verdict, _ = store.begin(doc_id, call, limit)
            if verdict == "lost":
                outcome = store.record_lost_run(call, "any", None)
                log.error(
                    "docrecovery: an earlier run of task %s died without reporting;"
                    " recorded as worker_lost (%s, %d retries)",
                    call.task_id,
                    outcome.state,
                    outcome.retry_count,
                )
                if outcome.state == DEAD or outcome.retry_count >= self.config.max_retry_count:
                    return False
                verdict, _ = store.begin(doc_id, call, limit)
        except TrackerError as exc:
            log.error("docrecovery: cannot check task %s in (%s); running it", call.task_id, exc)
            return True
        if verdict == "stale":
            log.warning(
                "docrecovery: dropping task %s for %s: recovery already resubmitted"
                " it as a newer task",
                call.task_id,
                call.path,
            )
            return False
        return True

    def end_run(self, task_id: str) -> None:
        try:
            self.tracker.store.end_run(task_id)
        except TrackerError as exc:
            log.error("docrecovery: could not take task %s out of flight: %s", task_id, exc)

    def register_environment(self, worker: str) -> None:
        """Record the fingerprint this worker runs with (see :mod:`recovery.environment`)."""
        fingerprint.cache_clear()
        generation, new = self.tracker.store.register_environment(worker, fingerprint())
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
        if self._reported.again(task_id):
            return
        try:
            call = self.call_of(sender, task_id, args, kwargs)
            category = categorize(exception, self.config.category_overrides)
            record = FailedDocumentRecord.from_run(
                call,
                error_type=type(exception).__name__,
                category=category,
                message=f"{type(exception).__name__}: {exception}",
                traceback=str(einfo.traceback) if einfo else _traceback(exception),
                at=time.time(),
                fingerprint=fingerprint() if category == IMPORT else "",
            )
            event = FailureEvent(record, counted(call.marker), call.marker is not None)
            self.reporter.deliver(self.tracker, event)
        except Exception:
            log.exception("docrecovery: could not record the failure of task %s", task_id)

    def on_task_success(self, sender: Task | None = None, **_: Any) -> None:
        if sender is None or not self.tracks(sender):
            return
        try:
            request = sender.request
            call = self.call_of(sender, request.id, request.args, request.kwargs)
            event = SuccessEvent(
                document_id(call.path, call.query),
                call.worker,
                call.query,
                call.marker is not None,
                call.task_id,
                time.time(),
            )
            self.reporter.deliver(self.tracker, event)
        except Exception:
            log.exception("docrecovery: could not clear task %s", sender.request.id)

    def on_task_revoked(self, sender: Task | None = None, request: Any = None, **_: Any) -> None:
        if sender is not None and request is not None and self.tracks(sender):
            self.end_run(str(request.id))

    def on_worker_shutting_down(self, sender: Any = None, how: str = "", **_: Any) -> None:
        """An operator's cold shutdown (SIGQUIT) abandons this node's runs without a
        word: take them out of flight, so their redelivery is not counted as a lost
        attempt. A crash fires nothing and still counts; a warm shutdown lets its runs
        finish."""
        self._replaying.set()
        if how != "Cold" or not sender:
            return
        try:
            released = self.tracker.store.end_runs_of(str(sender))
        except TrackerError as exc:
            log.error("docrecovery: could not release %s's runs: %s", sender, exc)
            return
        if released:
            log.warning("docrecovery: cold shutdown of %s released %d run(s)", sender, released)

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        try:
            self.register_environment(str(sender.hostname))
            for warning in self.tracker.warnings():
                log.warning("docrecovery: %s", warning)
        except TrackerError as exc:
            log.error("docrecovery: could not record this worker's environment: %s", exc)
        self.reporter.replay(self.tracker)
        if self.config.spool_replay_seconds:
            self._replaying.clear()
            threading.Thread(target=self._replay_periodically, daemon=True).start()

    def _replay_periodically(self) -> None:
        """Replay this host's spool every ``spool_replay_seconds`` until the worker
        shuts down: a host cut off from Redis, then given no more work, would otherwise
        keep what it spooled until its next event. Looking costs a directory
        listing; only a spool that holds events costs Redis anything."""
        while not self._replaying.wait(self.config.spool_replay_seconds):
            try:
                if self.reporter.spool.pending():
                    self.reporter.replay(self.tracker)
            except Exception:  # a thread must not die of one bad turn: log, go on
                log.exception("docrecovery: periodic spool replay failed")

    # --- the recovery.run task ----------------------------------------------------

    def run(self, *, dry_run: bool = False, force: bool = False) -> dict[str, Any]:
        """One locked recovery run: spool replay, then a batch (or a dry-run preview);
        ``force`` ignores every backoff. The task's result, so JSON: the run's summary
        with what the replay sent. A soft time limit in the replay ends the run there,
        before it claims anything, the events it did not apply still spooled."""
        manager = self.manager()
        if dry_run:
            return manager.run_batch(dry_run=True, force=force).to_dict()
        with self.tracker.exclusive(RUN_LOCK_SECONDS) as acquired:
            if not acquired:
                return {"skipped": "another recovery run holds the lock"}
            replayed = self.reporter.replay(self.tracker)
            summary = manager.run_batch(force=force)
            return summary.to_dict() | {"spool_replayed": replayed}


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


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
    worker_shutting_down.connect(rec.on_worker_shutting_down, weak=False)

    @app.task(name="recovery.run", ignore_result=False)  # type: ignore[untyped-decorator]
    def run(dry_run: bool = False, force: bool = False) -> dict[str, Any]:
        """Run one recovery batch and return its JSON summary."""
        return rec.run(dry_run=dry_run, force=force)

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
