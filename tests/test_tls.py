"""The tracker, Celery's broker, its result backend and beat on a Redis that speaks TLS.

One ``rediss://`` URL names them all (README: TLS). Celery refuses such a URL without
``ssl_cert_reqs`` and spells it ``CERT_REQUIRED``; redis-py, the client of the tracker
and of RedBeat, checks certificates when it is absent and spells it ``required``. Here
a real redis-server listens on a TLS port only, with a certificate from a test CA
(trustme), one requires client certificates too, and a real worker processes
documents through the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import trustme
from celery import Celery
from conftest import celeryconfig_app, started_with_tls, tls_files
from faults.support import FAST_ENV, Doc, Worker, processed, record, wait_for, write_text
from redbeat.schedulers import get_redis

from recovery.api import FailedDocumentsTracker
from recovery.broker import celery_urls
from recovery.config import RecoveryConfig
from recovery.errors import ConfigError, TrackerRefused, TrackerUnavailable
from recovery.records import FailedDocumentRecord
from recovery.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
StartWorker = Callable[..., Worker]


def start_tls_server(where: Path, *, client_certificates: bool) -> RedisServer:
    """A redis-server on a TLS port only (see :func:`conftest.tls_files`)."""
    files = tls_files(where, client_certificates=client_certificates)
    server = RedisServer(where / "redis", tls=files)
    started_with_tls(server.start)
    return server


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_tls_server(tmp_path_factory.mktemp("tls"), client_certificates=False)
    yield server
    server.stop()


@pytest.fixture
def tls_client(tls_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        tls_server.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    client.flushall()
    yield client
    client.close()


def failure(path: str) -> FailedDocumentRecord:
    return FailedDocumentRecord(path, f"task-{path}", "RuntimeError: boom")


@pytest.mark.parametrize("spelling", ["required", "CERT_REQUIRED"])
def test_the_tracker_checks_the_certificate_in_either_spelling(
    tls_server: RedisServer, tls_client: redis.Redis, spelling: str
) -> None:
    # Given the URL with Celery's spelling of the check or redis-py's
    tracker = FailedDocumentsTracker(f"{tls_server.url}&ssl_cert_reqs={spelling}", RecoveryConfig())
    try:
        # When a failure is recorded over TLS
        outcome = tracker.store.record_failure(failure("/docs/a.pdf"))
        status = tracker.reports.status()
    finally:
        tracker.close()

    # Then it is tracked on that server
    assert outcome.state == "failed"
    assert status["total_failed_documents"] == 1
    assert tls_client.zcard("{docrecovery}:failed") == 1


def test_a_certificate_the_url_does_not_trust_is_a_refusal_that_says_what_to_check(
    tls_server: RedisServer, tmp_path: Path
) -> None:
    # Given a URL naming a CA that did not sign the server's certificate
    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    url = f"rediss://:hunter2-secret@127.0.0.1:{tls_server.port}/0?ssl_ca_certs={other}"
    tracker = FailedDocumentsTracker(url, RecoveryConfig())
    try:
        # When the tracker is used
        with pytest.raises(TrackerRefused) as caught:
            tracker.store.record_failure(failure("/docs/a.pdf"))
    finally:
        tracker.close()

    # Then it is refused (trying again will not help), saying what to check, no password
    message = str(caught.value)
    assert "certificate verify failed" in message
    assert "ssl_ca_certs must name the CA that signed the server's certificate" in message
    assert "hunter2-secret" not in message


def test_an_unknown_certificate_check_is_refused_at_start_by_name() -> None:
    url = "rediss://:hunter2-secret@127.0.0.1:6380/0?ssl_cert_reqs=maybe"
    refused = r"REDIS_URL.*ssl_cert_reqs=maybe.*CERT_REQUIRED"
    with pytest.raises(ConfigError, match=refused) as caught:
        FailedDocumentsTracker(url, RecoveryConfig())
    assert "hunter2-secret" not in str(caught.value)


def test_celerys_urls_made_from_a_rediss_url_check_certificates_as_the_tracker_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    tracker = "rediss://h:6380/0?ssl_ca_certs=/etc/ca.crt"
    assert celery_urls(tracker) == {
        "broker_url": f"{tracker}&ssl_cert_reqs=required",
        "result_backend": f"{tracker}&ssl_cert_reqs=required",
    }
    # a URL that says how to check, and a broker named apart, are taken as given
    said = f"{tracker}&ssl_cert_reqs=CERT_OPTIONAL"
    assert celery_urls(said)["broker_url"] == said
    monkeypatch.setenv("CELERY_BROKER_URL", "rediss://broker:6380/0")
    assert celery_urls(tracker)["broker_url"] == "rediss://broker:6380/0"


def test_a_worker_on_a_tls_redis_processes_and_recovers_documents_through_one_url(
    tls_server: RedisServer,
    tls_client: redis.Redis,
    worker_process: StartWorker,
    doc_root: Path,
    tmp_path: Path,
) -> None:
    # Given a worker whose only setting is the rediss:// URL (broker, backend, tracker)
    env = {**FAST_ENV, "REDIS_URL": tls_server.url}
    worker_process("w1", env=env)
    good = Doc(str(write_text(doc_root / "good.txt")))
    missing = Doc(str(doc_root / "missing.txt"))
    cli_env = {**os.environ, **env, "DOCRECOVERY_SPOOL_DIR": str(tmp_path / "spool")}

    def docrecovery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "main.py"), *args],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )

    # When a document and one not uploaded yet are submitted
    submitted = docrecovery("submit", good.path, missing.path, "--wait", "60")

    # Then the result and the categorized failure are on the TLS server
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    assert processed(tls_client, good)
    assert record(tls_client, missing.doc_id)["cat"] == "file_not_found"

    # And once the file is there, recovery resubmits it through the same Redis
    write_text(Path(missing.path))
    recovered = docrecovery("recover")
    assert "1 resubmitted" in recovered.stdout, recovered.stdout + recovered.stderr
    wait_for(lambda: processed(tls_client, missing), 60, "the recovered document")
    wait_for(lambda: not record(tls_client, missing.doc_id), 30, "its record to be cleared")


def test_a_server_that_requires_client_certificates_gets_the_urls_from_every_client(
    tmp_path: Path,
) -> None:
    # Given a server that requires a client certificate, and a URL that names one
    server = start_tls_server(tmp_path, client_certificates=True)
    tracker = FailedDocumentsTracker(server.url, RecoveryConfig())
    anonymous = FailedDocumentsTracker(server.url.partition("&ssl_certfile=")[0])
    app = Celery("mtls", set_as_current=False)
    app.conf.update(**celery_urls(server.url))
    try:
        # When the tracker, Celery's broker and its result backend use that URL
        outcome = tracker.store.record_failure(failure("/docs/a.pdf"))
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            broker_answered = connection.default_channel.client.ping()
        app.backend.set("docrecovery-mtls", "stored")
        stored = app.backend.get("docrecovery-mtls")

        # Then each of them got in; without the certificate the tracker does not
        with pytest.raises(TrackerUnavailable, match="the URL must give ssl_certfile"):
            anonymous.reports.status()
    finally:
        tracker.close()
        anonymous.close()
        app.close()
        server.stop()
    assert outcome.state == "failed"
    assert broker_answered
    assert stored == b"stored"


def test_celeryconfigs_broker_backend_and_beat_reach_a_tls_redis_named_in_celerys_spelling(
    tls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given REDIS_URL with the check spelled as Celery's documentation spells it
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", f"{tls_server.url}&ssl_cert_reqs=CERT_REQUIRED")
    app = celeryconfig_app("tls-conf")
    try:
        # When the broker, the result backend and beat's RedBeat use what it made
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            broker_answered = connection.default_channel.client.ping()
        app.backend.set("docrecovery-tls-conf", "stored")
        stored = app.backend.get("docrecovery-tls-conf")
        beat_answered = get_redis(app).ping()
    finally:
        app.close()

    # Then each of them reached the server, its certificate checked
    assert broker_answered
    assert stored == b"stored"
    assert beat_answered
