"""When a failed document may be retried, and where it is sent.

Backoff is exponential: ``min_retry_interval_hours × backoff_factor**retry_count``,
capped at ``max_retry_interval_hours``, spread by ``retry_jitter`` so a burst of
failures does not come back as a burst. Network failures use the shorter
``network_retry_interval_hours`` base. The delays for every retry count are computed
here and handed to the Lua script, which only picks one: policy lives in Python.
"""

from __future__ import annotations

import os
import random

from recovery import categories
from recovery.config import RecoveryConfig, soft_limit
from recovery.records import FailedDocumentRecord

__all__ = [
    "backoff_delays",
    "breaker_state",
    "is_permanent",
    "probe",
    "queue_for",
    "soft_limit",
    "time_limit_for",
]

#: One generator for the jitter: building a Random per failure costs more than the
#: rest of the policy.
_RNG = random.Random()


def backoff_delays(
    config: RecoveryConfig, category: str, rng: random.Random | None = None
) -> list[float]:
    """Seconds to wait before retry n (index n), for n = 0 .. max_retry_count."""
    rng = rng or _RNG
    base = (
        config.network_retry_interval_hours
        if category == categories.NETWORK
        else config.min_retry_interval_hours
    )
    cap = max(base, config.max_retry_interval_hours)
    delays = []
    for retry in range(config.max_retry_count + 1):
        hours = min(cap, base * config.backoff_factor**retry)
        spread = 1.0 + config.retry_jitter * (2.0 * rng.random() - 1.0)
        delays.append(round(hours * 3600.0 * spread, 3))
    return delays


def is_permanent(category: str) -> bool:
    """Permanent failures (unsupported, corrupted, outside roots) are never retried."""
    return category == categories.PERMANENT


def queue_for(config: RecoveryConfig, category: str) -> str:
    """Memory failures go to the high-memory workers; everything else to the usual queue."""
    return config.highmem_queue if category == categories.MEMORY else config.resubmit_queue


def time_limit_for(config: RecoveryConfig, category: str, previous_limit: float | None) -> float:
    """Hard time limit of a resubmitted task: a timed-out document gets twice the limit
    it last ran with, capped by ``recovery_timeout``; others get ``recovery_timeout``."""
    if category == categories.TIMEOUT and config.grow_timeouts and previous_limit:
        return min(config.recovery_timeout, previous_limit * 2)
    return config.recovery_timeout


def probe(record: FailedDocumentRecord) -> str | None:
    """Why resubmitting would fail again right now, for failures whose cause can be
    checked from here (the file is still missing or unreadable); None to go ahead."""
    path, category = record.document_path, record.error_category
    if category == categories.FILE_NOT_FOUND and not os.path.exists(path):
        return f"file still missing: {path}"
    if category == categories.PERMISSION and not os.access(path, os.R_OK):
        return f"file still unreadable: {path}"
    return None


def breaker_state(outcomes: str, config: RecoveryConfig) -> str:
    """'open' when the category's recent recoveries mostly failed and the last did too;
    an open category sends only ``breaker_canary_size`` documents a run."""
    if not config.circuit_breaker or len(outcomes) < config.breaker_window:
        return "closed"
    failed = outcomes.count("0") / len(outcomes)
    return "open" if failed >= config.breaker_threshold and outcomes[-1] == "0" else "closed"
