"""Start-up checks of the Redis that holds the tracker.

A tracker whose records can be evicted loses failures silently: with a ``maxmemory``
limit and an evicting ``maxmemory-policy`` Redis drops keys under memory pressure,
and nothing tells anyone a failed document is no longer tracked. Workers run these
checks at start and log each warning; they never stop a worker.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

#: Policies under which Redis never deletes our keys to make room.
SAFE_POLICIES = {"noeviction"}


def check_redis(client: redis.Redis | RedisCluster) -> list[str]:
    """Warnings about the server ``client`` talks to (every primary of a cluster, each
    warning naming its node); empty when all is well."""
    if isinstance(client, RedisCluster):
        return [
            f"{node.name}: {warning}"
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
            if node.redis_connection is not None
            for warning in check_redis(node.redis_connection)
        ]
    warnings: list[str] = []
    try:
        config: dict[str, str] = client.config_get("maxmemory*")  # type: ignore[assignment]
    except redis.ResponseError:
        return ["cannot read the Redis configuration (CONFIG GET refused): eviction not checked"]
    policy = config.get("maxmemory-policy", "noeviction")
    limit = int(config.get("maxmemory", "0") or 0)
    if policy not in SAFE_POLICIES:
        bound = f"maxmemory {limit} bytes" if limit else "no maxmemory limit yet"
        warnings.append(
            f"Redis maxmemory-policy is {policy!r} ({bound}): under memory pressure it may "
            "evict failed-document records, which are then lost without a trace; "
            "use maxmemory-policy noeviction for the tracker's Redis"
        )
    return warnings
