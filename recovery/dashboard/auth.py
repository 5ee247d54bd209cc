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
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from recovery.access import Variables

#: DOCRECOVERY_DASHBOARD_USER, _PASSWORD and _TOKEN (recovery.access.Credentials).
VARIABLES = Variables.of("dashboard", token=True)
#: Signs the CSRF cookie; a random key per process when unset (a restart then asks
#: open pages to reload before their forms work again).
SECRET_ENV = "DOCRECOVERY_DASHBOARD_SECRET"
CSRF_COOKIE = "docrecovery_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


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
