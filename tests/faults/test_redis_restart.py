"""Redis dies mid-run and comes back from its append-only file.

Broker and tracker share one dedicated append-only redis-server (Celery's results go
to the session's server, so storing a task's state does not block on the dead one).
It is SIGKILLed while two large documents are being parsed: when they finish, storing
their result fails (``ConnectionError``), and so does recording that failure, which
is spooled in ``DOCRECOVERY_SPOOL_DIR``. The server restarts from its AOF on the same
port, the worker reconnects, ``recovery.run`` replays the spool and resubmits, and
no document is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from faults.support import (
    FAST_ENV,
    TASK,
    StartRedis,
    Worker,
    assert_every_document_processed,
    inflight_score,
    log_tail,
    make_batch,
    processed,
    record,
    restore,
    sending_app,
    settled,
    spooled_events,
    take_census,
    wait_for,
    wait_steady,
    wait_unchanged,
)

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]
MISSING = (3, 9, 14, 17)
SLOW = (18, 19)


@pytest.fixture
def sender(redis_url: str) -> Iterator[Callable[[str], Celery]]:
    """Factory of a sending app for a broker (results on the session's Redis)."""
    made: list[Celery] = []

    def create(broker: str) -> Celery:
        app = sending_app("faults-sender", broker, redis_url)
        made.append(app)
        return app

    yield create
    for app in made:
        app.close()


def test_failures_while_redis_is_down_are_spooled_and_replayed_after_it_restarts(
    dedicated_redis: StartRedis,
    worker_process: StartWorker,
    sender: Callable[[str], Celery],
    doc_root: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    server = dedicated_redis("aof")
    client = redis.Redis.from_url(
        server.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    app = sender(server.url)
    spool = tmp_path / "spool"
    env = {
        **FAST_ENV,
        "REDIS_URL": server.url,
        "CELERY_RESULT_BACKEND": redis_url,
        # The killed runs' messages stay unacked for the whole test: recovery, not a
        # redelivery, brings those documents back.
        "CELERY_VISIBILITY_TIMEOUT": "120",
        "DOCRECOVERY_NETWORK_RETRY_INTERVAL_HOURS": "0",
        "DOCRECOVERY_SPOOL_DIR": str(spool),
    }
    worker = worker_process("w1", env=env, args=("-P", "prefork", "-c", "2"))
    explain = log_tail(worker)
    docs = make_batch(doc_root, 20, slow=SLOW, missing=MISSING, megabytes=2)
    small, slow = docs[: SLOW[0]], docs[SLOW[0] :]

    # Given a batch whose small documents went through (four of them missing)
    for doc in small:
        app.send_task(TASK, args=doc.args)
    wait_steady(lambda: settled(client, small), 60, "the small documents", explain)
    assert {record(client, docs[n].doc_id)["cat"] for n in MISSING} == {"file_not_found"}

    # When Redis is killed while two large documents are being parsed
    running = [str(app.send_task(TASK, args=doc.args).id) for doc in slow]
    wait_for(
        lambda: all(inflight_score(client, t) for t in running), 30, "the large documents", explain
    )
    server.kill()

    # Then their failure events are spooled on the worker, not dropped
    wait_for(lambda: spooled_events(spool) >= len(slow), 30, "the spooled failures", explain)
    restore(docs[n] for n in MISSING)

    # When Redis restarts from its append-only file on the same port
    server.start()
    assert {record(client, docs[n].doc_id)["cat"] for n in MISSING} == {"file_not_found"}
    summary: dict[str, Any] = app.send_task("recovery.run", queue="recovery").get(timeout=60)

    # Then the run replays the spooled failures and resubmits every document it can
    assert summary["spool_replayed"] == len(slow), summary
    assert spooled_events(spool) == 0
    assert "failure event spooled" in worker.log()
    sent = {item["doc_id"] for item in summary["resubmitted"]}
    assert sent == {d.doc_id for d in [*slow, *(docs[n] for n in MISSING)]}, summary
    assert {record(client, d.doc_id).get("cat") for d in slow} <= {"network", None}
    assert_every_document_processed(client, "redis restart", docs, 60, explain)
    client.close()


def test_a_spooled_failure_replayed_after_a_later_success_does_not_track_the_document(
    dedicated_redis: StartRedis,
    worker_process: StartWorker,
    sender: Callable[[str], Celery],
    doc_root: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    server = dedicated_redis("aof")
    client = redis.Redis.from_url(
        server.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    app = sender(server.url)
    spool = tmp_path / "spool"
    env = {
        **FAST_ENV,
        "REDIS_URL": server.url,
        "CELERY_RESULT_BACKEND": redis_url,
        "DOCRECOVERY_SPOOL_DIR": str(spool),
        "DOCRECOVERY_NETWORK_RETRY_INTERVAL_HOURS": "0",
    }
    worker = worker_process("w1", env=env)
    explain = log_tail(worker)
    [doc] = make_batch(doc_root, 1, slow=[0])

    # Given a run whose failure was spooled while Redis was down
    task_id = str(app.send_task(TASK, args=doc.args).id)
    wait_for(lambda: inflight_score(client, task_id), 30, "the run", explain)
    server.kill()
    wait_for(lambda: spooled_events(spool) == 1, 30, "the spooled failure", explain)

    # When Redis is back and the document is submitted again, and succeeds
    server.start()
    app.send_task(TASK, args=doc.args)
    wait_for(lambda: processed(client, doc), 60, "the second run", explain)
    wait_for(lambda: spooled_events(spool) == 0, 10, "the spool replay", explain)
    fields = wait_unchanged(lambda: record(client, doc.doc_id), 10, "the record")

    # Then the older failure, replayed after that success, does not track the
    # processed document again (the next recovery run would process it twice)
    census = take_census(client, "stale spooled failure", [doc])
    assert census.lost == [], census.line()
    assert fields == {}, f"processed, yet tracked: {fields.get('state')} {fields.get('cat')}"
    client.close()
