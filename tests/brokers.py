"""The brokers end-to-end tests run on: the test's Redis, or RabbitMQ in a vhost of its own.

Redis as the broker is the zero-config deployment: broker and tracker are one server.
RabbitMQ is the one this kind of machine runs on 127.0.0.1:5672 (guest/guest); each
test gets a vhost of its own, made and deleted with ``rabbitmqctl`` (which needs root,
or the RabbitMQ user), so its queues start empty and nothing it leaves behind reaches
another test. Where no RabbitMQ runs, or it cannot be managed, the test is skipped
with the reason.

Both kinds answer the same questions (:class:`Broker`): how many messages wait in a
queue, whether every task queue is empty with nothing delivered and unacknowledged, and
the ``docrecovery`` headers of the messages waiting.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis
from celery import Celery
from kombu import Connection

from recovery.calls import HEADER

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_USER = "guest"
QUEUES = ("documents", "recovery", "highmem")
#: Kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED = "unacked"


class Broker(Protocol):
    kind: str
    url: str

    def waiting(self, queue: str) -> int:
        """Messages ready in ``queue`` (not yet delivered)."""

    def idle(self) -> bool:
        """No task queue holds a message, ready or delivered and unacknowledged."""

    def header_doc_ids(self, queue: str = "documents") -> list[str]:
        """The document id in the recovery header of each message waiting in ``queue``."""


class RedisBroker:
    """The test's Redis as the broker: kombu keeps each queue as a list."""

    kind = "redis"

    def __init__(self, client: redis.Redis, url: str) -> None:
        self.client = client
        self.url = url

    def waiting(self, queue: str) -> int:
        return int(self.client.llen(queue))

    def idle(self) -> bool:
        return not any(self.waiting(q) for q in QUEUES) and not self.client.hlen(UNACKED)

    def header_doc_ids(self, queue: str = "documents") -> list[str]:
        raw: list[str] = self.client.lrange(queue, 0, -1)  # type: ignore[assignment]
        return [json.loads(item)["headers"][HEADER]["doc_id"] for item in reversed(raw)]


class RabbitBroker:
    """A vhost of the local RabbitMQ as the broker."""

    kind = "rabbitmq"

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.url = f"amqp://{RABBITMQ_USER}:{RABBITMQ_USER}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"

    def counts(self) -> dict[str, tuple[int, int]]:
        """Each queue of the vhost: (ready, delivered and unacknowledged)."""
        out = rabbitmqctl(
            "list_queues",
            "-p",
            self.vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--no-table-headers",
        )
        rows = (line.split() for line in out.splitlines() if line.strip())
        return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}

    def waiting(self, queue: str) -> int:
        return self.counts().get(queue, (0, 0))[0]

    def idle(self) -> bool:
        counts = self.counts()
        return not any(sum(counts.get(q, (0, 0))) for q in QUEUES)

    def header_doc_ids(self, queue: str = "documents") -> list[str]:
        """Read without acknowledging: closing the channel puts every message back."""
        found = []
        with Connection(self.url) as connection:
            channel = connection.channel()
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                found.append(message.headers[HEADER]["doc_id"])
            channel.close()
        return found


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@functools.cache
def rabbitmq_unavailable() -> str | None:
    """Why no test can run on RabbitMQ here, or None when one can."""
    if shutil.which("rabbitmqctl") is None:
        return "no RabbitMQ here: rabbitmqctl is not on PATH"
    try:
        socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2).close()
    except OSError as exc:
        return f"no RabbitMQ listening on {RABBITMQ_HOST}:{RABBITMQ_PORT} ({exc})"
    try:
        rabbitmqctl("list_vhosts")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a vhost on the local RabbitMQ (run as root?): {exc}"
    return None


@contextmanager
def rabbitmq_vhost() -> Iterator[RabbitBroker]:
    """A vhost of this test's own, with every permission for guest; deleted after."""
    broker = RabbitBroker(f"docrecovery-test-{uuid.uuid4().hex[:12]}")
    rabbitmqctl("add_vhost", broker.vhost)
    try:
        rabbitmqctl("set_permissions", "-p", broker.vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield broker
    finally:
        rabbitmqctl("delete_vhost", broker.vhost)


def repoint(app: Celery, url: str) -> None:
    """Send ``app``'s tasks to ``url`` from now on. A finalized app keeps what it made
    for its first broker: its connection pool (kombu's, shared by URL, so left open for
    whoever else uses it), and in ``app.amqp`` its producers and the events exchange
    (fanout on Redis, topic on RabbitMQ); the app drops them and makes new ones."""
    app.conf.update(broker_url=url)
    app._pool = None
    app.__dict__.pop("amqp", None)
