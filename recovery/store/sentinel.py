"""A tracker on a Sentinel-managed Redis: Celery's ``sentinel://`` URLs, followed.

Celery names a Sentinel deployment by its sentinels, in one URL of several parts::

    REDIS_URL='sentinel://:password@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379'
    DOCRECOVERY_SENTINEL_MASTER=mymaster

and the name of the primary they watch in a transport option (``master_name``). Here
the name is the ``sentinel_master`` setting, and ``celeryconfig.py`` hands the same
name to Celery's broker and result backend, so one URL and one name serve all three.
As in Celery, the password, user and database of the first part are the primary's
and a part without a port means 26379; sentinels that require a password of their own
get the ``sentinel_password`` setting, which ``celeryconfig.py`` hands to Celery as
``sentinel_kwargs``. A deployment that speaks TLS gets the ``sentinel_ssl_*`` settings
(``RecoveryConfig.sentinel_tls``), for the sentinels and the primary alike: a
``sentinel://`` part cannot say TLS.

The client is redis-py's ``Sentinel(...).master_for(name)``: every new connection
asks the sentinels where the primary is, and a connection to a primary that died or
was demoted fails (``ConnectionError``, or the ``READONLY`` a demoted primary answers
with), so after a failover the next call reaches the promoted replica.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import redis
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from recovery.errors import ConfigError, TrackerError, TrackerRefused, TrackerUnavailable

SCHEME = "sentinel"
DEFAULT_PORT = 26379
#: A URL of several parts: split only where a new ``scheme://`` starts, so a ``;``
#: inside a password stays in its part.
PARTS = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")
#: Sentinels answer small queries: a dead one must not hold up finding the primary.
SENTINEL_TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}
ALLOWED = (
    "sentinel://[[user]:password@]host[:port][/db] parts joined by ';', "
    "e.g. sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379"
)


def parts(url: str) -> list[str]:
    """The URLs in a Celery multi-URL (one part for an ordinary URL)."""
    return PARTS.split(url)


def is_sentinel(url: str) -> bool:
    return url.lower().startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class SentinelURL:
    """Where the sentinels are, and how to log in to the primary they name."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str, shown: str) -> SentinelURL:
        """Read ``url``; a part that is not ``sentinel://host[:port][/db]`` raises
        ConfigError showing ``shown`` (the URL without its passwords)."""
        split = [_split(part, shown) for part in parts(url)]
        first = split[0]
        return cls(
            tuple(_address(part, shown) for part in split),
            _db(first, shown),
            first.username or None,
            first.password,
        )


def _split(part: str, shown: str) -> SplitResult:
    parsed = urlsplit(part)
    if parsed.scheme.lower() != SCHEME or not parsed.hostname or parsed.query:
        raise ConfigError("redis_url", shown, ALLOWED)
    _db(parsed, shown)
    return parsed


def _address(parsed: SplitResult, shown: str) -> tuple[str, int]:
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError("redis_url", shown, ALLOWED) from None
    return parsed.hostname or "", port or DEFAULT_PORT


def _db(parsed: SplitResult, shown: str) -> int:
    path = parsed.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ConfigError("redis_url", shown, ALLOWED)
    return int(path or 0)


def sentinel_login(password: str, tls: Mapping[str, Any]) -> dict[str, Any]:
    """What the sentinels themselves require, as redis-py's and Celery's
    ``sentinel_kwargs`` take it: a password of their own (the primary's is the URL's),
    TLS (``RecoveryConfig.sentinel_tls``)."""
    return {**({"password": password} if password else {}), **_over_tls(tls)}


def _over_tls(tls: Mapping[str, Any]) -> dict[str, Any]:
    """A redis-py client's options for TLS with these settings; none for plain text."""
    return {"ssl": True, **tls} if tls else {}


def master_client(
    url: str,
    master: str,
    shown: str,
    options: dict[str, Any],
    sentinel_password: str = "",
    tls: Mapping[str, Any] | None = None,
) -> redis.Redis:
    """A client of the primary the sentinels of ``url`` know as ``master``, with the
    connection ``options`` of an ordinary client; ``sentinel_password`` logs in to the
    sentinels, and ``tls`` (``RecoveryConfig.sentinel_tls``) reaches them and the
    primary over TLS."""
    where = SentinelURL.parse(url, shown)
    tls = tls or {}
    login = sentinel_login(sentinel_password, tls)
    # redis.sentinel is untyped: its client is a redis.Redis on a SentinelConnectionPool
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(where.sentinels), sentinel_kwargs={**SENTINEL_TIMEOUTS, **login}
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master,
        db=where.db,
        username=where.username,
        password=where.password,
        **options,
        **_over_tls(tls),
    )
    return client


def no_primary(exc: MasterNotFoundError, master: str) -> tuple[type[TrackerError], str]:
    """What finding no primary means, in a few words (redis-py's message holds each
    sentinel client's whole repr): the sentinels refused our login, else none of them
    named one."""
    if "AuthenticationError" in str(exc):
        return TrackerRefused, (
            "the sentinels refused the login: sentinel_password"
            " (DOCRECOVERY_SENTINEL_PASSWORD) must be the requirepass of their sentinel.conf"
        )
    return TrackerUnavailable, (
        f"no sentinel named a primary {master!r}: are they up, and is that the name"
        " in their `sentinel monitor`?"
    )


def close_sentinels(client: redis.Redis) -> None:
    """Close the connections a Sentinel client keeps to the sentinels themselves."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()
