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

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from recovery.errors import ConfigError

USER_ENV = "DOCRECOVERY_DASHBOARD_USER"
PASSWORD_ENV = "DOCRECOVERY_DASHBOARD_PASSWORD"
TOKEN_ENV = "DOCRECOVERY_DASHBOARD_TOKEN"
#: Signs the CSRF cookie; a random key per process when unset (a restart then asks
#: open pages to reload before their forms work again).
SECRET_ENV = "DOCRECOVERY_DASHBOARD_SECRET"
CSRF_COOKIE = "docrecovery_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Credentials:
    """Basic-auth user and password, and/or a bearer token; none means open."""

    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.user) != bool(self.password):
            raise ConfigError(
                USER_ENV if self.password else PASSWORD_ENV,
                "",
                f"{USER_ENV} and {PASSWORD_ENV} set together, or neither",
            )
        if self.user and ":" in self.user:
            raise ConfigError(USER_ENV, self.user, "a user name without ':' (basic auth)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        return cls(
            env.get(USER_ENV) or None, env.get(PASSWORD_ENV) or None, env.get(TOKEN_ENV) or None
        )

    @property
    def required(self) -> bool:
        return bool(self.user or self.token)

    def who(self, authorization: str | None) -> tuple[str, bool] | None:
        """(who the request acts as, whether by bearer token), or None when its
        Authorization header does not hold these credentials."""
        scheme, _, value = (authorization or "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token and _same(value, self.token):
            return "token", True
        if scheme == "basic" and self.user and self.password:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if _same(user, self.user) and _same(password, self.password):
                return user, False
        return None

    def challenge(self) -> str:
        """The WWW-Authenticate header of a refusal: basic when a browser can log in."""
        return 'Basic realm="docrecovery"' if self.user else 'Bearer realm="docrecovery"'


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


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
        if token and _same(signature, self._sign(token)):
            return token
        return None
