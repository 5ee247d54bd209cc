"""Recovery settings: one frozen, validated object.

The keys are the seed's (``max_retry_count``, ``min_retry_interval_hours``, ...) plus
docrecovery's additions, each documented where it is declared. Build it from a dict
(``RecoveryConfig.from_mapping``), from ``DOCRECOVERY_<KEY>`` environment variables
(``RecoveryConfig.from_env``), or both. A bad key or value fails at construction with
a :class:`~recovery.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, TypeVar

from recovery.errors import ConfigError
from recovery.keys import DEFAULT_PREFIX
from recovery.records import SEED_TASK

ENV_PREFIX = "DOCRECOVERY_"
#: Retry levels the tracker's due index keeps apart (``lua/_lib.lua``: MAX_LEVEL).
MAX_RETRY_COUNT = 99
#: Most shards a tracker may have (each costs a script call per run and per report).
MAX_SHARDS = 256
# Every numeric key has an upper bound, so a value that would fail later (an overflow
# in the backoff, a TTL Redis refuses, a timedelta too large for beat) fails here,
# naming the key. The bounds are generous: each is far past any useful setting.
#: The longest any duration may be: 10 years. Retention of years is legitimate; past
#: the longest, nothing is tracked any more, so no backoff, resend or beat interval
#: longer than it could matter. It keeps each time derived from a setting well inside
#: what takes it: a record's TTL (Redis EXPIRE: seconds, up to about 2**63 / 1000),
#: the scripts' deadlines and due scores, Python's timedelta.
MAX_DAYS = 3650
MAX_HOURS = MAX_DAYS * 24
#: Growth of the backoff per retry: 100 already multiplies it by 10,000 in two
#: retries, and keeps interval × factor**(MAX_RETRY_COUNT - 1) a finite float.
MAX_BACKOFF_FACTOR = 100
#: A task time limit of a week: a run longer than that is hung, and the broker's
#: visibility timeout and the in-flight deadlines follow the limit, so a lost run of
#: it would come back only that long after.
MAX_TIME_LIMIT_SECONDS = 7 * 86400
#: Documents one run claims and sends (a breaker's canaries too): a shard's claim is
#: one script call, during which Redis serves nothing else.
MAX_BATCH = 10_000
#: The longest error (characters) and the largest metadata (bytes) a record keeps,
#: 1 Mi: each record holds them in Redis memory, and those limits keep blobs out.
MAX_KEPT = 1_048_576
#: The longest query label: it is a field name in three aggregate hashes.
MAX_QUERY_LABEL_CHARS = 10_000
#: Dead documents kept: each keeps its record in Redis memory, gigabytes at this many.
MAX_DEAD = 10_000_000
#: Recovery outcomes per breaker window: each category's is a string in Redis,
#: rewritten at every outcome.
MAX_BREAKER_WINDOW = 1000
#: Replicas a change may wait for: more than any deployment has (a WAIT for replicas
#: that do not exist waits out ``wait_timeout_ms`` at every change).
MAX_WAIT_REPLICAS = 100
#: The longest WAIT: under the clients' 10 s socket timeout (``CLIENT_OPTIONS`` in
#: store/connection.py), which would cut the reply off and have the caller spool a
#: change the primary made.
MAX_WAIT_TIMEOUT_MS = 5000
#: A day, for the periodic spool replay and the lease grace: a longer one only
#: delays what it is for (replaying spooled events, finding a lost run).
DAY_SECONDS = 86400
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


Check = Callable[[str, Any], None]
"""A key's validator: called with the key and its value, raises ConfigError if not allowed."""
_T = TypeVar("_T")


def setting(default: _T, check: Check, *, secret: bool = False) -> _T:
    """Declare a key once: its default and its validator, at the field. A ``secret``
    is left out of the config's repr (and so of logs and tracebacks)."""
    return field(default=default, repr=not secret, metadata={"check": check})


def setting_from(factory: Callable[[], _T], check: Check, *, hash: bool | None = None) -> _T:
    """Like :func:`setting`, for a mutable default made fresh by ``factory``."""
    return field(default_factory=factory, hash=hash, metadata={"check": check})


def _int(low: int, high: int) -> Check:
    """A whole number from ``low`` to ``high``: ``high`` is required, so that no
    numeric key is left unbounded."""

    def check(key: str, value: Any) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or not low <= value <= high:
            raise ConfigError(key, value, f"a whole number >= {low} and <= {high}")

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Check:
    """A finite number from ``low`` (excluded if ``low_open``) to ``high``, which is
    required, like :func:`_int`'s."""

    def check(key: str, value: Any) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value <= high
        ok = ok and (value > low if low_open else value >= low)
        if not ok:
            bound = f"> {low}" if low_open else f">= {low}"
            raise ConfigError(key, value, f"a finite number {bound} and <= {high}")

    return check


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "True or False")


def _name(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value or any(c in value for c in "{}: \t\n"):
        raise ConfigError(key, value, "a non-empty string without braces, colons or spaces")


def _master(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(key, value, "a Sentinel master name: a non-empty string without spaces")


def _secret(key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(key, type(value).__name__, "a string (empty for none)")


def _path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "a non-empty path")


def _file(key: str, value: Any) -> None:
    readable = isinstance(value, str) and os.path.isfile(value) and os.access(value, os.R_OK)
    if not isinstance(value, str) or (value and not readable):
        raise ConfigError(key, value, "a readable file (empty for none)")


def _task_names(key: str, value: Any) -> None:
    """At least one name: tracking no task is never what a recovery is installed for,
    and would record no failure without a word."""
    ok = isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)
    if not ok or not value:
        raise ConfigError(key, value, f"a list of task names, at least one, e.g. [{SEED_TASK!r}]")


def _overrides(key: str, value: Any) -> None:
    from recovery.categories import CATEGORIES

    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and v in CATEGORIES for k, v in value.items()
    ):
        raise ConfigError(
            key, value, "a mapping of exception class names to one of " + ", ".join(CATEGORIES)
        )


@dataclass(frozen=True)
class RecoveryConfig:
    """How failed documents are tracked and retried."""

    # --- the seed's keys ---------------------------------------------------------
    #: A run retries a document while its counted retries are below this; one that has
    #: used them up stays tracked (a later run with a larger maximum may retry it).
    max_retry_count: int = setting(3, _int(0, MAX_RETRY_COUNT))
    #: Backoff before the first retry; later retries multiply it by ``backoff_factor``.
    min_retry_interval_hours: float = setting(1.0, _number(0.0, MAX_HOURS))
    #: Documents claimed and resubmitted by one recovery run.
    recovery_batch_size: int = setting(10, _int(1, MAX_BATCH))
    #: Whether beat runs ``recovery.run`` every ``recovery_interval_minutes``.
    enable_periodic_recovery: bool = setting(True, _bool)
    recovery_interval_minutes: float = setting(30.0, _number(0.0, MAX_HOURS * 60, low_open=True))
    #: Hard time limit (seconds) of a resubmitted task; its soft limit is 90% of it.
    recovery_timeout: int = setting(300, _int(1, MAX_TIME_LIMIT_SECONDS))
    #: Records older than this (since first failure) are removed, dead ones included;
    #: a run does not retry a document past it.
    failed_docs_retention_days: float = setting(7.0, _number(0.0, MAX_DAYS, low_open=True))
    #: Log each decision of a run (claimed, held back and why, resubmitted where) at DEBUG.
    verbose: bool = setting(False, _bool)

    # --- additions ---------------------------------------------------------------
    #: Growth of the backoff per counted retry: interval × factor**retry_count.
    backoff_factor: float = setting(2.0, _number(1.0, MAX_BACKOFF_FACTOR))
    #: Upper bound of the backoff, whatever the retry count.
    max_retry_interval_hours: float = setting(24.0, _number(0.0, MAX_HOURS))
    #: Up to this fraction of a document's backoff added by a run (0.1: up to 10% more),
    #: each document's share fixed by its id, never subtracted, so retries do not herd.
    retry_jitter: float = setting(0.1, _number(0.0, 1.0))
    #: Prefix of every Redis key; wrapped in {} as a Cluster hash tag.
    key_prefix: str = setting(DEFAULT_PREFIX, _name)
    #: Key sets the documents are spread over, each under a hash tag of its own, so a
    #: Redis Cluster serves one tracker from every primary (README: Redis Cluster).
    #: 1 keeps every key under ``{key_prefix}``; changing it hides what is tracked
    #: under the old layout, so drain the tracker first.
    shards: int = setting(1, _int(1, MAX_SHARDS))
    #: The primary Sentinel watches under this name, when the Redis URL is
    #: ``sentinel://host:26379;sentinel://host2:26379`` (README: Redis Sentinel); the
    #: default is the name in Redis's own sentinel.conf.
    sentinel_master: str = setting("mymaster", _master)
    #: The password the sentinels themselves require (``requirepass`` in
    #: sentinel.conf); empty: they require none. The primary's is the URL's.
    sentinel_password: str = setting("", _secret, secret=True)
    #: TLS to the sentinels and the primary they name: the CA file their certificates
    #: are checked against; empty: plain text (README: Redis Sentinel).
    sentinel_ssl_ca_certs: str = setting("", _file)
    #: A client certificate and its key, for sentinels and a primary that require one
    #: (``tls-auth-clients``): both or neither, and only with ``sentinel_ssl_ca_certs``.
    sentinel_ssl_certfile: str = setting("", _file)
    sentinel_ssl_keyfile: str = setting("", _file)
    #: Replicas that must acknowledge each state change before it returns (Redis
    #: ``WAIT``, sent in the same round trip); 0: none, as Redis replicates by default.
    wait_replicas: int = setting(0, _int(0, MAX_WAIT_REPLICAS))
    #: How long a state change waits for those replicas, in milliseconds; past it the
    #: change stands on the primary alone, with a warning.
    wait_timeout_ms: int = setting(500, _int(1, MAX_WAIT_TIMEOUT_MS))
    #: Task names whose failures are tracked and whose successes clear a record.
    tracked_tasks: tuple[str, ...] = setting((SEED_TASK,), _task_names)
    #: Queue a resubmitted document goes to (memory failures go to ``highmem_queue``).
    resubmit_queue: str = setting("documents", _name)
    highmem_queue: str = setting("highmem", _name)
    #: Seconds added to a task's time limit before its lease or in-flight entry expires.
    lease_grace_seconds: int = setting(60, _int(0, DAY_SECONDS))
    #: Longest error message kept per record; longer ones keep their head and tail.
    max_error_chars: int = setting(4000, _int(200, MAX_KEPT))
    #: Largest metadata kept with a run, in bytes of JSON: past it the largest entries
    #: are dropped and named under ``docrecovery_cut`` in what is kept (in the record,
    #: the in-flight entry and a resubmission alike), so a 5 MB blob stays out of Redis.
    max_metadata_bytes: int = setting(16_384, _int(256, MAX_KEPT))
    #: Longest query counted by its text in the per-query aggregates; a longer one is
    #: counted under its first this-many characters and a hash of the whole (the record
    #: keeps the whole query: it is part of the document's id).
    max_query_label_chars: int = setting(200, _int(16, MAX_QUERY_LABEL_CHARS))
    #: Where failure events wait when Redis cannot be reached, to be replayed later.
    spool_dir: str = setting(".docrecovery/spool", _path)
    #: How often a worker replays its host's spool on its own, so events spooled while
    #: it was cut off reach Redis even if it gets no more work; 0: only on its next
    #: event and at recovery runs.
    spool_replay_seconds: float = setting(30.0, _number(0.0, DAY_SECONDS))
    #: Dead documents kept at most (oldest trimmed first, with a warning and a metric).
    dead_max: int = setting(10_000, _int(1, MAX_DEAD))
    #: A resubmitted task that has not started this long after it was sent (queued
    #: behind a backlog, workers down, or its message lost) is sent again, uncounted;
    #: its older message, should it still run, is dropped as a stale duplicate.
    resend_after_hours: float = setting(6.0, _number(0.0, MAX_HOURS, low_open=True))
    #: Backoff of network failures, in hours (short: outages are usually brief).
    network_retry_interval_hours: float = setting(0.05, _number(0.0, MAX_HOURS))
    #: Extra exception-name -> category mappings, checked before the built-in ones.
    category_overrides: Mapping[str, str] = setting_from(dict, _overrides, hash=False)
    #: Probe file existence and readability before resubmitting such failures.
    probe_preconditions: bool = setting(True, _bool)
    #: Import failures recorded under an older worker fingerprint become due at once.
    retry_on_environment_change: bool = setting(True, _bool)
    #: Timeout failures are resubmitted with twice the time limit they failed with.
    grow_timeouts: bool = setting(True, _bool)
    #: The most a timed-out document's time limit grows to, in seconds (above the
    #: default task limit, so a timeout under default settings gets more time).
    max_recovery_timeout: int = setting(3600, _int(1, MAX_TIME_LIMIT_SECONDS))
    #: Pause a category whose recent recoveries mostly fail; probe it with a canary.
    circuit_breaker: bool = setting(True, _bool)
    #: Recent recovery outcomes per category the breaker looks at.
    breaker_window: int = setting(10, _int(1, MAX_BREAKER_WINDOW))
    #: Failure fraction of that window that opens the breaker.
    breaker_threshold: float = setting(0.8, _number(0.0, 1.0, low_open=True))
    #: Documents sent per run while a category's breaker is open.
    breaker_canary_size: int = setting(1, _int(1, MAX_BATCH))

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata.get("check")
            if check is None:
                raise TypeError(f"{f.name} is declared without a validator: use setting()")
            check(f.name, getattr(self, f.name))
        if bool(self.sentinel_ssl_certfile) != bool(self.sentinel_ssl_keyfile):
            raise ConfigError(
                "sentinel_ssl_keyfile", self.sentinel_ssl_keyfile, "set with sentinel_ssl_certfile"
            )
        if self.sentinel_ssl_certfile and not self.sentinel_ssl_ca_certs:
            raise ConfigError(
                "sentinel_ssl_ca_certs", "", "the CA file, to use sentinel_ssl_certfile"
            )
        object.__setattr__(self, "tracked_tasks", tuple(self.tracked_tasks))
        overrides = MappingProxyType(dict(self.category_overrides))
        object.__setattr__(self, "category_overrides", overrides)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> RecoveryConfig:
        """Build from a dict such as the seed's ``config = {...}``; unknown keys fail."""
        values = dict(values or {})
        known = sorted(f.name for f in fields(cls))
        for key in values:
            if key not in known:
                raise ConfigError(key, values[key], "one of " + ", ".join(known))
        return cls(**values)

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> RecoveryConfig:
        """Read ``DOCRECOVERY_<KEY>`` variables, then apply ``overrides`` on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse_env(f.name, raw, f.default, f.default_factory)
        values.update(overrides or {})
        return cls.from_mapping(values)

    def replace(self, **changes: Any) -> RecoveryConfig:
        """A copy with some keys changed, validated like the original."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def sentinel_tls(self) -> dict[str, Any]:
        """The TLS options of the sentinels and their primary, as redis-py's clients and
        Celery's ``broker_use_ssl`` take them; empty for plain text."""
        if not self.sentinel_ssl_ca_certs:
            return {}
        options: dict[str, Any] = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": self.sentinel_ssl_ca_certs,
        }
        if self.sentinel_ssl_certfile:
            options["ssl_certfile"] = self.sentinel_ssl_certfile
            options["ssl_keyfile"] = self.sentinel_ssl_keyfile
        return options

    @property
    def retention_seconds(self) -> float:
        return self.failed_docs_retention_days * 86400.0

    @property
    def claim_lease_seconds(self) -> int:
        """How long a recovery run's claim holds: its time limit and a grace."""
        return self.recovery_timeout + self.lease_grace_seconds

    @property
    def soft_time_limit(self) -> float:
        return soft_limit(self.recovery_timeout)


def soft_limit(hard: float) -> float:
    """The soft time limit that goes with a hard one: 90% of it, so
    SoftTimeLimitExceeded comes first and a task can still report. A hard limit of a
    second or less gets none (0): the pool checks limits once a second, so the two
    could not fire apart."""
    return round(hard * 0.9, 3) if hard > 1 else 0


def _parse_env(key: str, raw: str, default: Any, factory: Any) -> Any:
    sample = factory() if default is dataclasses.MISSING else default
    if isinstance(sample, bool):
        low = raw.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(key, raw, "true/false, yes/no, on/off or 1/0")
    if isinstance(sample, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(key, raw, "a whole number") from None
    if isinstance(sample, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(key, raw, "a number") from None
    if isinstance(sample, tuple):
        names = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not names:  # refused here: the key's own check would show () for what was set
            unset = f"leave {ENV_PREFIX}{key.upper()} unset for {','.join(sample)}"
            raise ConfigError(key, raw, f"names separated by commas, at least one ({unset})")
        return names
    if isinstance(sample, dict):
        pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError(key, raw, "comma-separated ExceptionName=category pairs")
        return {name.strip(): cat.strip() for name, cat in pairs}
    return raw
