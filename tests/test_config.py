"""Recovery settings: the seed's dict works, bad values fail naming key, value and rule."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from conftest import run_python

from recovery import policy
from recovery.config import RecoveryConfig, soft_limit
from recovery.errors import ConfigError, RecoveryError
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord
from recovery.store.connection import CLIENT_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0


def test_the_seeds_config_dict_is_accepted_as_is() -> None:
    config = RecoveryConfig.from_mapping(seed.PARAMETERS)

    assert {key: getattr(config, key) for key in seed.PARAMETERS} == seed.PARAMETERS
    assert config.verbose is False
    assert config.retention_seconds == 7 * 86400.0
    assert config.soft_time_limit == 270


def test_the_seeds_standalone_recovery_dict_is_accepted() -> None:
    config = RecoveryConfig.from_mapping(
        {
            "max_retry_count": 3,
            "min_retry_interval_hours": 0.5,
            "recovery_batch_size": 5,
            "enable_periodic_recovery": False,
            "recovery_interval_minutes": 15,
        }
    )

    assert config.min_retry_interval_hours == 0.5
    assert config.recovery_batch_size == 5
    assert config.enable_periodic_recovery is False
    assert config.recovery_interval_minutes == 15


def test_an_empty_mapping_gives_the_documented_defaults() -> None:
    config = RecoveryConfig.from_mapping(None)

    assert config == RecoveryConfig()
    assert config.max_retry_count == 3
    assert config.recovery_batch_size == 10
    assert config.key_prefix == "docrecovery"
    assert config.tracked_tasks == ("tasks.process_document",)
    assert config.resubmit_queue == "documents"
    assert config.highmem_queue == "highmem"


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("max_retry_count", -1, "a whole number >= 0 and <= 99"),
    ("max_retry_count", "3", "a whole number >= 0 and <= 99"),
    ("max_retry_count", 2.5, "a whole number >= 0 and <= 99"),
    ("max_retry_count", 100, "a whole number >= 0 and <= 99"),
    ("max_retry_count", True, "a whole number >= 0"),
    ("recovery_batch_size", 0, "a whole number >= 1"),
    ("recovery_batch_size", False, "a whole number >= 1"),
    ("recovery_timeout", 0, "a whole number >= 1"),
    ("recovery_timeout", None, "a whole number >= 1"),
    ("min_retry_interval_hours", -0.5, "a finite number >= 0.0"),
    ("min_retry_interval_hours", math.nan, "a finite number >= 0.0"),
    ("min_retry_interval_hours", math.inf, "a finite number >= 0.0"),
    ("min_retry_interval_hours", "1.0", "a finite number >= 0.0"),
    ("min_retry_interval_hours", True, "a finite number >= 0.0"),
    ("recovery_interval_minutes", 0, "a finite number > 0.0"),
    ("failed_docs_retention_days", -7, "a finite number > 0.0"),
    ("failed_docs_retention_days", math.nan, "a finite number > 0.0"),
    ("retry_jitter", 1.5, "a finite number >= 0.0 and <= 1.0"),
    ("backoff_factor", 0.5, "a finite number >= 1.0"),
    # accepted before the bounds, then failing far from the config: an overflow in every
    # run's backoff, a TTL Redis refused (the failure lost), a timedelta beat refused
    ("backoff_factor", 1e4, "a finite number >= 1.0 and <= 100"),
    ("failed_docs_retention_days", 1e12, "a finite number > 0.0 and <= 3650"),
    ("failed_docs_retention_days", 1e305, "a finite number > 0.0 and <= 3650"),
    ("recovery_interval_minutes", 1e13, "a finite number > 0.0 and <= 5256000"),
    ("breaker_threshold", 0, "a finite number > 0.0 and <= 1.0"),
    ("enable_periodic_recovery", 1, "True or False"),
    ("verbose", "yes", "True or False"),
    ("max_error_chars", 100, "a whole number >= 200"),
    ("dead_max", 0, "a whole number >= 1"),
    ("key_prefix", "", "a non-empty string without braces, colons or spaces"),
    ("key_prefix", "{tag}", "a non-empty string without braces, colons or spaces"),
    ("key_prefix", "a:b", "a non-empty string without braces, colons or spaces"),
    ("resubmit_queue", "my queue", "a non-empty string without braces, colons or spaces"),
    ("spool_dir", "", "a non-empty path"),
    ("tracked_tasks", "tasks.process_document", "a list of task names"),
    ("tracked_tasks", ["tasks.ok", ""], "a list of task names"),
    ("tracked_tasks", [], "a list of task names, at least one"),
    ("category_overrides", {"ValueError": "bogus"}, "a mapping of exception class names"),
    ("category_overrides", ["ValueError"], "a mapping of exception class names"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_VALUES)
def test_a_bad_value_fails_naming_the_key_the_value_and_what_is_allowed(
    key: str, value: Any, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RecoveryConfig.from_mapping({**seed.PARAMETERS, key: value})

    message = str(caught.value)
    assert repr(key) in message
    assert repr(value) in message
    assert allowed in message
    assert caught.value.key == key


#: Each numeric key's largest value, as the README's configuration table gives it.
UPPER_BOUNDS: dict[str, float] = {
    "max_retry_count": 99,
    "min_retry_interval_hours": 87_600,
    "recovery_batch_size": 10_000,
    "recovery_interval_minutes": 5_256_000,
    "recovery_timeout": 604_800,
    "failed_docs_retention_days": 3650,
    "backoff_factor": 100,
    "max_retry_interval_hours": 87_600,
    "retry_jitter": 1.0,
    "shards": 256,
    "wait_replicas": 100,
    "wait_timeout_ms": 5000,
    "lease_grace_seconds": 86_400,
    "max_error_chars": 1_048_576,
    "max_metadata_bytes": 1_048_576,
    "max_query_label_chars": 10_000,
    "spool_replay_seconds": 86_400,
    "dead_max": 10_000_000,
    "resend_after_hours": 87_600,
    "network_retry_interval_hours": 87_600,
    "max_recovery_timeout": 604_800,
    "breaker_window": 1000,
    "breaker_threshold": 1.0,
    "breaker_canary_size": 10_000,
}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(RecoveryConfig)}


def test_every_numeric_key_has_an_upper_bound() -> None:
    # A numeric key without one takes a value that fails later, far from the config.
    numeric = [
        key
        for key, default in DEFAULTS.items()
        if isinstance(default, int | float) and not isinstance(default, bool)
    ]

    assert sorted(UPPER_BOUNDS) == sorted(numeric)


@pytest.mark.parametrize(("key", "bound"), sorted(UPPER_BOUNDS.items()))
def test_a_value_just_past_a_keys_upper_bound_fails_naming_the_key_and_the_range(
    key: str, bound: float
) -> None:
    # Given the smallest value of the key's type past its upper bound
    whole = isinstance(DEFAULTS[key], int)
    past = int(bound) + 1 if whole else math.nextafter(float(bound), math.inf)

    # When it is passed, construction fails naming the key, the value and the range
    with pytest.raises(ConfigError) as caught:
        RecoveryConfig.from_mapping({key: past})

    assert caught.value.key == key
    assert repr(past) in str(caught.value)
    assert f"and <= {bound}" in str(caught.value)


def test_every_key_at_its_upper_bound_is_accepted() -> None:
    config = RecoveryConfig.from_mapping(UPPER_BOUNDS)

    assert {key: getattr(config, key) for key in UPPER_BOUNDS} == UPPER_BOUNDS


def test_the_readmes_configuration_table_gives_every_upper_bound() -> None:
    # Given the range column of each row of the README's configuration table
    ranges: dict[str, list[str]] = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) == 5:
            for key in re.findall(r"`(\w+)`", cells[0]):
                ranges[key] = re.findall(r"\d+(?:\.\d+)?", cells[2])

    # Then each key's row has its bound
    wrong = {
        key: ranges.get(key)
        for key, bound in UPPER_BOUNDS.items()
        if f"{bound:.10g}" not in ranges.get(key, [])
    }
    assert wrong == {}


def test_the_longest_wait_for_replicas_ends_before_the_clients_socket_timeout() -> None:
    # A WAIT past it would have the client give up on a change the primary made, and
    # the caller spool and replay it.
    socket_ms = int(CLIENT_OPTIONS["socket_timeout"] * 1000)

    with pytest.raises(ConfigError, match="wait_timeout_ms"):
        RecoveryConfig(wait_timeout_ms=socket_ms)


LARGEST_BACKOFF = {
    "backoff_factor": 100,
    "max_retry_count": 99,
    "min_retry_interval_hours": 0.001,
    "network_retry_interval_hours": 87_600,
    "max_retry_interval_hours": 87_600,
}


def test_the_largest_backoff_settings_give_a_finite_capped_delay_at_every_level() -> None:
    # Given the largest factor and retry count, the first backoff far under the cap
    # (before the bounds, a factor of 1e4 overflowed a float from retry level 78 on)
    config = RecoveryConfig.from_mapping(LARGEST_BACKOFF)

    # When a run's delays are computed, per lane and retry level
    lanes = json.loads(policy.level_delays(config))

    # Then each is finite, grows with the level up to the cap, and stays there
    cap = 87_600 * 3600.0
    for delays in lanes:
        assert len(delays) == 99
        assert all(math.isfinite(delay) for delay in delays)
        assert delays == sorted(delays)
        assert delays[-1] == cap
    assert lanes[0][:2] == [3.6, 360.0]


def test_a_run_and_status_work_at_the_largest_backoff_and_retention(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a manager at the largest backoff and retention the config accepts (before
    # the bounds, a retention of 1e12 days was a TTL Redis refused: every failure lost)
    config = RecoveryConfig.from_mapping(
        {**LARGEST_BACKOFF, "retry_jitter": 0.0, "failed_docs_retention_days": 3650}
    )
    manager = RecoveryManager(redis_url, config)
    record = FailedDocumentRecord(
        document_path="/docs/a.pdf",
        failure_timestamp=T0,
        task_id="task-a",
        error_message="RuntimeError: boom",
        args=["/docs/a.pdf"],
    )
    try:
        # When a failure is recorded, and a run goes once its first backoff is over
        manager.tracker.store.record_failure(record)
        ttl = redis_client.ttl(manager.tracker.keys.record(record.doc_id))
        summary = manager.run_batch(now=T0 + 60)
        status = manager.status()
    finally:
        manager.close()
        manager.app.close()

    # Then Redis took the record's ten-year TTL, the run sent it, and status counts it
    assert 3650 * 86400 < ttl <= 3651 * 86400
    assert [sent.doc_id for sent in summary.resubmitted] == [record.doc_id]
    assert (status["total_failed_documents"], status["in_recovery"]) == (1, 1)


@pytest.mark.parametrize("value", [None, 5])
def test_tracked_tasks_that_are_not_a_list_fail_as_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="tracked_tasks"):
        RecoveryConfig.from_mapping({"tracked_tasks": value})


def test_an_unknown_key_fails_naming_it_and_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        RecoveryConfig.from_mapping({**seed.PARAMETERS, "max_retries": 3})

    assert caught.value.key == "max_retries"
    assert "'max_retries'" in str(caught.value)
    assert "max_retry_count" in caught.value.allowed
    assert "recovery_batch_size" in caught.value.allowed
    known = sorted(f.name for f in dataclasses.fields(RecoveryConfig))
    assert caught.value.allowed == "one of " + ", ".join(known)


def test_every_key_is_declared_with_its_validator() -> None:
    # A field added without setting(...) would carry no check and go unvalidated.
    unchecked = [
        f.name for f in dataclasses.fields(RecoveryConfig) if not callable(f.metadata.get("check"))
    ]

    assert unchecked == []


def test_a_key_declared_without_a_validator_fails_at_construction() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithAPlainField(RecoveryConfig):
        extra_key: int = 5

    with pytest.raises(TypeError, match="extra_key is declared without a validator"):
        WithAPlainField()


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(RecoveryConfig)])
def test_every_key_rejects_a_value_of_no_allowed_type(key: str) -> None:
    # Given a value that no key allows, when it is passed as that key, construction fails.
    with pytest.raises(ConfigError) as caught:
        RecoveryConfig.from_mapping({key: object()})

    assert caught.value.key == key


def test_a_config_error_is_a_value_error_and_a_recovery_error() -> None:
    with pytest.raises(ValueError, match="recovery_batch_size"):
        RecoveryConfig(recovery_batch_size=0)
    assert issubclass(ConfigError, RecoveryError)


def test_ints_are_accepted_where_floats_are_expected() -> None:
    config = RecoveryConfig.from_mapping({"min_retry_interval_hours": 2, "retry_jitter": 0})

    assert config.min_retry_interval_hours == 2
    assert config.retry_jitter == 0


def test_environment_variables_are_parsed_by_the_type_of_each_key() -> None:
    environ = {
        "DOCRECOVERY_MAX_RETRY_COUNT": "5",
        "DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS": "0.25",
        "DOCRECOVERY_VERBOSE": "Yes",
        "DOCRECOVERY_ENABLE_PERIODIC_RECOVERY": "off",
        "DOCRECOVERY_TRACKED_TASKS": " tasks.a , tasks.b ,",
        "DOCRECOVERY_CATEGORY_OVERRIDES": "ValueError=permanent, KeyError = network",
        "DOCRECOVERY_KEY_PREFIX": "acme",
        "UNRELATED": "ignored",
    }

    config = RecoveryConfig.from_env(environ=environ)

    assert config.max_retry_count == 5
    assert config.min_retry_interval_hours == 0.25
    assert config.verbose is True
    assert config.enable_periodic_recovery is False
    assert config.tracked_tasks == ("tasks.a", "tasks.b")
    assert config.category_overrides == {"ValueError": "permanent", "KeyError": "network"}
    assert config.key_prefix == "acme"


def test_overrides_win_over_the_environment() -> None:
    environ = {"DOCRECOVERY_RECOVERY_BATCH_SIZE": "50", "DOCRECOVERY_VERBOSE": "1"}

    config = RecoveryConfig.from_env({"recovery_batch_size": 7}, environ=environ)

    assert config.recovery_batch_size == 7
    assert config.verbose is True


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCRECOVERY_RECOVERY_TIMEOUT", "120")

    assert RecoveryConfig.from_env().recovery_timeout == 120


def no_task_named(raw: str) -> str:
    return (
        f"got {raw!r}; allowed: names separated by commas, at least one"
        " (leave DOCRECOVERY_TRACKED_TASKS unset for tasks.process_document)"
    )


@pytest.mark.parametrize(
    ("variable", "raw", "key", "allowed"),
    [
        ("DOCRECOVERY_MAX_RETRY_COUNT", "three", "max_retry_count", "a whole number"),
        ("DOCRECOVERY_RECOVERY_TIMEOUT", "300.5", "recovery_timeout", "a whole number"),
        ("DOCRECOVERY_MAX_RETRY_COUNT", "-1", "max_retry_count", "a whole number >= 0"),
        ("DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS", "soon", "min_retry_interval_hours", "a number"),
        ("DOCRECOVERY_MIN_RETRY_INTERVAL_HOURS", "nan", "min_retry_interval_hours", "finite"),
        ("DOCRECOVERY_VERBOSE", "maybe", "verbose", "true/false"),
        ("DOCRECOVERY_CATEGORY_OVERRIDES", "ValueError", "category_overrides", "pairs"),
        ("DOCRECOVERY_CATEGORY_OVERRIDES", "ValueError=nope", "category_overrides", "one of"),
        ("DOCRECOVERY_KEY_PREFIX", "a b", "key_prefix", "without braces"),
        ("DOCRECOVERY_FAILED_DOCS_RETENTION_DAYS", "1e12", "failed_docs_retention_days", "3650"),
        # set empty, it tracked no task at all, without a word
        ("DOCRECOVERY_TRACKED_TASKS", "", "tracked_tasks", no_task_named("")),
        ("DOCRECOVERY_TRACKED_TASKS", " , ", "tracked_tasks", no_task_named(" , ")),
    ],
)
def test_a_bad_environment_value_fails_naming_the_key(
    variable: str, raw: str, key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RecoveryConfig.from_env(environ={variable: raw})

    assert caught.value.key == key
    assert repr(key) in str(caught.value)
    assert allowed in str(caught.value)


def test_the_config_is_frozen() -> None:
    config = RecoveryConfig()

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_retry_count = 10  # type: ignore[misc]


def test_a_frozen_config_cannot_be_changed_through_its_overrides_mapping() -> None:
    # A validated config must not take an invalid category after construction.
    config = RecoveryConfig(category_overrides={"ValueError": "permanent"})

    with pytest.raises(TypeError):
        config.category_overrides["KeyError"] = "no such category"  # type: ignore[index]
    assert config.category_overrides == {"ValueError": "permanent"}
    assert hash(config) == hash(RecoveryConfig(category_overrides={"ValueError": "permanent"}))


def test_replace_validates_like_construction() -> None:
    config = RecoveryConfig()

    assert config.replace(recovery_batch_size=20).recovery_batch_size == 20
    assert config.recovery_batch_size == 10
    with pytest.raises(ConfigError, match="recovery_batch_size"):
        config.replace(recovery_batch_size=0)


def test_tracked_tasks_given_as_a_list_are_stored_as_a_tuple() -> None:
    config = RecoveryConfig.from_mapping({"tracked_tasks": ["tasks.a", "tasks.b"]})

    assert config.tracked_tasks == ("tasks.a", "tasks.b")


def test_as_dict_round_trips_through_from_mapping() -> None:
    config = RecoveryConfig.from_mapping({**seed.PARAMETERS, "verbose": True, "dead_max": 5})

    assert RecoveryConfig.from_mapping(config.as_dict()) == config


def test_the_soft_time_limit_is_ninety_percent_of_the_hard_one_above_a_second() -> None:
    assert RecoveryConfig(recovery_timeout=100).soft_time_limit == 90
    assert soft_limit(2) == 1.8
    # a second or less: none, the hard limit alone (the pool checks once a second)
    assert RecoveryConfig(recovery_timeout=1).soft_time_limit == 0
    assert soft_limit(0) == 0


def test_a_redis_brokers_visibility_timeout_outlives_a_grown_recovery_limit(
    tmp_path: Path,
) -> None:
    # Given a timed-out document's limit may grow to 2 h (before: the visibility
    # timeout followed recovery_timeout alone, so a grown run was redelivered mid-run)
    env = {
        **os.environ,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DOCRECOVERY_MAX_RECOVERY_TIMEOUT": "7200",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CELERY_VISIBILITY_TIMEOUT", None)

    # When the workers' settings are read
    done = run_python(
        ["-c", "import celeryconfig as c; print(c.broker_transport_options)"], env, tmp_path
    )

    # Then an unacknowledged message waits longer than that run may take
    assert "'visibility_timeout': 7260" in done.stdout
    config = RecoveryConfig.from_mapping({"max_recovery_timeout": 7200})
    assert policy.longest_run(config, 300) == 7200
    assert policy.longest_run(config.replace(grow_timeouts=False), 900) == 900
