"""The tracker on Redis Sentinel: Celery's URLs, a failover followed, WAIT for replicas.

Every topology here is real: a primary, a replica and three sentinels, each a
redis-server on a loopback port (``recovery.sentinel_server.SentinelGroup``), and the
primary dies by SIGKILL. The end-to-end test holds the failover back (replica
priority 0) until the worker has spooled the failures it could not record, so the
window without a primary is as long as the test needs and no longer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import runpy
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from conftest import LoggedProcess, celeryconfig_app, started_with_tls, tls_files
from faults.support import (
    FAST_ENV,
    TASK,
    Worker,
    assert_every_document_processed,
    inflight_score,
    log_tail,
    make_batch,
    messages,
    record,
    restore,
    sending_app,
    settled,
    spooled_events,
    wait_for,
    wait_steady,
)
from redbeat.schedulers import get_redis

from recovery.config import RecoveryConfig
from recovery.errors import ConfigError, TrackerRefused, TrackerUnavailable
from recovery.keys import Keys
from recovery.records import FailedDocumentRecord
from recovery.sentinel_server import SentinelGroup
from recovery.store import Tracker, redact
from recovery.store.connection import connect
from recovery.store.scripts import source
from recovery.store.sentinel import SentinelURL, close_sentinels

StartWorker = Callable[..., Worker]
StartGroup = Callable[..., SentinelGroup]


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[StartGroup]:
    """Factory: ``sentinel_group(master="docs", replica_priority=0)`` starts a primary,
    a replica and three sentinels; all are stopped afterwards."""
    started: list[SentinelGroup] = []

    def start(**options: Any) -> SentinelGroup:
        group = SentinelGroup(tmp_path / f"sentinel-{len(started)}", **options)
        started.append(group)
        group.start()
        return group

    yield start
    for group in started:
        group.stop()


def failure(n: int) -> FailedDocumentRecord:
    return FailedDocumentRecord(
        document_path=f"/data/doc-{n}.pdf",
        task_id=f"task-{n}",
        error_message="RuntimeError: boom",
        error_type="RuntimeError",
    )


def loaded(server_client: redis.Redis, script: str) -> bool:
    sha = hashlib.sha1(source(script).encode()).hexdigest()
    return bool(server_client.script_exists(sha)[0])


# --- URLs and settings ---------------------------------------------------------------


def test_a_sentinel_url_in_celerys_form_names_every_sentinel_and_the_primarys_login() -> None:
    url = "sentinel://user:s3cret@10.0.0.1:26380/2;sentinel://10.0.0.2;sentinel://[::1]:26381"

    where = SentinelURL.parse(url, redact(url))

    assert where.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381))
    assert (where.db, where.username, where.password) == (2, "user", "s3cret")


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://:s3cret@10.0.0.1:26379;redis://10.0.0.2:6379",
        "sentinel://:s3cret@10.0.0.1:port",
        "sentinel://:s3cret@10.0.0.1:26379/zero",
        "sentinel://:s3cret@10.0.0.1:26379/²",
        "sentinel://:s3cret@10.0.0.1:26379?master_name=x",
        "sentinel://:s3cret@:26379",
    ],
)
def test_a_bad_sentinel_url_fails_at_once_naming_it_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError, match="sentinel://") as raised:
        Tracker(url, RecoveryConfig())

    assert "s3cret" not in str(raised.value)
    assert raised.value.key == "redis_url"


def test_redaction_masks_the_password_of_every_part_and_keeps_a_semicolon_in_one() -> None:
    url = "sentinel://:a@h1:26379;sentinel://u:b@h2:26379/0"

    assert redact(url) == "sentinel://:***@h1:26379;sentinel://u:***@h2:26379/0"
    assert redact("redis://:pa;ss@h:6379/0") == "redis://:***@h:6379/0"


@pytest.mark.parametrize("name", ["", "my master", 7])
def test_a_master_name_that_sentinel_cannot_have_fails_naming_the_key(name: Any) -> None:
    with pytest.raises(ConfigError, match="sentinel_master"):
        RecoveryConfig(sentinel_master=name)


def test_celery_is_given_the_master_name_for_its_broker_and_result_backend() -> None:
    import celeryconfig

    master = RecoveryConfig.from_env().sentinel_master
    assert celeryconfig.broker_transport_options["master_name"] == master
    assert celeryconfig.result_backend_transport_options == {"master_name": master}


def test_celerys_result_backend_stores_on_the_primary_the_sentinels_name(
    sentinel_group: StartGroup,
) -> None:
    import celeryconfig

    # Given Celery's own sentinel:// backend with the transport options celeryconfig sets
    group = sentinel_group(master="mymaster")
    app = Celery("sentinel-backend", backend=group.url, set_as_current=False)
    app.conf.result_backend_transport_options = celeryconfig.result_backend_transport_options

    # When a result is stored, Then it is on the primary
    app.backend.store_result("task-1", {"pages": 3}, "SUCCESS")
    primary = group.primary.client()
    assert primary.exists("celery-task-meta-task-1")
    assert app.backend.get_task_meta("task-1")["result"] == {"pages": 3}
    primary.close()
    app.close()


# --- sentinels that require a password ----------------------------------------------

SENTINEL_PASSWORD = "sentinel-s3cret"


def test_the_sentinel_password_is_a_string_never_shown() -> None:
    config = RecoveryConfig(sentinel_password=SENTINEL_PASSWORD)

    assert SENTINEL_PASSWORD not in repr(config)
    not_text: Any = 12345
    with pytest.raises(ConfigError, match="sentinel_password") as raised:
        RecoveryConfig(sentinel_password=not_text)
    assert "12345" not in str(raised.value)


def test_the_tracker_logs_in_to_sentinels_that_require_a_password(
    sentinel_group: StartGroup,
) -> None:
    # Given sentinels that require a password of their own (requirepass)
    group = sentinel_group(sentinel_password=SENTINEL_PASSWORD)

    # When a tracker is given it, Then it records on the primary they name
    tracker = Tracker(group.url, RecoveryConfig(sentinel_password=SENTINEL_PASSWORD))
    assert tracker.store.record_failure(failure(1), now="server").state == "failed"
    primary = group.primary.client()
    assert primary.exists(tracker.keys.record(failure(1).doc_id))
    primary.close()
    tracker.close()

    # And without it the call is refused, naming the setting (not redis-py's reprs)
    locked_out = Tracker(group.url, RecoveryConfig())
    with pytest.raises(TrackerRefused, match="sentinels refused the login") as raised:
        locked_out.reports.status()
    assert "sentinel_password" in str(raised.value)
    assert "ConnectionPool" not in str(raised.value)
    locked_out.close()

    # And a master name the sentinels do not watch is named as such
    unknown = Tracker(
        group.url, RecoveryConfig(sentinel_password=SENTINEL_PASSWORD, sentinel_master="docs")
    )
    with pytest.raises(TrackerUnavailable, match="no sentinel named a primary 'docs'"):
        unknown.reports.status()
    unknown.close()


def test_celery_logs_in_to_sentinels_that_require_a_password(
    sentinel_group: StartGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celeryconfig

    # Given celeryconfig read with DOCRECOVERY_SENTINEL_PASSWORD and a sentinel:// broker
    group = sentinel_group(sentinel_password=SENTINEL_PASSWORD)
    monkeypatch.setenv("DOCRECOVERY_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
    monkeypatch.setenv("CELERY_BROKER_URL", group.url)
    settings = runpy.run_path(celeryconfig.__file__)
    login = {"password": SENTINEL_PASSWORD}
    assert settings["broker_transport_options"]["sentinel_kwargs"] == login
    assert settings["result_backend_transport_options"]["sentinel_kwargs"] == login

    # When Celery's broker and result backend use those options
    app = Celery("sentinel-login", broker=group.url, backend=group.url, set_as_current=False)
    app.conf.broker_transport_options = settings["broker_transport_options"]
    app.conf.result_backend_transport_options = settings["result_backend_transport_options"]

    # Then both reach the primary through the sentinels
    with app.connection_for_write() as connection:
        assert connection.default_channel.client.ping()
    app.backend.store_result("task-1", {"pages": 3}, "SUCCESS")
    primary = group.primary.client()
    assert primary.exists("celery-task-meta-task-1")
    primary.close()
    app.close()


# --- TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "client_certificates", [False, True], ids=["tls", "client-certificates-broker-apart"]
)
def test_tracker_celery_and_beat_reach_the_primary_through_sentinels_over_tls(
    sentinel_group: StartGroup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    client_certificates: bool,
) -> None:

    # Given sentinels and servers that speak only TLS (requiring a client certificate,
    # with the broker on another Redis: beat then takes its TLS options from ours alone)
    files = tls_files(tmp_path / "certs", client_certificates=client_certificates)
    group = started_with_tls(lambda: sentinel_group(master="docs", tls=files))
    settings = {
        "REDIS_URL": group.url,
        "DOCRECOVERY_SENTINEL_MASTER": "docs",
        "DOCRECOVERY_SENTINEL_SSL_CA_CERTS": str(files.ca),
    }
    if files.client:
        settings["DOCRECOVERY_SENTINEL_SSL_CERTFILE"] = str(files.client[0])
        settings["DOCRECOVERY_SENTINEL_SSL_KEYFILE"] = str(files.client[1])
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    if client_certificates:
        monkeypatch.setenv("CELERY_BROKER_URL", redis_url)

    # When the tracker records a failure, and Celery's broker and result backend and
    # beat's RedBeat are built by celeryconfig from the same settings
    tracker = Tracker(group.url, RecoveryConfig.from_env())
    app = celeryconfig_app("sentinel-tls")
    try:
        outcome = tracker.store.record_failure(failure(1), now="server")
        with app.connection_for_write() as connection:
            broker_answered = connection.default_channel.client.ping()
        app.backend.store_result("task-1", {"pages": 3}, "SUCCESS")
        beat_answered = get_redis(app).ping()
    finally:
        tracker.close()
        app.close()

    # Then each of them reached the primary the sentinels name
    primary = group.primary.client()
    assert outcome.state == "failed"
    assert primary.exists(tracker.keys.record(failure(1).doc_id))
    assert broker_answered
    assert primary.exists("celery-task-meta-task-1")
    assert beat_answered
    primary.close()


def test_sentinel_tls_files_that_cannot_serve_are_refused_at_start(tmp_path: Path) -> None:
    files = tls_files(tmp_path, client_certificates=True)
    assert files.client is not None
    certfile, keyfile = (str(path) for path in files.client)
    with pytest.raises(ConfigError, match=r"sentinel_ssl_ca_certs.*a readable file"):
        RecoveryConfig(sentinel_ssl_ca_certs=str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match=r"sentinel_ssl_keyfile.*with sentinel_ssl_certfile"):
        RecoveryConfig(sentinel_ssl_ca_certs=str(files.ca), sentinel_ssl_certfile=certfile)
    with pytest.raises(ConfigError, match=r"sentinel_ssl_ca_certs.*to use sentinel_ssl_certfile"):
        RecoveryConfig(sentinel_ssl_certfile=certfile, sentinel_ssl_keyfile=keyfile)
    assert RecoveryConfig().sentinel_tls == {}


# --- beat --------------------------------------------------------------------------


def test_beat_schedules_recovery_on_the_primary_the_sentinels_name(
    sentinel_group: StartGroup, tmp_path: Path
) -> None:
    # Given sentinels that require a password, and a beat given only their URL, the
    # primary's name and that password
    group = sentinel_group(master="docs", sentinel_password=SENTINEL_PASSWORD)
    env = {
        **os.environ,
        "REDIS_URL": group.url,
        "DOCRECOVERY_SENTINEL_MASTER": "docs",
        "DOCRECOVERY_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": "0.02",
        "CELERY_BEAT_MAX_INTERVAL": "1",
    }
    command = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"]
    beat = LoggedProcess(command, env, tmp_path / "beat.log")
    primary = group.primary.client()
    try:
        # When it runs, Then it takes RedBeat's lock and sends recovery runs, on the primary
        def sent() -> bool:
            return any(
                m["headers"]["task"] == "recovery.run" for m in messages(primary, "recovery")
            )

        wait_for(sent, 60, "a recovery.run from beat", beat.log)
        assert "beat: Acquired lock" in beat.log()
        assert primary.exists(f"{Keys(RecoveryConfig().key_prefix).beat}:lock")
    finally:
        beat.stop()
        primary.close()


# --- failover ----------------------------------------------------------------------


def test_the_tracker_follows_a_promoted_replica_that_never_had_its_scripts(
    sentinel_group: StartGroup,
) -> None:
    # Given a tracker on Sentinel that recorded a failure, replicated
    group = sentinel_group(master="docs")
    tracker = Tracker(group.url, RecoveryConfig(sentinel_master="docs"))
    tracker.store.record_failure(failure(1), now="server")
    group.in_step()
    standby = group.replicas[0]
    replica = standby.client()
    replica.script_flush()
    assert not loaded(replica, "record_failure")

    # When the primary is killed
    group.primary.kill()

    # Then calls fail as unavailable (an event would be spooled) until a replica is
    # promoted, and then reach it, loading the scripts it never had
    with pytest.raises(TrackerUnavailable, match="record failure failed on sentinel://"):
        tracker.store.record_failure(failure(2), now="server")
    assert group.wait_failover(timeout=60) is standby
    tracker.store.record_failure(failure(3), now="server")
    assert loaded(replica, "record_failure")
    assert tracker.reports.status()["total_failed_documents"] == 2
    replica.close()
    tracker.close()


# --- WAIT for replicas ----------------------------------------------------------------


def test_with_wait_replicas_a_change_is_on_the_replica_when_the_call_returns(
    sentinel_group: StartGroup, caplog: pytest.LogCaptureFixture
) -> None:
    group = sentinel_group()
    config = RecoveryConfig(wait_replicas=1, wait_timeout_ms=5000)
    tracker = Tracker(group.primary.url, config)
    replica = group.replicas[0].client()

    # Given scripts the primary lost (a restart, SCRIPT FLUSH, a failover)
    tracker.connection.client.script_flush()

    # When a failure and a result are recorded with WAIT 1
    with caplog.at_level(logging.WARNING, logger="recovery.store"):
        tracker.store.record_failure(failure(1), now="server")
        tracker.store.put(tracker.keys.app("result", "doc-1"), "{}", 60)

    # Then both are on the replica already, and no replica was found missing
    assert replica.exists(tracker.keys.record(failure(1).doc_id))
    assert replica.exists(tracker.keys.app("result", "doc-1"))
    assert "replicas" not in caplog.text
    replica.close()
    tracker.close()


def test_a_change_the_replicas_do_not_acknowledge_stands_with_a_warning(
    sentinel_group: StartGroup, caplog: pytest.LogCaptureFixture
) -> None:
    group = sentinel_group()
    tracker = Tracker(group.primary.url, RecoveryConfig(wait_replicas=1, wait_timeout_ms=200))
    replica = group.replicas[0]
    assert replica.process is not None

    # Given a replica that does not answer
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        # When a failure is recorded with WAIT 1
        with caplog.at_level(logging.WARNING, logger="recovery.store"):
            outcome = tracker.store.record_failure(failure(1), now="server")
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)

    # Then it is recorded on the primary, and the warning says it is there alone
    assert outcome.state == "failed"
    assert tracker.reports.status()["total_failed_documents"] == 1
    assert "acknowledged by 0 of 1 replicas within 200 ms" in caplog.text
    tracker.close()


# --- the pipeline through a failover ------------------------------------------------


@pytest.fixture
def sender(redis_url: str) -> Iterator[Callable[[str, str], Celery]]:
    """Factory of a sending app on a Sentinel broker (results on the session's Redis)."""
    made: list[Celery] = []

    def create(broker: str, master: str) -> Celery:
        app = sending_app(
            "sentinel-sender", broker, redis_url, broker_transport_options={"master_name": master}
        )
        made.append(app)
        return app

    yield create
    for app in made:
        app.close()


@pytest.mark.slow
def test_the_pipeline_continues_after_its_primary_is_killed_and_nothing_is_lost(
    sentinel_group: StartGroup,
    worker_process: StartWorker,
    sender: Callable[[str, str], Celery],
    doc_root: Path,
    redis_url: str,
    tmp_path: Path,
) -> None:
    # Broker and tracker follow Sentinel; Celery's results stay on the session's Redis,
    # whose backend would hold a child for ~20 s retrying while no primary exists.
    group = sentinel_group(master="docs", replica_priority=0)
    client = connect(group.url, RecoveryConfig(sentinel_master="docs"))
    assert isinstance(client, redis.Redis)
    app = sender(group.url, "docs")
    spool = tmp_path / "spool"
    env = {
        **FAST_ENV,
        "REDIS_URL": group.url,
        "DOCRECOVERY_SENTINEL_MASTER": "docs",
        "CELERY_RESULT_BACKEND": redis_url,
        "CELERY_VISIBILITY_TIMEOUT": "120",
        "DOCRECOVERY_NETWORK_RETRY_INTERVAL_HOURS": "0",
        "DOCRECOVERY_SPOOL_DIR": str(spool),
    }
    worker = worker_process("w1", env=env, args=("-P", "prefork", "-c", "2"))
    explain = log_tail(worker)
    docs = make_batch(doc_root, 12, slow=(10, 11), missing=(3, 7), megabytes=2)
    small, slow = docs[:10], docs[10:]

    # Given a batch whose small documents went through (two of them missing), on a
    # replica in step with its primary
    for doc in small:
        app.send_task(TASK, args=doc.args)
    wait_steady(lambda: settled(client, small), 60, "the small documents", explain)
    assert {record(client, docs[n].doc_id)["cat"] for n in (3, 7)} == {"file_not_found"}
    running = [str(app.send_task(TASK, args=doc.args).id) for doc in slow]
    wait_for(lambda: all(inflight_score(client, t) for t in running), 60, "the large runs", explain)
    group.in_step()
    replica = group.replicas[0].client()
    replica.script_flush()
    assert not loaded(replica, "record_failure")

    # When the primary is SIGKILLed while two large documents are being parsed
    group.primary.kill()

    # Then their failures, which no primary can take, are spooled on the worker
    wait_for(lambda: spooled_events(spool) >= len(slow), 60, "the spooled failures", explain)
    restore(docs[n] for n in (3, 7))

    # When Sentinel promotes the replica, which never loaded the tracker's scripts
    group.allow_promotion()
    group.wait_failover(timeout=60)

    # Then a recovery run replays the spool on it and resubmits what failed
    summary: dict[str, Any] = app.send_task("recovery.run", queue="recovery").get(timeout=90)
    assert summary["spool_replayed"] == len(slow), summary
    assert spooled_events(spool) == 0
    assert loaded(replica, "record_failure")
    sent = {item["doc_id"] for item in summary["resubmitted"]}
    assert sent == {d.doc_id for d in [*slow, docs[3], docs[7]]}, summary

    # And the pipeline goes on: every document processed, none lost
    assert_every_document_processed(client, "sentinel failover", docs, 90, explain)
    replica.close()
    close_sentinels(client)
    client.close()
