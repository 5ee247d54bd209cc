"""Who may reach docrecovery's HTTP servers: the metrics exporter and the dashboard.

Each takes its credentials from the environment, never from a command line (where
``ps`` shows them): a user and password for HTTP basic auth, and, for the dashboard, a
bearer token for scripts. Without credentials a server binds to loopback only; on any
other address it refuses to start, naming the variables that would allow it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from recovery.errors import ConfigError


@dataclass(frozen=True)
class Variables:
    """The environment variables one server reads its credentials from."""

    user: str
    password: str
    token: str | None = None

    @classmethod
    def of(cls, server: str, *, token: bool = False) -> Variables:
        """``DOCRECOVERY_<SERVER>_USER``, ``..._PASSWORD`` (and ``..._TOKEN``)."""
        prefix = f"DOCRECOVERY_{server.upper()}_"
        return cls(f"{prefix}USER", f"{prefix}PASSWORD", f"{prefix}TOKEN" if token else None)

    def described(self) -> str:
        both = f"{self.user} and {self.password}"
        return f"{both}, or {self.token}," if self.token else both


#: The names errors use for credentials built in code rather than read from the env.
FIELDS = Variables("user", "password", "token")


@dataclass(frozen=True)
class Credentials:
    """Basic-auth user and password, and/or a bearer token; none means open."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check(self.user, self.password, FIELDS)

    @classmethod
    def from_env(
        cls, variables: Variables, environ: Mapping[str, str] | None = None
    ) -> Credentials:
        """The credentials ``variables`` name; a user without a password (or the other
        way round) or a user name basic auth cannot carry is refused by name."""
        env = os.environ if environ is None else environ
        user = env.get(variables.user) or None
        password = env.get(variables.password) or None
        token = (env.get(variables.token) or None) if variables.token else None
        _check(user, password, variables)
        return cls(user, password, token)

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
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, password = decoded.partition(":")
            # compare both, always: the time taken says nothing about which one differed
            ok_user, ok_password = _same(user, self.user), _same(password, self.password)
            if sep and ok_user and ok_password:
                return user, False
        return None

    def challenge(self, realm: str) -> str:
        """The WWW-Authenticate header of a refusal: basic when a browser can log in."""
        return f'Basic realm="{realm}"' if self.user else f'Bearer realm="{realm}"'


def _check(user: str | None, password: str | None, names: Variables) -> None:
    if bool(user) != bool(password):
        missing = names.password if user else names.user
        raise ConfigError(missing, None, f"set together with {names.user}, or neither")
    if user and ":" in user:
        raise ConfigError(names.user, user, "a user name without ':' (basic auth splits there)")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens to this machine (a name other than localhost
    counts as reachable from elsewhere: it may resolve to any address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0]).is_loopback
    except ValueError:
        return False


def require_private(host: str, credentials: Credentials, variables: Variables, why: str) -> None:
    """Refuse to listen beyond loopback without credentials (ConfigError, before binding)."""
    if not credentials.required and not is_loopback(host):
        raise ConfigError(
            "host",
            host,
            f"a loopback address (127.0.0.1, ::1, localhost) unless {variables.described()}"
            f" are set: {why}",
        )
