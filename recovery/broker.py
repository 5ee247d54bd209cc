"""Where the tasks travel: the broker, a setting of its own beside the tracker's Redis.

::

    REDIS_URL=redis://redis-host:6379/0                # the tracker, and the result backend
    CELERY_BROKER_URL=amqp://user:pw@rabbit-host:5672/docs   # the broker (or: celery -b URL)

The tracker (every record, lease and result) is the Redis of ``REDIS_URL``
(:func:`recovery.store.default_redis_url`). The broker is ``CELERY_BROKER_URL`` —
Celery's own name, which ``celery -b URL`` sets too, and which Celery itself prefers over
any ``broker_url`` in code — else that same Redis, so one Redis stays the zero-config
deployment. The result backend is ``CELERY_RESULT_BACKEND``, else the tracker's Redis.
Workers and beat (``celeryconfig``), the CLI, ``DistributedProcessor`` and the sender
app a manager builds for itself all resolve them here, so none of them sends to one
broker while the workers consume from another.

On RabbitMQ the task queues are classic durable queues, or quorum queues with
``CELERY_QUEUE_TYPE=quorum``. A queue is declared by every process that sends to it,
and RabbitMQ refuses a declaration whose arguments differ from the queue's
(``PRECONDITION_FAILED``), so workers and senders read the type here too.
"""

from __future__ import annotations

import os

from recovery.errors import ConfigError
from recovery.store import tls
from recovery.store.cluster import is_cluster_url
from recovery.store.urls import default_redis_url

BROKER_URL_ENV = "CELERY_BROKER_URL"
RESULT_BACKEND_ENV = "CELERY_RESULT_BACKEND"
QUEUE_TYPE_ENV = "CELERY_QUEUE_TYPE"
QUEUE_TYPES = ("classic", "quorum")
#: Kombu transports that keep their messages in Redis, and with them the visibility
#: timeout: an unacknowledged message comes back only once that has passed.
REDIS_TRANSPORTS = frozenset({"redis", "rediss", "sentinel"})


def default_broker_url(redis_url: str | None = None) -> str:
    """``CELERY_BROKER_URL``, else the tracker's Redis (``redis_url``, else
    ``REDIS_URL``; a ``rediss://`` one saying how certificates are checked, as Celery
    requires: :func:`recovery.store.tls.for_celery`) — unless that is a Redis Cluster,
    which kombu cannot use as a broker: then the broker must be named (ConfigError)."""
    named = os.environ.get(BROKER_URL_ENV)
    tracker = default_redis_url(redis_url)
    if not named and is_cluster_url(tracker):
        raise ConfigError(
            BROKER_URL_ENV,
            None,
            "a broker URL (amqp://... or redis://...): the tracker is a Redis Cluster, "
            "which Celery cannot use as its broker",
        )
    return named or tls.for_celery(tracker)


def default_result_backend(redis_url: str | None = None) -> str:
    """``CELERY_RESULT_BACKEND``, else the tracker's Redis (as for the broker)."""
    return os.environ.get(RESULT_BACKEND_ENV) or tls.for_celery(default_redis_url(redis_url))


def celery_urls(redis_url: str | None = None) -> dict[str, str]:
    """The broker and result backend of an app whose tracker is ``redis_url``, as
    ``app.conf.update(**celery_urls(url))`` takes them."""
    return {
        "broker_url": default_broker_url(redis_url),
        "result_backend": default_result_backend(redis_url),
    }


def is_redis(url: str) -> bool:
    """Whether kombu keeps this broker's messages in Redis (``redis+socket://`` too)."""
    scheme = url.partition("://")[0].lower()
    return scheme.partition("+")[0] in REDIS_TRANSPORTS


def queue_type() -> str:
    """``CELERY_QUEUE_TYPE``: ``classic`` (the default) or ``quorum``; RabbitMQ only."""
    value = os.environ.get(QUEUE_TYPE_ENV, "").strip().lower() or "classic"
    if value not in QUEUE_TYPES:
        raise ConfigError(QUEUE_TYPE_ENV, os.environ[QUEUE_TYPE_ENV], " or ".join(QUEUE_TYPES))
    return value


def queue_arguments() -> dict[str, str] | None:
    """The arguments every task queue is declared with (None for classic queues)."""
    kind = queue_type()
    return None if kind == "classic" else {"x-queue-type": kind}
