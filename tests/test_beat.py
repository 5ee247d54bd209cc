"""Highly available beat: RedBeat replicas, one scheduling, a standby taking over.

Two real ``celery -A tasks beat`` processes run against the test Redis with a
recovery interval of 1.2 s. Every ``recovery.run`` message they send waits in the
``recovery`` queue (no worker consumes it here) and names its sender in its ``origin``
header (``gen<pid>@<host>``), so the test counts who scheduled what.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import LoggedProcess
from faults.support import messages, wait_for
from redbeat.schedulers import RedBeatConfig

import celeryconfig
from recovery.errors import ConfigError
from recovery.keys import Keys

#: Short enough to see several sends and a takeover in a few seconds.
INTERVAL_MINUTES = "0.02"
MAX_INTERVAL = 1
LOCK_TIMEOUT = 3
#: A standby's worst case: the lock lapses, then it sleeps up to one interval.
TAKEOVER = LOCK_TIMEOUT + MAX_INTERVAL
ENTRY = "docrecovery-recovery-run"


#: How each kind of beat runs: on its own, or embedded in a worker (``--beat``, as
#: ``DistributedProcessor`` starts one) that leaves the ``recovery`` queue alone.
COMMANDS = {
    "beat": ("beat",),
    "embedded": ("worker", "--beat", "-Q", "documents", "-c", "1", "--without-gossip"),
}


class Beat(LoggedProcess):
    """A beat in a child process (and its children), logging to a file of its own."""

    def __init__(self, name: str, kind: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        command = [sys.executable, "-m", "celery", "-A", "tasks", *COMMANDS[kind]]
        if kind == "embedded":
            command += ["-n", f"{name}@%h"]
        command.append("--loglevel=INFO")
        super().__init__(command, env, log)

    def pids(self) -> set[int]:
        """The process and its children: an embedded beat is a child of its worker."""
        return {self.pid, *self.children()}


@pytest.fixture
def start_beat(redis_url: str, tmp_path: Path) -> Iterator[Callable[[str, str], Beat]]:
    """Factory: ``start_beat("a", kind)`` runs a beat on the test Redis; all are stopped
    afterwards."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": INTERVAL_MINUTES,
        "CELERY_BEAT_MAX_INTERVAL": str(MAX_INTERVAL),
        "CELERY_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
    }
    started: list[Beat] = []

    def start(name: str, kind: str) -> Beat:
        beat = Beat(name, kind, env, tmp_path / f"beat-{name}.log")
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def senders(client: redis.Redis) -> list[int]:
    """The process that sent each ``recovery.run`` message so far, oldest first."""
    return [
        int(m["headers"]["origin"].removeprefix("gen").partition("@")[0])
        for m in messages(client, "recovery")
        if m["headers"]["task"] == "recovery.run"
    ]


def owner(beats: list[Beat], pid: int) -> Beat:
    (found,) = (beat for beat in beats if pid in beat.pids())
    return found


def logs(*beats: Beat) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {b.name} ---\n{b.log()[-3000:]}" for b in beats)


def test_redbeat_keeps_its_keys_under_the_trackers_hash_tag() -> None:
    from tasks import app

    conf = RedBeatConfig(app)

    assert conf.redis_url == celeryconfig.redbeat_redis_url
    assert conf.key_prefix == Keys().beat == "{docrecovery}:beat"
    assert (conf.schedule_key, conf.statics_key, conf.lock_key) == (
        "{docrecovery}:beat:schedule",
        "{docrecovery}:beat:statics",
        "{docrecovery}:beat:lock",
    )


#: Where each kind of deployment keeps beat's schedule and lock: the tracker's Redis.
WHERE = {
    "tracker and broker apart": (
        {"REDIS_URL": "redis://tracker:6379/1", "CELERY_BROKER_URL": "amqp://u:p@rabbit//"},
        "redis://tracker:6379/1",
    ),
    "one Redis named as the broker": (
        {"CELERY_BROKER_URL": "redis://one:6379/2"},
        "redis://one:6379/2",
    ),
    "a cluster tracker, by its first node": (
        {"REDIS_URL": "redis+cluster://:pw@n1:7000,n2:7001", "CELERY_BROKER_URL": "redis://b/0"},
        "redis://:pw@n1:7000/0",
    ),
}


@pytest.mark.parametrize("where", sorted(WHERE))
def test_beat_keeps_its_schedule_and_lock_in_the_trackers_redis(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    env, url = WHERE[where]
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    conf = runpy.run_path(str(celeryconfig.__file__))

    assert conf["redbeat_redis_url"] == url
    assert conf["redbeat_redis_options"].get("cluster", False) == ("cluster" in where)


@pytest.mark.parametrize(("max_interval", "lock_timeout"), [("10", "10"), ("0", "5")])
def test_a_lock_that_could_lapse_between_two_renewals_fails_at_start(
    monkeypatch: pytest.MonkeyPatch, max_interval: str, lock_timeout: str
) -> None:
    monkeypatch.setenv("CELERY_BEAT_MAX_INTERVAL", max_interval)
    monkeypatch.setenv("CELERY_BEAT_LOCK_TIMEOUT", lock_timeout)

    with pytest.raises(ConfigError, match="CELERY_BEAT_LOCK_TIMEOUT") as error:
        runpy.run_path(str(celeryconfig.__file__))

    assert error.value.value == int(lock_timeout)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_of_two_beats_one_schedules_and_the_other_takes_over_when_it_is_killed(
    start_beat: Callable[[str, str], Beat], redis_client: redis.Redis, kind: str
) -> None:
    # Given two beat replicas started together
    beats = [start_beat("a", kind), start_beat("b", kind)]
    explain = logs(*beats)

    # When several recovery intervals pass (more than the lock timeout)
    wait_for(lambda: len(senders(redis_client)) >= 6, 60, "six recovery.run sends", explain)

    # Then every send came from one of them: the other stands by
    assert len(set(senders(redis_client))) == 1, senders(redis_client)
    sender = senders(redis_client)[0]
    active = owner(beats, sender)
    (standby,) = (b for b in beats if b is not active)
    assert "beat: Acquired lock" not in standby.log()

    # When the active beat is SIGKILLed (it cannot release its lock)
    active.kill()
    killed = time.monotonic()
    before = len(senders(redis_client))

    # Then the standby takes the lock once it lapses and schedules from then on
    def taken_over() -> bool:
        return len(senders(redis_client)) > before

    wait_for(taken_over, TAKEOVER + 10, "the standby's first send", explain)
    print(f"{kind}: takeover after {time.monotonic() - killed:.1f}s (lock {LOCK_TIMEOUT}s)")
    assert "beat: Acquired lock" in standby.log()
    wait_for(lambda: len(senders(redis_client)) >= before + 3, 30, "three sends", explain)
    after = senders(redis_client)[before:]
    assert set(after) <= standby.pids(), (after, standby.pids())
