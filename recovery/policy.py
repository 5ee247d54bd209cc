"""When a failed document may be retried, and where it is sent — decided by the run.

Backoff is exponential: ``min_retry_interval_hours × backoff_factor**retry_count``,
capped at ``max_retry_interval_hours``. Network failures have their own, shorter base
(``network_retry_interval_hours``), so they form a second backoff *lane*. A recovery
run hands its delays, per lane and retry level, to the scripts, which compare them
with each document's last attempt: the run's settings decide, not those of the
worker that recorded the failure. The run's ``retry_jitter`` adds up to that fraction
of the backoff, each document's share fixed by its id (:func:`spread`), so a burst of
failures does not come back as a burst; it only ever adds delay.
"""

from __future__ import annotations

import json
import math
import os
from functools import cache

from recovery import categories
from recovery.config import RecoveryConfig, soft_limit
from recovery.records import FailedDocumentRecord

__all__ = [
    "breaker_state",
    "is_permanent",
    "lane_for",
    "level_delays",
    "next_retry_at",
    "probe",
    "queue_for",
    "soft_limit",
    "spread",
    "time_limit_for",
]

HEX = frozenset("0123456789abcdefABCDEF")
#: Backoff lanes: the usual one, and network failures (short backoff).
LANES = (0, 1)


def lane_for(category: str) -> int:
    return 1 if category == categories.NETWORK else 0


def _base_hours(config: RecoveryConfig, lane: int) -> float:
    return config.network_retry_interval_hours if lane else config.min_retry_interval_hours


def backoff(config: RecoveryConfig, lane: int, retries: int) -> float:
    """Seconds between an attempt and the next, after ``retries`` counted retries.
    Whether the cap is reached is decided on logarithms, so ``factor**retries`` is
    computed only below it: the delay does not rest on the config's bounds to keep a
    power past the cap inside a float's range."""
    base = _base_hours(config, lane)
    cap = max(base, config.max_retry_interval_hours)
    if base > 0 and retries * math.log(config.backoff_factor) >= math.log(cap / base):
        return cap * 3600.0
    return min(cap, base * config.backoff_factor**retries) * 3600.0


@cache
def level_delays(config: RecoveryConfig, *, force: bool = False) -> str:
    """The run's backoff per lane and retry level, as the scripts read it: one list per
    lane, one delay per level below ``max_retry_count`` (-1: any time, ``force``)."""
    return json.dumps(
        [
            [-1.0 if force else backoff(config, lane, n) for n in range(config.max_retry_count)]
            for lane in LANES
        ]
    )


def spread(doc_id: str) -> float:
    """A document's share of the jitter, in [0, 1): from its id, as the scripts take it
    (``spread()`` in lua/_lib.lua), so every run and report agree; 0 for an id that is
    not hex (not one of ours)."""
    head = doc_id[:4]
    return int(head, 16) / 65536 if head and all(c in HEX for c in head) else 0.0


def next_retry_at(config: RecoveryConfig, record: FailedDocumentRecord) -> float | None:
    """When a run with ``config`` may take this document again; None when that is not
    a matter of time (dead, held back, being recovered, out of retries)."""
    if record.state != "failed" or record.retry_count >= config.max_retry_count:
        return None
    delay = backoff(config, lane_for(record.error_category), record.retry_count)
    return record.failure_timestamp + delay * (1 + config.retry_jitter * spread(record.doc_id))


def is_permanent(category: str) -> bool:
    """Permanent failures (unsupported, corrupted, outside roots) are never retried."""
    return category == categories.PERMANENT


def queue_for(config: RecoveryConfig, category: str) -> str:
    """Memory failures go to the high-memory workers; everything else to the usual queue."""
    return config.highmem_queue if category == categories.MEMORY else config.resubmit_queue


def time_limit_for(config: RecoveryConfig, category: str, previous_limit: float | None) -> float:
    """Hard time limit of a resubmitted task: a timed-out document gets twice the limit
    it last ran with, up to ``max_recovery_timeout``; others get ``recovery_timeout``."""
    if category == categories.TIMEOUT and config.grow_timeouts and previous_limit:
        return min(config.max_recovery_timeout, previous_limit * 2)
    return config.recovery_timeout


def longest_run(config: RecoveryConfig, time_limit: float) -> float:
    """The longest one run may hold its message: the workers' ``time_limit``, or a
    resubmission's limit, which a timed-out document doubles up to
    ``max_recovery_timeout``. A broker's redelivery deadline must outlive it."""
    grown = config.max_recovery_timeout if config.grow_timeouts else 0
    return max(time_limit, config.recovery_timeout, grown)


def probe(record: FailedDocumentRecord) -> str | None:
    """Why resubmitting would fail again right now, for failures whose cause can be
    checked from here (the file is still missing or unreadable); None to go ahead."""
    path, category = record.document_path, record.error_category
    if category == categories.FILE_NOT_FOUND and not os.path.exists(path):
        return f"file still missing: {path}"
    if category == categories.PERMISSION:
        try:
            readable = os.access(path, os.R_OK)
        except ValueError as exc:  # a path no system call takes (a NUL byte in it)
            return f"file cannot be checked: {exc}"
        if not readable:
            return f"file still unreadable: {path}"
    return None


def breaker_state(outcomes: str, config: RecoveryConfig) -> str:
    """'open' when the category's recent recoveries mostly failed and the last did too;
    an open category sends only ``breaker_canary_size`` documents a run."""
    if not config.circuit_breaker or len(outcomes) < config.breaker_window:
        return "closed"
    failed = outcomes.count("0") / len(outcomes)
    return "open" if failed >= config.breaker_threshold and outcomes[-1] == "0" else "closed"
