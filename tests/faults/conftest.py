"""Fixtures of the fault-injection suite: Redis servers of a scenario's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.support import StartRedis
from recovery.redis_server import RedisServer


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Factory: ``dedicated_redis("aof", "--maxmemory", "64mb")`` starts an append-only
    redis-server with its data in ``tmp_path/aof``; every one is stopped afterwards."""
    started: list[RedisServer] = []

    def start(name: str = "redis", *extra_args: str) -> RedisServer:
        server = RedisServer(tmp_path / name, extra_args=extra_args)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
