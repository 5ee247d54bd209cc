"""Celery's own settings for the document pipeline, read from the environment.

The Redis is the one every docrecovery process resolves
(``recovery.store.connection.default_redis_url``: ``REDIS_URL``, else the default). It
is the broker and, unless ``CELERY_RESULT_BACKEND`` says otherwise, the result backend.
Recovery settings are not here: they live in one validated ``recovery.RecoveryConfig``
(``DOCRECOVERY_*`` variables), and ``recovery.install`` adds the ``recovery.run`` beat
entry from it.
"""

from __future__ import annotations

import os

from kombu import Exchange, Queue

from recovery.config import RecoveryConfig, soft_limit
from recovery.store.connection import default_redis_url

redis_url = default_redis_url()

broker_url = redis_url
result_backend = os.environ.get("CELERY_RESULT_BACKEND", redis_url)

# Messages are JSON only: a pickled payload from the broker could run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_default_queue = "documents"
# Each queue has its own exchange and routing key: declared bare, all three would bind
# to the default exchange under the key "documents".
task_queues = tuple(
    Queue(name, Exchange(name), routing_key=name) for name in ("documents", "recovery", "highmem")
)
task_routes = {
    "tasks.process_document": {"queue": "documents"},
    "recovery.run": {"queue": "recovery"},
}

# Ack after the task ran, so a task on a node that dies is redelivered, not lost.
task_acks_late = True
# A child killed mid-task (OOM, SIGKILL) requeues its message instead of failing it.
task_reject_on_worker_lost = True
# Take one message at a time: long documents should not sit behind a busy child.
worker_prefetch_multiplier = 1
# Track STARTED so Flower and result queries can tell running from queued.
task_track_started = True
# No document may hold a child forever: 5 min hard, 4.5 min soft (SoftTimeLimitExceeded).
task_time_limit = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "300"))
task_soft_time_limit = soft_limit(task_time_limit)

_recovery = RecoveryConfig.from_env()
# The longest a run may take: the time limit, or a recovery resubmission's limit.
_longest_run = max(task_time_limit, _recovery.recovery_timeout)
# A sentinel:// broker or backend follows the primary its sentinels know by this name,
# the tracker's own (README: Redis Sentinel). Set whatever the URLs: a redis:// one
# ignores it, and a sentinel:// URL given later (``--redis-url``) finds it in place.
_sentinel = {"master_name": _recovery.sentinel_master}

broker_transport_options = {
    # An unacked message of a vanished node becomes visible again after this long. It
    # must outlive the longest run (else a running task is delivered twice), so it
    # follows the time limits instead of kombu's one-hour default.
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(_longest_run + 60))),
    # Sweep for such messages every few seconds, on every sweep (not every tenth).
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    **_sentinel,
}
result_backend_transport_options = _sentinel
# Keep retrying the broker at start instead of exiting when Redis is a moment late.
broker_connection_retry_on_startup = True
# Results are for callers and the demo; a day is plenty and bounds Redis memory.
result_expires = int(os.environ.get("CELERY_RESULT_EXPIRES", "86400"))
result_extended = True

worker_send_task_events = True
task_send_sent_event = True

beat_schedule_filename = os.environ.get("CELERY_BEAT_SCHEDULE", ".docrecovery/celerybeat-schedule")
