"""Celery's own settings for the document pipeline, read from the environment.

Two settings say where things are (:mod:`recovery.broker`):

- ``REDIS_URL`` — the tracker's Redis (``recovery.store.urls.default_redis_url``)
  and, unless ``CELERY_RESULT_BACKEND`` says otherwise, the result backend;
- ``CELERY_BROKER_URL`` (or ``celery -b URL``) — the broker, e.g. RabbitMQ
  (``amqp://user:pw@host:5672/vhost``); unset, the broker is that same Redis.

The broker-specific settings below follow the broker: a Redis broker's visibility
timeout, a RabbitMQ broker's queue type and cancel-on-connection-loss. Recovery settings
are not here: they live in one validated ``recovery.RecoveryConfig`` (``DOCRECOVERY_*``
variables), and ``recovery.install`` adds the ``recovery.run`` beat entry from it.
"""

from __future__ import annotations

import os
from typing import Any

from kombu import Exchange, Queue

from recovery import broker as _broker
from recovery.config import RecoveryConfig, soft_limit
from recovery.errors import ConfigError
from recovery.keys import Keys
from recovery.policy import longest_run
from recovery.store.cluster import first_node_url, is_cluster_url
from recovery.store.sentinel import SENTINEL_TIMEOUTS, SentinelURL, is_sentinel, sentinel_login
from recovery.store.tls import for_redis_py
from recovery.store.urls import redact, tracker_url


def _seconds(name: str, default: int, low: int = 0) -> int:
    """A whole number of seconds from the environment variable ``name``; a bad one is a
    ConfigError naming it (every command and worker imports these settings first, and
    a bare int() failed them with a ValueError traceback)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value: int | None = int(raw)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ConfigError(name, raw, f"a whole number of seconds >= {low}")
    return value


broker_url = _broker.default_broker_url()
result_backend = _broker.default_result_backend()

# Messages are JSON only: a pickled payload from the broker could run code.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_default_queue = "documents"
# Each queue has its own exchange and routing key: declared bare, all three would bind
# to the default exchange under the key "documents".
# On RabbitMQ they are durable and their messages persistent (Celery's defaults), so a
# broker restart loses no task. Classic queues live on one RabbitMQ node; quorum queues
# (CELERY_QUEUE_TYPE=quorum) are replicated over a RabbitMQ cluster and survive the loss
# of a minority of its nodes, for more disk and network per message. With quorum
# queues Celery applies the prefetch per consumer and sends countdown/ETA tasks through
# RabbitMQ's native delayed delivery. Senders declare the same type (recovery.broker).
task_queues = tuple(
    Queue(name, Exchange(name), routing_key=name, queue_arguments=_broker.queue_arguments())
    for name in ("documents", "recovery", "highmem")
)
task_default_queue_type = _broker.queue_type()
task_create_missing_queue_type = task_default_queue_type
task_routes = {
    "tasks.process_document": {"queue": "documents"},
    "recovery.run": {"queue": "recovery"},
}

# Ack after the task ran, so a task on a node that dies is redelivered, not lost: by
# Redis once the visibility timeout below has passed, by RabbitMQ as soon as the node's
# connection closes.
#
# RabbitMQ closes the channel of a consumer that holds a message unacknowledged longer
# than its `consumer_timeout` (30 min by default since 3.8.15) and redelivers the
# message. With late acks a message stays unacknowledged for its whole run, so that
# timeout must outlive the longest run: max(CELERY_TASK_TIME_LIMIT,
# DOCRECOVERY_MAX_RECOVERY_TIMEOUT) plus DOCRECOVERY_LEASE_GRACE_SECONDS, 3660 s with
# the defaults — above RabbitMQ's 30 minutes. Set it in rabbitmq.conf
# (`consumer_timeout = 3900000`, in ms; at runtime `rabbitmqctl eval
# 'application:set_env(rabbit, consumer_timeout, 3900000).'` for channels opened
# afterwards), or on RabbitMQ >= 3.12 per queue with a policy:
# `rabbitmqctl set_policy -p VHOST docrecovery '^(documents|recovery|highmem)$'
# '{"consumer-timeout": 3900000}' --apply-to queues`.
task_acks_late = True
# A child killed mid-task (OOM, SIGKILL) requeues its message instead of failing it.
task_reject_on_worker_lost = True
# Take one message at a time: long documents should not sit behind a busy child (on
# RabbitMQ: basic.qos prefetch_count = concurrency, one unacknowledged message a child).
worker_prefetch_multiplier = 1
# Track STARTED so Flower and result queries can tell running from queued.
task_track_started = True
# No document may hold a child forever: 5 min hard, 4.5 min soft (SoftTimeLimitExceeded).
task_time_limit = _seconds("CELERY_TASK_TIME_LIMIT", 300)
task_soft_time_limit = soft_limit(task_time_limit)

_recovery = RecoveryConfig.from_env()
# The longest a run may take: the time limit, or a recovery resubmission's (grown up to
# DOCRECOVERY_MAX_RECOVERY_TIMEOUT for a document that timed out).
_longest_run = int(longest_run(_recovery, task_time_limit))
# A sentinel:// broker or backend follows the primary its sentinels know by this name,
# the tracker's own (README: Redis Sentinel). Set whatever the URLs: a redis:// one
# ignores it, and a sentinel:// URL given later (``--redis-url``) finds it in place.
_sentinel: dict[str, object] = {"master_name": _recovery.sentinel_master}
_sentinel_tls = _recovery.sentinel_tls
_sentinel_kwargs = sentinel_login(_recovery.sentinel_password, _sentinel_tls)
if _sentinel_kwargs:
    _sentinel["sentinel_kwargs"] = _sentinel_kwargs
# and the primary they name over TLS too, for a sentinel:// broker and result backend
if _sentinel_tls and is_sentinel(broker_url):
    broker_use_ssl = _sentinel_tls
if _sentinel_tls and is_sentinel(result_backend):
    redis_backend_use_ssl = _sentinel_tls

if _broker.is_redis(broker_url):
    broker_transport_options = {
        # An unacked message of a vanished node becomes visible again after this long.
        # It must outlive the longest run (else a running task is delivered twice), so
        # it follows the time limits instead of kombu's one-hour default.
        "visibility_timeout": _seconds("CELERY_VISIBILITY_TIMEOUT", _longest_run + 60, low=1),
        # Sweep for such messages every few seconds, on every sweep (not every tenth).
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        **_sentinel,
    }
else:
    # A worker that loses its connection to RabbitMQ cannot ack what it runs, and
    # RabbitMQ redelivers those messages at once: stop the runs (their redelivery is
    # then a worker_lost retry) rather than let a second worker run each alongside.
    worker_cancel_long_running_tasks_on_connection_loss = True
result_backend_transport_options = _sentinel
# Keep retrying the broker at start instead of exiting when Redis is a moment late.
broker_connection_retry_on_startup = True
# Results are for callers and the demo; a day is plenty and bounds Redis memory.
result_expires = _seconds("CELERY_RESULT_EXPIRES", 86400)
result_extended = True

worker_send_task_events = True
task_send_sent_event = True

# Beat: RedBeat keeps the schedule in the tracker's Redis, under docrecovery's prefix, so
# several beats (or workers started with --beat) may run: the one holding the lock
# schedules, the others wait for it. A holder renews the lock at every wake-up; when it
# dies, the lock expires and a standby takes it at its next try, so the schedule goes on
# within redbeat_lock_timeout + beat_max_loop_interval seconds.
beat_scheduler = "redbeat.RedBeatScheduler"
redbeat_key_prefix = Keys(_recovery.key_prefix).beat
# How long a beat sleeps at most: the holder renews its lock, a standby tries for it.
# (`celery beat` also reads CELERY_BEAT_MAX_INTERVAL itself, as its --max-interval.)
beat_max_loop_interval = _seconds("CELERY_BEAT_MAX_INTERVAL", 10)
redbeat_lock_timeout = _seconds("CELERY_BEAT_LOCK_TIMEOUT", 60)
if not 0 < beat_max_loop_interval < redbeat_lock_timeout:
    # a lock that expires between two renewals would pass to a standby while its
    # holder still schedules
    raise ConfigError(
        "CELERY_BEAT_LOCK_TIMEOUT",
        redbeat_lock_timeout,
        f"seconds above CELERY_BEAT_MAX_INTERVAL ({beat_max_loop_interval}), which must be > 0",
    )
# RedBeat's own client options (set, so it does not borrow the broker's): a beat cut off
# from Redis fails within seconds and exits, instead of hanging while its lock expires.
redbeat_redis_options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 10}
_tracker = tracker_url(broker=broker_url)
if is_cluster_url(_tracker):
    # RedBeat takes a cluster as one node's URL and its cluster option; every key it
    # writes shares the {prefix} hash tag, so its pipelines stay on one node.
    redbeat_redis_url = for_redis_py(first_node_url(_tracker))
    redbeat_redis_options.update(cluster=True, decode_responses=True)
elif is_sentinel(_tracker):
    # RedBeat follows a Sentinel-managed primary in its own sentinel mode: a
    # "redis-sentinel" URL, the sentinels and the primary's name in its options (given
    # the sentinel:// URL itself, its client refuses the scheme and beat cannot start).
    _where = SentinelURL.parse(_tracker, redact(_tracker))
    redbeat_redis_url = "redis-sentinel://"
    redbeat_redis_options.update(
        sentinels=list(_where.sentinels),
        service_name=_recovery.sentinel_master,
        db=_where.db,
        password=_where.password,
        sentinel_kwargs={**SENTINEL_TIMEOUTS, **_sentinel_kwargs},
    )
    if _where.username:
        redbeat_redis_options["username"] = _where.username
    if _sentinel_tls:
        redbeat_redis_use_ssl = _sentinel_tls
else:
    # RedBeat's client is redis-py's: Celery's CERT_REQUIRED spelled as redis-py reads it
    redbeat_redis_url = for_redis_py(_tracker)
