"""The errors docrecovery raises.

::

    RecoveryError
    ├── ConfigError          (also a ValueError)
    ├── TrackerUnavailable   (Redis could not be reached)
    └── CorruptRecord        (a record under our prefix cannot be decoded)

Redis errors are translated at the tracker boundary, so callers only catch these.
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


class TrackerUnavailable(RecoveryError):
    """Raised when the tracker's Redis cannot be reached or refuses the command."""


class CorruptRecord(RecoveryError):
    """Raised when a stored record is missing fields or holds undecodable values."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt failed-document record at {key!r}: {reason}")
        self.key = key
        self.reason = reason
