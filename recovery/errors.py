"""The errors docrecovery raises.

::

    RecoveryError
    ├── ConfigError              (also a ValueError)
    ├── TrackerError             (the tracker's Redis did not do what was asked)
    │   ├── TrackerUnavailable   (it could not be reached)
    │   │   └── TrackerRefused   (it was reached and refused: auth, ACL, read-only, memory)
    │   └── TrackerFailed        (it was reached and the operation failed: a server error)
    ├── CorruptRecord            (a record under our prefix cannot be decoded)
    └── CannotListen             (also an OSError: a server cannot take its address)

Redis errors are translated at the tracker boundary, so callers only catch these. A
refusal is a kind of unavailability: an event that meets one is spooled and replayed
once an operator fixes the server, as when it was down.
"""

from __future__ import annotations


class RecoveryError(Exception):
    """Base class of every error raised by docrecovery's recovery system."""


class ConfigError(RecoveryError, ValueError):
    """Raised when a recovery setting is unknown or has a value outside what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"recovery config {key!r}: got {value!r}; allowed: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class TrackerError(RecoveryError):
    """Raised when the tracker's Redis does not do what was asked of it."""


class TrackerUnavailable(TrackerError):
    """Raised when the tracker's Redis cannot be reached (refused connection, timeout)."""


class TrackerRefused(TrackerUnavailable):
    """Raised when the tracker's Redis refuses a command: authentication, an ACL
    without the permission, a read-only replica, or its memory limit."""


class TrackerFailed(TrackerError):
    """Raised when a command reached the tracker's Redis and failed there (a script
    error, a key of the wrong type): retrying as it is will not help."""


class CorruptRecord(RecoveryError):
    """Raised when a stored record is missing fields or holds undecodable values."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt failed-document record at {key!r}: {reason}")
        self.key = key
        self.reason = reason


class CannotListen(RecoveryError, OSError):
    """Raised when a server (the metrics exporter, the dashboard) cannot listen on its
    address: the port is taken, the host does not resolve or is not this machine's."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        address = f"[{host}]" if ":" in host else host
        self.reason = cause.strerror or str(cause)
        super().__init__(f"cannot listen on {address}:{port}: {self.reason}")
        self.host = host
        self.port = port
