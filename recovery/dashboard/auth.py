"""Who may use the dashboard, and proof that a form came from its own pages.

Credentials come from the environment, never from a command line (where ``ps``
shows them): ``DOCRECOVERY_DASHBOARD_USER`` and ``DOCRECOVERY_DASHBOARD_PASSWORD``
for HTTP basic auth (what a browser asks for), ``DOCRECOVERY_DASHBOARD_TOKEN`` for a
bearer token (what scripts send). With neither set the dashboard is open, which
:func:`recovery.dashboard.serve` allows on a loopback address only.

A browser sends basic credentials (and any cookie) with every request to the site,
whoever made the page that sends it, so every POST from a browser must also carry
the CSRF token: a random value held in a signed, HttpOnly, SameSite cookie and
repeated in the form's hidden field (or the ``X-CSRF-Token`` header). A request
authenticated by a bearer token is exempt: a browser never adds that header itself.

DNS rebinding gets past the address a dashboard listens on: a page of attacker.example
whose name then resolves to the dashboard's address is, to the browser, the same
origin as the dashboard it reaches. Without credentials its script could read the CSRF
token and post with it; with them it could send guessed ones from inside the network
and read the answers. So a dashboard answers only requests addressed by a name of this
machine, its address or an allowed name (:func:`trusted_hosts`), and takes no POST
whose Origin (or, without one, Referer) names another host than the request's
(:func:`cross_origin`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from recovery.access import Variables
from recovery.errors import ConfigError

#: DOCRECOVERY_DASHBOARD_USER, _PASSWORD and _TOKEN (recovery.access.Credentials).
VARIABLES = Variables.of("dashboard", token=True)
#: Signs the CSRF cookie; a random key per process when unset (a restart then asks
#: open pages to reload before their forms work again).
SECRET_ENV = "DOCRECOVERY_DASHBOARD_SECRET"
CSRF_COOKIE = "docrecovery_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: The names a browser on this machine reaches a loopback dashboard by.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Addresses that listen on every interface: no browser's name for the dashboard.
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
#: A host name, or a pattern of every name under a domain (``*.example.com``).
HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: Ports a browser leaves out of Origin and Host.
DEFAULT_PORTS = {"http": 80, "https": 443}


class CsrfTokens:
    """Issues CSRF tokens in signed cookies and reads them back."""

    def __init__(self, secret: bytes | None = None) -> None:
        configured = os.environ.get(SECRET_ENV)
        self._key = secret or (configured.encode() if configured else secrets.token_bytes(32))

    def _sign(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str]:
        """A new (token, cookie value)."""
        token = secrets.token_urlsafe(24)
        return token, f"{token}.{self._sign(token)}"

    def read(self, cookie: str | None) -> str | None:
        """The token of a cookie this dashboard signed, else None."""
        token, _, signature = (cookie or "").partition(".")
        if token and hmac.compare_digest(signature.encode(), self._sign(token).encode()):
            return token
        return None


def host_name(value: str) -> str:
    """``value`` as it appears in a Host header (lowercase, an IPv6 address in
    brackets); ConfigError naming it when it is not a host name or address."""
    name = value.strip().lower()
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        if HOST_NAME.fullmatch(name):
            return name
        raise ConfigError(
            "allowed host",
            value,
            "a host name (dash.example.com), a pattern of a domain's names (*.example.com)"
            " or an IP address",
        ) from None
    return f"[{address}]" if address.version == 6 else str(address)


def trusted_hosts(host: str | None, allowed: Iterable[str]) -> list[str]:
    """The Host header names the dashboard answers (Starlette's TrustedHostMiddleware
    patterns): the loopback names, the address it listens on and the ``allowed``
    names, with credentials too (see the module's docstring). A dashboard on 0.0.0.0
    cannot know the names it is reached by: they are to be ``allowed``."""
    names = [host_name(name) for name in allowed]
    if host is not None and host.strip().lower() not in WILDCARDS:
        names.append(host_name(host))
    return list(dict.fromkeys([*LOOPBACK_NAMES, *names]))


def cross_origin(headers: Mapping[str, str]) -> str | None:
    """The origin a request says it comes from when that is another host (or port)
    than the one it is addressed to, else None. Origin, else Referer, is what the
    browser says made the request; a request with neither (a script) is not cross-origin."""
    source = headers.get("origin") or headers.get("referer")
    if source is None:
        return None
    try:
        theirs = urlsplit(source)
        ours = urlsplit(f"{theirs.scheme}://{headers.get('host', '')}")
        default = DEFAULT_PORTS.get(theirs.scheme)
        same = bool(theirs.hostname) and (theirs.hostname, theirs.port or default) == (
            ours.hostname,
            ours.port or default,
        )
    except ValueError:  # a port that is not a number
        same = False
    return None if same else source
