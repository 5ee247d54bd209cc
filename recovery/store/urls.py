"""Which Redis a process uses, and its URL as messages may show it.

Workers, beat, the CLI and the Python API resolve the URL here, so they cannot
disagree about where the failures are; a URL no client could use is refused at start,
and none is shown or logged with its password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

from recovery.errors import ConfigError
from recovery.store import tls
from recovery.store.cluster import cluster_nodes, is_cluster_url
from recovery.store.sentinel import SentinelURL, is_sentinel, parts

#: The Redis every process uses when neither an argument nor ``REDIS_URL`` names one.
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redact(url: str) -> str:
    """The URL without its passwords (in the user part or a ``password=`` query
    parameter of each part of a ``sentinel://…;sentinel://…`` URL), for messages and
    logs. Never raises: it also masks URLs no parser takes."""
    return ";".join(_PARAM.sub(r"\g<param>***", _mask_user(part)) for part in parts(url))


def redact_text(text: str) -> str:
    """``text`` with every URL's password masked as :func:`redact` masks one URL: an
    error message or traceback stored with a record can hold a connection URL."""
    return _URL.sub(lambda found: redact(found.group()), text)


#: A URL in text, up to the next white space; a ``password=`` parameter in one.
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_PARAM = re.compile(r"(?P<param>[?&;]password=)[^&\s]*", re.IGNORECASE)
#: A query (``?`` and then ``=``) before an ``@``: that ``@`` is a parameter's.
_QUERY = re.compile(r"\?[^@]*=")


def _mask_user(url: str) -> str:
    """``url`` with the password of its user part masked. The user part runs to the
    last ``@`` that no query precedes: a password written with ``#``, ``/``, ``?`` or
    ``=`` unencoded ends the authority for a URL parser, which would show the rest."""
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    while (end := rest.rfind("@", 0, end)) >= 0 and _QUERY.search(rest, 0, end):
        pass
    user, colon, _ = rest[: max(end, 0)].partition(":")
    if not sep or end < 0 or not colon:
        return url
    return f"{scheme}://{user}:***@{rest[end + 1 :]}"


def default_redis_url(explicit: str | None = None) -> str:
    """The Redis to use: ``explicit`` (``--redis-url``, ``redis_url=``), else
    ``REDIS_URL`` (empty counts as unset, as shells unset a variable), else
    :data:`DEFAULT_URL`. Workers, beat, the CLI and the Python API all resolve it here,
    so they cannot disagree about where the failures are."""
    return explicit or os.environ.get("REDIS_URL") or DEFAULT_URL


def tracker_url(explicit: str | None = None, broker: str | Callable[[], str] = "") -> str:
    """The tracker's Redis: ``explicit``, else ``REDIS_URL``; only with neither does a
    Redis ``broker`` serve (one Redis named once: ``celery -b redis://...``), never a
    broker of another kind. The app's recovery and beat (RedBeat) both ask here. The
    broker may be given as a function, called only then: a worker asks at every
    tracked run, and reading an app's setting costs as much as the rest of it."""
    if explicit or os.environ.get("REDIS_URL"):
        return default_redis_url(explicit)
    if callable(broker):
        broker = broker()
    redis_broker = broker.startswith(("redis://", "rediss://", "unix://", "sentinel://"))
    return broker if redis_broker else default_redis_url()


#: The forms of URL a tracker takes, for the message that refuses another.
URL_FORMS = "a redis://, rediss://, unix://, sentinel:// or redis+cluster:// URL"


def check_url(url: str) -> None:
    """Refuse a URL no client could use, at start rather than at first use: a
    ConfigError naming REDIS_URL with the URL masked, never redis-py's or urllib's
    ValueError, whose traceback and text may quote a piece of the password."""
    try:
        _parse(url)
    except ConfigError:
        raise
    except ValueError:
        shown = redact(url)
        raise ConfigError("REDIS_URL", shown, f"{URL_FORMS} ({_why(shown)})") from None


def _why(shown: str) -> str:
    """Why a URL does not parse, read from its masked form so the reason cannot quote
    the password; one whose masked form parses failed in its user part."""
    try:
        _parse(shown)
    except ValueError as exc:
        return str(exc).rstrip(".")
    return "its password does not parse: percent-encode its reserved characters (@ : / ? #)"


def _parse(url: str) -> None:
    tls.cert_reqs(url)
    if is_cluster_url(url):
        cluster_nodes(url)
    elif is_sentinel(url):
        SentinelURL.parse(url, redact(url))
    else:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        # redis-py takes any other path for database 0, without a word
        if url.startswith(("redis:", "rediss:")) and not _DB_PATH.fullmatch(urlsplit(url).path):
            raise ValueError("the path after the host must be a database number, such as /0")


_DB_PATH = re.compile(r"/?[0-9]*/?")
