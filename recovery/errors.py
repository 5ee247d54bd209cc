"""The errors docrecovery raises.

::

    RecoveryError
    ├── ConfigError              (also a ValueError)
    ├── TrackerError             (the tracker's Redis did not do what was asked)
    │   ├── TrackerUnavailable   (it could not be reached)
    │   │   ├── TrackerRefused   (it was reached and refused: auth, ACL, read-only, memory, db)
    │   │   │   └── CorruptCounter (a counter of its stats hash is not a number)
    │   │   └── TrackerBusy      (it was reached and cannot serve for now: BUSY, LOADING, …)
    │   └── TrackerFailed        (it was reached and the operation failed: a server error)
    ├── CorruptRecord            (a record under our prefix cannot be decoded)
    └── CannotListen             (also an OSError: a server cannot take its address)

Redis errors are translated at the tracker boundary, so callers only catch these. A
refusal is a kind of unavailability: an event that meets one is spooled and replayed
once an operator fixes the server, as when it was down; so is a server busy for now.
"""

from __future__ import annotations


class RecoveryError(Exception):
    """Base class of every error raised by docrecovery's recovery system."""


class ConfigError(RecoveryError, ValueError):
    """Raised when a setting (a recovery key, an environment variable, an option) is
    unknown or has a value outside what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"setting {key!r}: got {value!r}; allowed: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class TrackerError(RecoveryError):
    """Raised when the tracker's Redis does not do what was asked of it."""


class TrackerUnavailable(TrackerError):
    """Raised when the tracker's Redis cannot be reached (refused connection, timeout)."""


class TrackerRefused(TrackerUnavailable):
    """Raised when the tracker's Redis refuses a command: authentication, an ACL
    without the permission, a read-only replica, its memory limit, or a database
    number past its ``databases``."""


class CorruptCounter(TrackerRefused):
    """Raised when a field of the tracker's stats hash holds what is not a number (set
    by hand, restored from a bad dump): the scripts that count on it refuse their call
    before they change anything, as HINCRBY would fail halfway through them, and a
    report cannot show it. A worker's event that meets it is spooled, like any refusal,
    and replayed once the field is repaired; the message says how."""

    #: Characters of the bad value a message shows (it may be anything, of any length).
    SHOWN = 40

    def __init__(self, key: str, field: str, value: str) -> None:
        shown = value if len(value) <= self.SHOWN else value[: self.SHOWN] + "..."
        super().__init__(
            f"stats field {field!r} of {key!r} holds {shown!r}, not a number;"
            f" repair it with HDEL {key} {field} (it counts again from 0)"
        )
        self.key = key
        self.field = field
        self.value = value


class TrackerBusy(TrackerUnavailable):
    """Raised when the tracker's Redis answers that it cannot serve for now: another
    client's script runs (BUSY), it loads its data (LOADING), it cannot persist
    (MISCONF), a cluster's slot or a replica's primary is not there yet (TRYAGAIN,
    MASTERDOWN), too few replicas for a write (NOREPLICAS). The same command later
    succeeds: an event that meets one is spooled, not rejected."""


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
