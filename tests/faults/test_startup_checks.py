"""A tracker's Redis that may evict keys is reported when a worker starts.

With ``maxmemory`` set and an evicting ``maxmemory-policy``, Redis drops keys under
memory pressure and failed-document records vanish without a trace (rq #964's store
filling Redis, then the cure being worse). ``recovery.store.checks.check_redis`` warns;
``noeviction`` is quiet; a worker started against such a server logs the warning
and still starts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from faults.support import FAST_ENV, StartRedis, Worker, wait_for
from recovery.store.checks import check_redis

pytestmark = pytest.mark.slow

StartWorker = Callable[..., Worker]
EVICTING = ("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")


@pytest.mark.parametrize("decode", [True, False], ids=["decoding-client", "bytes-client"])
def test_an_evicting_policy_warns_and_noeviction_does_not(
    dedicated_redis: StartRedis, decode: bool
) -> None:
    # Given a Redis that evicts any key under memory pressure
    server = dedicated_redis("evicting", *EVICTING)
    client = redis.Redis.from_url(server.url, decode_responses=decode)
    try:
        # Then the check warns, naming the policy
        [warning] = check_redis(client)
        assert "maxmemory-policy" in warning
        assert "allkeys-lru" in warning

        # And once the policy is noeviction it has nothing to say
        client.config_set("maxmemory-policy", "noeviction")
        assert check_redis(client) == []
    finally:
        client.close()


def test_a_worker_started_on_an_evicting_redis_logs_the_warning_and_runs(
    dedicated_redis: StartRedis, worker_process: StartWorker
) -> None:
    server = dedicated_redis("evicting", *EVICTING)

    # When a worker starts with that Redis as broker and tracker
    worker = worker_process("w1", env={**FAST_ENV, "REDIS_URL": server.url})

    # Then it warns about the policy at start and goes on running
    wait_for(
        lambda: "maxmemory-policy is 'allkeys-lru'" in worker.log(),
        10,
        "the start-up warning",
        lambda: worker.log()[-3000:],
    )
    assert "WARNING" in next(
        line for line in worker.log().splitlines() if "maxmemory-policy" in line
    )
    assert worker.process.poll() is None
