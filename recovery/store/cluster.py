"""The tracker on a Redis Cluster: ``REDIS_URL=redis+cluster://host:port,host2:port2``.

A ``redis+cluster://`` URL (``rediss+cluster://`` for TLS) names one or more nodes of
the cluster; redis-py's :class:`~redis.cluster.RedisCluster` asks them for the slot
map and then sends every command to the primary that owns its key's slot. Every key
of one shard shares a hash tag (:mod:`recovery.keys`), so each Lua script and each
transaction stays inside one slot, as a cluster requires; ``shards`` > 1 spreads the
documents over that many tags, and so over the primaries.

The URL takes ``user:password@`` once for every node and no database (a cluster has
only database 0: ``/0`` or nothing). Query options are redis-py's connection options,
as for ``redis://`` URLs.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from redis.cluster import ClusterNode, RedisCluster

from recovery.errors import ConfigError

#: URL schemes of a Redis Cluster, each with the scheme of its nodes.
SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: What a cluster URL looks like, for errors.
FORM = "redis+cluster://[user:password@]host:port[,host:port...][/0][?option=value]"


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) of every node a cluster URL names, in its order; a URL that
    names none, or a database other than 0, raises :class:`ConfigError`."""
    parts = urlsplit(url)
    if parts.path not in ("", "/", "/0"):
        _refuse(parts.path, "a Redis Cluster has only database 0")
    nodes = []
    for entry in parts.netloc.rpartition("@")[2].split(","):
        host, colon, port = entry.rpartition(":")
        digits = port.isascii() and port.isdigit()  # int() refuses '²', which isdigit() takes
        if not colon or not host.strip("[]") or not digits or not 0 < int(port) < 65536:
            _refuse(entry, "each node is host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def first_node_url(url: str) -> str:
    """The first node of a cluster URL as the ``redis://`` URL it would be alone, with
    the cluster URL's credentials and query options (what RedisCluster takes)."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host, port = cluster_nodes(url)[0]
    first = f"{credentials}@" * bool(credentials) + _netloc(host, port)
    return urlunsplit((SCHEMES[parts.scheme.lower()], first, "/0", parts.query, ""))


def connect_cluster(url: str, **options: Any) -> RedisCluster:
    """A cluster client over the nodes ``url`` names, with ``options``. The first node
    is read as the ``redis://`` URL it would be alone, so credentials and query options
    mean what they mean there (and the query's win over ``options``)."""
    others = [ClusterNode(host, port) for host, port in cluster_nodes(url)[1:]]  # type: ignore[no-untyped-call]
    return RedisCluster(url=first_node_url(url), startup_nodes=others, **options)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refuse(part: str, why: str) -> NoReturn:
    """A bad part of a cluster URL (never the whole: it may hold a password)."""
    raise ConfigError("REDIS_URL", part, f"{FORM} ({why})")
