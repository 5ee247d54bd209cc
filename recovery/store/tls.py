"""A ``rediss://`` URL's certificate check, read the same by the tracker and by Celery.

One URL names the tracker's Redis, the broker and the result backend (README: Which
Redis), and two libraries read its ``ssl_cert_reqs``. Celery refuses a ``rediss://``
broker or backend URL without it, and documents it as ``CERT_REQUIRED``,
``CERT_OPTIONAL`` or ``CERT_NONE``; redis-py, the tracker's client, checks the server's
certificate when it is absent and takes only ``required``, ``optional`` or ``none``. So
the tracker reads Celery's spelling too, and the broker and backend URLs made from the
tracker's (:mod:`recovery.broker`) say ``required`` when the URL is silent: the
certificate is checked everywhere, as redis-py would, whichever spelling was given.
When TLS is why a connection failed, :func:`hint` says what in the URL to check.
"""

from __future__ import annotations

import re
import ssl
from urllib.parse import parse_qsl, urlsplit

from recovery.categories import exception_chain
from recovery.errors import ConfigError

#: redis-py's values; Celery's are the same with ``CERT_`` before them, upper case.
CERT_REQS = ("required", "optional", "none")
_PARAMETER = "ssl_cert_reqs"
#: The parameter's value in a URL's query, to rewrite in place (the rest stays as given).
_VALUE = re.compile(rf"(?<=[?&]{_PARAMETER}=)[^&#]*")


def cert_reqs(url: str) -> str | None:
    """The URL's ``ssl_cert_reqs`` in redis-py's spelling, None when absent; ConfigError
    (naming REDIS_URL and the parameter, never the URL's password) for another value."""
    given = [v for k, v in parse_qsl(urlsplit(url).query) if k == _PARAMETER]
    if not given:
        return None
    value = given[-1].strip().lower().removeprefix("cert_")
    if value not in CERT_REQS:
        raise ConfigError(
            "REDIS_URL",
            f"{_PARAMETER}={given[-1]}",
            f"{_PARAMETER} {', '.join(CERT_REQS)} (or Celery's CERT_REQUIRED, CERT_OPTIONAL,"
            " CERT_NONE)",
        )
    return value


def for_redis_py(url: str) -> str:
    """``url`` with its ``ssl_cert_reqs`` in the spelling redis-py takes."""
    value = cert_reqs(url)
    return url if value is None else _VALUE.sub(value, url)


def for_celery(url: str) -> str:
    """``url`` as a Celery broker or backend URL: a ``rediss://`` one that does not say
    ``ssl_cert_reqs`` gets ``required``, which is what the tracker's client checks."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rediss" or cert_reqs(url) is not None:
        return url
    head, hash_, fragment = url.partition("#")
    joiner = "&" if parts.query else "" if head.endswith("?") else "?"
    return f"{head}{joiner}{_PARAMETER}=required{hash_}{fragment}"


def untrusted(exc: BaseException) -> bool:
    """Whether a TLS handshake failed on the server's certificate: a refusal, which
    trying again will not mend."""
    return any(isinstance(link, ssl.SSLCertVerificationError) for link in exception_chain(exc))


def hint(exc: BaseException, url: str) -> str | None:
    """What to check in the URL when TLS is why a connection failed."""
    if untrusted(exc):
        return (
            "the URL's ssl_ca_certs must name the CA that signed the server's certificate,"
            " and the certificate the host the URL names"
        )
    if _cut_off(exc) and "ssl_certfile=" not in url:
        return (
            "if the server requires client certificates (tls-auth-clients), the URL must"
            " give ssl_certfile and ssl_keyfile"
        )
    return None


def _cut_off(exc: BaseException) -> bool:
    """Whether the server broke TLS off as one that wants a client certificate and got
    none does: with its alert, or an EOF when the client wrote first."""
    return any(
        isinstance(link, ssl.SSLEOFError)
        or getattr(link, "reason", None) == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
        for link in exception_chain(exc)
    )
