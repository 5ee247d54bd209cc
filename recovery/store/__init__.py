"""The Redis boundary: the only part of docrecovery that talks to Redis.

A :class:`Tracker` opens one :class:`~recovery.store.connection.Connection` and
serves it by concern:

- ``tracker.store`` — what workers change: failures, successes, runs checking in,
  one Lua script call each (:mod:`recovery.store.changes`);
- ``tracker.claims`` — what recovery runs change: claims, settlements, releases
  (:mod:`recovery.store.claims`);
- ``tracker.maintenance`` — retention, trims, repairs (:mod:`~recovery.store.maintenance`);
- ``tracker.reports`` — status and analysis (:mod:`~recovery.store.reports`),
  listings and pages (:mod:`~recovery.store.listings`).

Every redis-py error leaves it as the :class:`~recovery.errors.TrackerError` that says
what happened (:mod:`recovery.store.redis_errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from recovery.config import RecoveryConfig
from recovery.store.changes import FailureOutcome, Store
from recovery.store.checks import check_redis
from recovery.store.claims import ClaimResult, Claims, Settlement
from recovery.store.connection import Client, Connection, connect
from recovery.store.listings import Selection
from recovery.store.maintenance import Maintenance
from recovery.store.reports import Reports
from recovery.store.urls import default_redis_url, redact, redact_text, tracker_url

log = logging.getLogger(__name__)

__all__ = [
    "ClaimResult",
    "Claims",
    "Connection",
    "FailureOutcome",
    "Selection",
    "Settlement",
    "Store",
    "Tracker",
    "connect",
    "default_redis_url",
    "redact",
    "redact_text",
    "tracker_url",
]


class _RunLock(Lock):
    """redis-py's Lock, also taken when the key already holds this very acquire's
    token: the tracker's client sends a SET NX again after a dropped connection, and
    when the first one took the lock and only its reply was lost, the second finds the
    key set. Checked in ``do_acquire`` so that ``acquire`` keeps the token for
    ``release``; one GET more, only when the SET NX did not take the lock."""

    def do_acquire(self, token: str) -> bool:
        if super().do_acquire(token):
            return True
        held = self.redis.get(self.name)
        return held is not None and self.redis.get_encoder().encode(held) == token


class Tracker:
    """The store, maintenance and reports of one Redis and one config."""

    def __init__(
        self,
        redis_url: str | None = None,
        config: RecoveryConfig | None = None,
        *,
        client: Client | None = None,
    ) -> None:
        self.config = config or RecoveryConfig.from_env()
        self.connection = Connection(redis_url or default_redis_url(), self.config, client)
        self.keys = self.connection.keys
        self.store = Store(self.connection, self.config)
        self.claims = Claims(self.connection, self.config)
        self.maintenance = Maintenance(self.connection, self.config)
        self.reports = Reports(self.connection, self.config)

    @property
    def url(self) -> str:
        return self.connection.url

    def warnings(self) -> list[str]:
        """What could make this Redis lose records (see :mod:`recovery.store.checks`)."""
        with self.connection.errors("check the tracker's Redis"):
            return check_redis(self.connection.client)

    @contextmanager
    def exclusive(self, timeout: float) -> Iterator[bool]:
        """Hold the recovery-run lock while inside; yields False (and holds nothing)
        when another run has it. A run that outlives ``timeout`` loses it, and is
        told so when it ends."""
        lock = self.connection.client.lock(
            self.keys.run_lock, timeout=timeout, blocking=False, lock_class=_RunLock
        )
        with self.connection.errors("recovery run lock"):
            acquired = bool(lock.acquire())
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    lock.release()
                except LockError:
                    log.warning("docrecovery: the run lock expired before the run ended")
                except redis.RedisError as exc:
                    log.warning("docrecovery: could not release the run lock: %s", exc)

    def close(self) -> None:
        self.connection.close()
