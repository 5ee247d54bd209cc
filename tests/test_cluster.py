"""The tracker on a real 3-primary Redis Cluster (``redis+cluster://``).

The cluster is three redis-servers with ``--cluster-enabled yes`` on loopback ports,
joined by ``redis-cli --cluster create`` (:class:`recovery.redis_cluster.LocalCluster`),
started once for this module and flushed before each test. Celery's broker and result
backend stay on the session's plain Redis: a cluster is the tracker's store only.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from conftest import celeryconfig_app, started_with_tls, tls_files, trackers
from faults.support import Interrupted, interrupted_at, wait_for
from redbeat.schedulers import get_redis
from redis.cluster import RedisCluster

from recovery import DocumentRecoveryManager, RecoveryConfig, installed
from recovery.errors import ConfigError, TrackerUnavailable
from recovery.keys import Keys, shard_of, slot
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_cluster import LocalCluster, find_redis_cli
from recovery.redis_server import free_port
from recovery.store import Settlement, Tracker, connect
from recovery.store.cluster import cluster_nodes

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TIMEOUT = 30.0
HOUR = 3600.0
DAY = 86400.0


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    try:
        find_redis_cli()
    except FileNotFoundError as exc:
        pytest.skip(f"no Redis Cluster can be created here: {exc}")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The cluster's URL, every primary flushed."""
    client = connect(redis_cluster.url, RecoveryConfig())
    client.flushall()
    client.close()
    return redis_cluster.url


@pytest.fixture
def cluster_client(cluster_url: str) -> Iterator[RedisCluster]:
    client = connect(cluster_url, RecoveryConfig())
    assert isinstance(client, RedisCluster)
    yield client
    client.close()


@pytest.fixture
def make_tracker(cluster_url: str) -> Iterator[Callable[..., Tracker]]:
    with trackers(cluster_url, min_retry_interval_hours=0.0) as create:
        yield create


def failure(path: str, at: float, **fields: Any) -> FailedDocumentRecord:
    fields.setdefault("task_id", f"task-{path}-{at}")
    fields.setdefault("error_message", "RuntimeError: boom")
    return FailedDocumentRecord(document_path=path, failure_timestamp=at, **fields)


def primaries_holding(client: RedisCluster, pattern: str) -> set[str]:
    """Names of the primaries that hold a key matching ``pattern``."""
    return {
        node.name
        for node in client.get_primaries()  # type: ignore[no-untyped-call]
        if node.redis_connection is not None and node.redis_connection.keys(pattern)
    }


def same_shard(count: int, shards: int) -> list[str]:
    """``count`` paths of documents in one shard (the first)."""
    paths = (f"/dead/{n}.pdf" for n in itertools.count())
    return list(
        itertools.islice((p for p in paths if shard_of(document_id(p), shards) == 0), count)
    )


# --- the URL --------------------------------------------------------------------------


def test_a_cluster_url_names_its_nodes_in_order() -> None:
    url = "redis+cluster://user:secret@10.0.0.1:7000,node-b:7001,[::1]:7002/0"

    assert cluster_nodes(url) == [("10.0.0.1", 7000), ("node-b", 7001), ("::1", 7002)]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+cluster://:secret@127.0.0.1:7000/3", "'/3'"),
        ("redis+cluster://:secret@127.0.0.1", "'127.0.0.1'"),
        ("redis+cluster://:secret@127.0.0.1:7000,:7001", "':7001'"),
        ("redis+cluster://:secret@127.0.0.1:port", "'127.0.0.1:port'"),
        ("redis+cluster://:secret@127.0.0.1:7²", "'127.0.0.1:7²'"),
    ],
)
def test_a_bad_cluster_url_fails_at_once_naming_the_part_and_never_the_password(
    url: str, named: str
) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as caught:
        Tracker(url, RecoveryConfig())

    assert named in str(caught.value)
    assert "redis+cluster://[user:password@]host:port" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_an_unreachable_cluster_is_unavailable_when_used_not_when_configured() -> None:
    # Given a cluster URL where nothing listens, a tracker can still be made
    tracker = Tracker(f"redis+cluster://:secret@127.0.0.1:{free_port()}", RecoveryConfig())

    # When it is used, it says the cluster is unreachable (what a worker spools on)
    with pytest.raises(TrackerUnavailable, match="connect failed on") as caught:
        tracker.reports.status()
    assert "secret" not in str(caught.value)


# --- the tracker's operations ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("shards", "primaries"), [(1, 1), (3, 3)])
def test_every_operation_of_the_tracker_runs_on_a_cluster_one_slot_per_shard(
    make_tracker: Callable[..., Tracker], cluster_client: RedisCluster, shards: int, primaries: int
) -> None:
    tracker = make_tracker(failed_docs_retention_days=1, dead_max=shards, shards=shards)
    now = time.time()
    # Given failures of several kinds recorded on the cluster
    for i in range(4):
        tracker.store.record_failure(failure(f"/d/{i}.pdf", now - 2 * HOUR, worker_id="w1"))
    tracker.store.record_failure(
        failure("/d/old.pdf", now - 2 * DAY, worker_id="w2"), now=now - 2 * DAY
    )
    for path in same_shard(2, shards):
        tracker.store.record_failure(
            failure(path, now - HOUR, error_category="permanent", worker_id="w2")
        )

    # Then status and analysis count them
    status, analysis = tracker.reports.overview()
    assert status["total_failed_documents"] == 7
    assert status["dead"] == 2
    assert analysis["workers"]["w1"]["tracked"] == 4
    # And each shard's keys live on the one primary that owns its slot, every shard
    # on a primary of its own
    shard_keys = [shard.keys for shard in tracker.connection.shards]
    assert len(primaries_holding(cluster_client, "{docrecovery*")) == primaries
    for keys in shard_keys:
        assert len(primaries_holding(cluster_client, keys.pattern())) == 1
        assert cluster_client.cluster_keyslot(keys.due) == slot(keys.prefix)

    # When a run claims, settles and a document is resolved
    claim = tracker.claims.claim_due(10)
    ids = sorted(r.doc_id for r in claim.records)
    assert ids == sorted(document_id(f"/d/{i}.pdf") for i in range(4))
    outcomes = [
        Settlement(ids[0], "sent", "new-task"),
        *(Settlement(d, "release") for d in ids[1:]),
    ]
    assert tracker.claims.settle(outcomes, token=claim.token) == 1
    # (applied again, its reply lost, it counts nothing twice: each shard keeps its mark)
    assert tracker.claims.settle(outcomes, token=claim.token) == 1
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["recovery_runs"]) == (1, 1)
    assert tracker.store.resolve(ids[0], task_id="new-task", recovery_attempt=True).tracked
    assert tracker.reports.status()["recovery_metrics"]["successful_recoveries"] == 1

    # And maintenance runs: retention removes the old one, dead_max (a share of it in
    # each shard) trims one dead
    removed = tracker.maintenance.cleanup()
    assert removed == {"expired": 1, "dead_trimmed": 1}
    assert tracker.reports.status()["total_failed_documents"] == 4
    assert tracker.maintenance.delete([ids[1]]) == 1
    assert [r.doc_id for r in tracker.reports.get_records(ids)] == ids[2:]
    assert tracker.maintenance.drop_everything() > 0
    assert tracker.reports.status()["total_failed_documents"] == 0


@pytest.mark.slow
def test_the_run_lock_and_start_checks_work_on_a_cluster(
    make_tracker: Callable[..., Tracker],
) -> None:
    tracker, other = make_tracker(), make_tracker()

    with tracker.exclusive(30) as first, other.exclusive(30) as second:
        assert (first, second) == (True, False)
    assert tracker.warnings() == []


def test_a_call_cut_off_before_its_reply_leaves_nothing_for_the_next_to_read_on_a_cluster(
    make_tracker: Callable[..., Tracker], cluster_client: RedisCluster
) -> None:
    # Given a cluster tracker that has recorded a failure (its script is loaded)
    tracker = make_tracker()
    tracker.store.record_failure(failure("/docs/first.pdf", time.time()))
    assert tracker.reports.status()["total_failed_documents"] == 1

    # When an exception cuts a call off after its command went out, before its reply
    # is read (redis-py's cluster client closes the connection only on an Exception)
    with pytest.raises(Interrupted), interrupted_at("parse_response"):
        tracker.store.record_failure(failure("/docs/a.pdf", time.time()))

    # Then each later call reads its own reply
    key = tracker.store.keys.record(document_id("/docs/a.pdf"))
    wait_for(lambda: cluster_client.exists(key), 10, "the cut-off call to be applied")
    assert tracker.reports.status()["total_failed_documents"] == 2
    assert tracker.store.record_failure(failure("/docs/b.pdf", time.time())).state == "failed"
    assert tracker.reports.status()["total_failed_documents"] == 3


# --- a real worker ----------------------------------------------------------------------


@pytest.fixture(params=[1, 3], ids=["1-shard", "3-shards"])
def cluster_recovery(
    celery_app: Celery, cluster_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DocumentRecoveryManager]:
    """The app's recovery system tracking on the cluster (its broker stays on the
    session's Redis) in one shard or three, and a manager with the same settings;
    restored after."""
    rec = installed(celery_app)
    original = rec.config
    config = RecoveryConfig.from_mapping(
        {
            "min_retry_interval_hours": 0,
            "retry_jitter": 0,
            "enable_periodic_recovery": False,
            "spool_dir": str(tmp_path / "spool"),
            "shards": request.param,
        }
    )
    rec.configure(config, redis_url=cluster_url)
    manager = DocumentRecoveryManager(cluster_url, config, app=celery_app)
    yield manager
    manager.close()
    rec.configure(original)


@pytest.mark.slow
@pytest.mark.usefixtures("redis_url", "celery_worker")
def test_a_worker_records_and_recovers_a_document_on_a_cluster(
    cluster_recovery: DocumentRecoveryManager, celery_app: Celery, doc_root: Path
) -> None:
    tracker = cluster_recovery.tracker
    path = doc_root / "guide.txt"
    doc_id = document_id(str(path), "retries")
    # Given a document that failed in the worker because its file was missing
    celery_app.send_task("tasks.process_document", args=[str(path), "retries", {}])
    wait_for(lambda: tracker.reports.get_record(doc_id) is not None, TIMEOUT, "the failure")

    # When the file is restored and a recovery run resubmits it
    shutil.copy(SAMPLES / "celery-retries.txt", path)
    summary = cluster_recovery.run_batch()

    # Then the worker processes it, the tracker on the cluster forgets it, and counts it
    assert [sent.doc_id for sent in summary.resubmitted] == [doc_id]
    wait_for(lambda: tracker.reports.get_record(doc_id) is None, TIMEOUT, "the recovery")
    metrics = cluster_recovery.status()["recovery_metrics"]
    assert (metrics["recovery_attempts"], metrics["successful_recoveries"]) == (1, 1)


@pytest.mark.parametrize("client_certificates", [False, True], ids=["tls", "client-certificates"])
def test_the_tracker_and_beat_work_on_a_cluster_that_speaks_only_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, client_certificates: bool
) -> None:

    # Given a cluster on TLS ports only (its bus too), named with Celery's spelling of
    # the certificate check, the broker and result backend on the session's Redis
    files = tls_files(tmp_path / "certs", client_certificates=client_certificates)
    cluster = LocalCluster(tmp_path / "cluster", tls=files)
    started_with_tls(cluster.start)
    url = f"{cluster.url}&ssl_cert_reqs=CERT_REQUIRED"
    for name, value in {
        "REDIS_URL": url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }.items():
        monkeypatch.setenv(name, value)
    tracker = Tracker(url, RecoveryConfig(shards=3))
    app = celeryconfig_app("cluster-tls")
    try:
        # When failures are recorded over its primaries and beat's RedBeat is built
        states = {
            tracker.store.record_failure(failure(f"/docs/{n}.pdf", 1e9)).state for n in range(6)
        }
        tracked = tracker.reports.status()["total_failed_documents"]
        beat_answered = get_redis(app).ping()
    finally:
        tracker.close()
        app.close()
        cluster.stop()

    # Then both reached the cluster over TLS
    assert states == {"failed"}
    assert tracked == 6
    assert beat_answered


@pytest.mark.slow
def test_beat_schedules_from_a_cluster_tracker(
    cluster_client: RedisCluster, cluster_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Given beat (RedBeat) with the tracker on the cluster and the broker on plain Redis
    env = {
        **os.environ,
        "REDIS_URL": cluster_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": "0.02",
        "CELERY_BEAT_MAX_INTERVAL": "1",
        "CELERY_BEAT_LOCK_TIMEOUT": "3",
    }
    broker = redis.Redis.from_url(redis_url)
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        # When it runs a few intervals
        deadline = time.monotonic() + TIMEOUT
        while broker.llen("recovery") < 2:
            assert beat.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

        # Then it sent recovery.run to the broker, holding its lock on the cluster
        assert cluster_client.exists(Keys().beat + ":lock")
        assert cluster_client.zcard(Keys().beat + ":schedule") == 1
    finally:
        beat.terminate()
        beat.wait(10)
        broker.close()
