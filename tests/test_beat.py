"""Highly available beat: RedBeat replicas, one scheduling, a standby taking over.

Two real ``celery -A tasks beat`` processes run against the test Redis with a
recovery interval of 1.2 s. Every ``recovery.run`` message they send waits in the
``recovery`` queue (no worker consumes it here) and names its sender in its ``origin``
header (``gen<pid>@<host>``), so the test counts who scheduled what.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
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


class Beat:
    """A ``celery -A tasks beat`` child process, logging to a file of its own."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = log.open("ab")
        command = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel=INFO"]
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)

    @property
    def origin(self) -> str:
        """The ``origin`` header of the messages this process sends."""
        return f"gen{self.process.pid}@"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_beat(redis_url: str, tmp_path: Path) -> Iterator[Callable[[str], Beat]]:
    """Factory: ``start_beat("a")`` runs a beat on the test Redis; all are stopped after."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DOCRECOVERY_RECOVERY_INTERVAL_MINUTES": INTERVAL_MINUTES,
        "CELERY_BEAT_MAX_INTERVAL": str(MAX_INTERVAL),
        "CELERY_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
    }
    started: list[Beat] = []

    def start(name: str) -> Beat:
        beat = Beat(name, env, tmp_path / f"beat-{name}.log")
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def senders(client: redis.Redis) -> list[str]:
    """The origin of every ``recovery.run`` message sent so far, oldest first."""
    return [
        m["headers"]["origin"]
        for m in messages(client, "recovery")
        if m["headers"]["task"] == "recovery.run"
    ]


def sent_by(client: redis.Redis, beat: Beat) -> int:
    return sum(origin.startswith(beat.origin) for origin in senders(client))


def logs(*beats: Beat) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {b.name} ---\n{b.log()[-3000:]}" for b in beats)


def test_redbeat_keeps_its_keys_under_the_trackers_hash_tag() -> None:
    from tasks import app

    conf = RedBeatConfig(app)

    assert conf.redis_url == celeryconfig.redis_url
    assert conf.key_prefix == Keys().beat == "{docrecovery}:beat"
    assert (conf.schedule_key, conf.statics_key, conf.lock_key) == (
        "{docrecovery}:beat:schedule",
        "{docrecovery}:beat:statics",
        "{docrecovery}:beat:lock",
    )


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
def test_of_two_beats_one_schedules_and_the_other_takes_over_when_it_is_killed(
    start_beat: Callable[[str], Beat], redis_client: redis.Redis
) -> None:
    # Given two beat replicas started together
    beats = [start_beat("a"), start_beat("b")]
    explain = logs(*beats)

    # When several recovery intervals pass (more than the lock timeout)
    wait_for(lambda: len(senders(redis_client)) >= 6, 30, "six recovery.run sends", explain)

    # Then every send came from one of them: the other stands by
    active = next(b for b in beats if sent_by(redis_client, b))
    (standby,) = (b for b in beats if b is not active)
    assert sent_by(redis_client, active) == len(senders(redis_client)), senders(redis_client)
    assert "beat: Acquired lock" not in standby.log()

    # When the active beat is SIGKILLed (it cannot release its lock)
    active.process.send_signal(signal.SIGKILL)
    active.process.wait(10)
    killed = time.monotonic()
    before = len(senders(redis_client))

    # Then the standby takes the lock once it lapses and schedules from then on
    wait_for(lambda: sent_by(redis_client, standby), TAKEOVER + 10, "the standby's send", explain)
    print(f"takeover after {time.monotonic() - killed:.1f}s (lock timeout {LOCK_TIMEOUT}s)")
    assert "beat: Acquired lock" in standby.log()
    wait_for(lambda: sent_by(redis_client, standby) >= 3, 30, "three sends", explain)
    after = senders(redis_client)[before:]
    assert Counter(o.startswith(standby.origin) for o in after) == {True: len(after)}, after
