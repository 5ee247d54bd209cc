"""A local spool for failure and success events that could not reach Redis.

When Redis is down, a signal handler must neither raise into Celery nor drop the
event. It appends the event as one JSON line, stamped with a nanosecond clock, to a
file of its own (so prefork children never interleave writes), and a later call with
Redis back replays the spool:

- a file is named after its writer: host, pid and a random token drawn per spool and
  process (again after a fork), because replicas that share a spool volume repeat
  pids and often hostnames;
- a replayer takes files by renaming them to its own name under the file's lock, so
  two processes never replay the same events and no append lands in a file already
  read, under names of that take alone. While it holds taken files it holds a lock of
  its own (``replaying-<owner>.lock``); files whose owner's lock is free belong to a
  replayer that died (a flock ends with its holder, however it ended, and holds
  across containers where a pid means nothing), and are taken over;
- events of all files are replayed in the order they happened (a success must not be
  applied before the failure it followed);
- an event that fails again because Redis is still away is kept with everything
  after it; an event that fails for any other reason, and a line that cannot be
  parsed, are moved aside to ``rejected.jsonl`` (never deleted, never blocking the
  events behind them);
- a replay cut off by anything else (a soft time limit, a full disk) keeps every
  event it did not apply or reject too: a taken file is deleted only once none of its
  events is left (see ``Spool._put_back``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEQ = "spool_seq"


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._pid = -1
        self._token = ""

    @property
    def owner(self) -> str:
        """The writer's name in file names: host, pid and this spool's token, drawn
        anew in a forked child (which would otherwise share its parent's)."""
        if self._pid != os.getpid():
            self._pid, self._token = os.getpid(), secrets.token_hex(8)
        return f"{socket.gethostname()}-{self._pid}-{self._token}"

    def append(self, event: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._own("events")
        self._write(path, [{**event, SEQ: time.time_ns()}])
        return path

    def pending(self) -> bool:
        """Whether any spooled events wait; a cheap check for hot paths."""
        try:
            return bool(self._waiting())
        except OSError:
            return False

    def count(self) -> int:
        """Events waiting, for status output (a file a replayer finished meanwhile
        counts as empty)."""
        return sum(len(_lines(path)) for path in self._waiting())

    def replay(
        self,
        handle: Callable[[dict[str, Any]], None],
        unavailable: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> int:
        """Feed every spooled event to ``handle``, oldest first; returns how many were
        replayed. At the first event that raises ``unavailable`` it stops, keeping that
        event and the rest for the next replay, and re-raises; an event that raises
        anything else is rejected and the replay goes on. Cut off by any other
        exception, it keeps what it did not apply or reject as well, and re-raises."""
        if not self.directory.is_dir():
            return 0
        with self._replaying() as owner:
            taken = _Taken()
            try:
                self._take(owner, taken.paths)
                self._read(taken)
                replayed = self._feed(taken, handle, unavailable)
            finally:
                self._put_back(owner, taken)
            return replayed

    def _feed(
        self,
        taken: _Taken,
        handle: Callable[[dict[str, Any]], None],
        unavailable: type[Exception] | tuple[type[Exception], ...],
    ) -> int:
        replayed = 0
        for _, event in taken.events or []:
            try:
                handle({k: v for k, v in event.items() if k != SEQ})
            except unavailable:
                raise
            except Exception:
                log.exception("spooled event cannot be applied; moved to rejected.jsonl")
                self.reject(event)
            else:
                replayed += 1
            taken.done += 1
        return replayed

    def _put_back(self, owner: str, taken: _Taken) -> None:
        """End a replay, however it ended, losing nothing: a taken file all of whose
        events were applied or rejected is deleted; one none of whose events was (or
        all of them, when the replay was cut off before its events were read) goes back
        under a name any replayer takes; the rest of a file replayed in part is written
        to a new file of that kind first, and the file deleted only then. When that
        write fails (a full disk, a second interrupt) the file goes back whole: none is
        lost, and the events it had applied are applied again — a failure the record
        last took, and a success, is a no-op by its event id (``record_failure.lua``,
        ``resolve.lua``); an older failure counts twice, as does one a success of the
        file resolved (the success, applied again, resolves it again)."""
        if taken.events is None:
            unfinished = set(range(len(taken.paths)))
            started: set[int] = set()
        else:
            left = taken.events[taken.done :]
            unfinished = {index for index, _ in left}
            started = taken.touched | {index for index, _ in taken.events[: taken.done]}
            rest = [event for index, event in left if index in started]
            if rest and not self._write_rest(owner, rest):
                started -= unfinished
        for index, path in enumerate(taken.paths):
            if index in unfinished and index not in started:
                path.rename(self._fresh(owner))
            else:
                path.unlink(missing_ok=True)

    def _write_rest(self, owner: str, events: list[dict[str, Any]]) -> bool:
        """Write the events a replay left to a new file, complete before it has a name
        a replayer takes; False (and no such file) when it cannot be written."""
        aside = self.directory / f"rest-{owner}-{secrets.token_hex(6)}.tmp"
        try:
            with aside.open("x", encoding="ascii") as fh:
                fh.writelines(_line(event) for event in events)
                fh.flush()
                os.fsync(fh.fileno())
            aside.rename(self._fresh(owner))
        except BaseException:
            log.exception("spooled events left by a replay cannot be written; kept as taken")
            aside.unlink(missing_ok=True)
            return False
        return True

    def reject(self, event: dict[str, Any]) -> None:
        """Keep an event that can never be applied where an operator can read it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(self.directory / "rejected.jsonl", [event])

    # --- files -------------------------------------------------------------------

    def _own(self, kind: str) -> Path:
        return self.directory / f"{kind}-{self.owner}.jsonl"

    def _fresh(self, owner: str) -> Path:
        """A name no appender writes to, which any replayer takes as found."""
        return self.directory / f"events-{owner}-{secrets.token_hex(6)}.jsonl"

    def _waiting(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [path for path in self.directory.glob("*.jsonl") if _replayable(path)]

    @contextmanager
    def _replaying(self) -> Iterator[str]:
        """Hold this replayer's lock for as long as it has files taken. A thread that
        waited for the lock of another replay of its process gets the file that replay
        removed when it ended: it locks the one at the lock's name instead, the one
        other replayers check before they take a replayer's files over."""
        owner = self.owner
        lock = _lock_of(self.directory, owner)
        while True:
            with lock.open("ab") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                if not _same_file(fh.fileno(), lock):
                    continue
                try:
                    yield owner
                finally:
                    lock.unlink(missing_ok=True)
                return

    def _take(self, owner: str, taken: list[Path]) -> None:
        """Rename each file to this replayer's name while holding its lock, so no
        appender is mid-write (an appender checks, under the lock, that its file was
        not renamed away, and reopens if it was), adding each to ``taken`` as it goes.
        The lock files of dead replayers whose files were taken over go too."""
        dead_owners = set()
        # names never used before: a replayer that listed this owner's files of an
        # earlier replay, between that replay's end and this one, must not find them
        take = secrets.token_hex(6)
        for index, path in enumerate(sorted(self._waiting())):
            target = self.directory / f"replaying-{owner}-{take}x{index}.jsonl"
            try:
                with path.open("rb") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    if not _same_file(fh.fileno(), path):
                        # another replayer took it while we waited for the lock, and
                        # the name is a new file now, whose lock we do not hold
                        continue
                    path.rename(target)
            except FileNotFoundError:
                continue
            taken.append(target)
            if path.name.startswith("replaying-"):
                dead_owners.add(_owner_of(path))
        for dead in dead_owners:
            _lock_of(self.directory, dead).unlink(missing_ok=True)

    def _read(self, taken: _Taken) -> None:
        """Read the taken files' events, oldest first; lines that cannot be parsed are
        rejected here."""
        events = []
        for index, path in enumerate(taken.paths):
            for raw in path.read_bytes().splitlines():
                try:
                    event = json.loads(raw.decode("ascii"))
                    if not isinstance(event, dict) or type(event.get(SEQ, 0)) is not int:
                        raise ValueError("not an object with a whole sequence number")
                except ValueError:
                    self._reject(raw)
                    taken.touched.add(index)
                    continue
                events.append((index, event))
        taken.events = sorted(events, key=lambda item: item[1].get(SEQ, 0))

    def _write(self, path: Path, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        lines = "".join(_line(event) for event in events)
        while True:
            with path.open("a", encoding="ascii") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                if _same_file(fh.fileno(), path):
                    fh.write(lines)
                    fh.flush()
                    os.fsync(fh.fileno())
                    return
            # a replayer renamed the file between our open and our lock: open anew

    def _reject(self, raw: bytes) -> None:
        log.error("spooled event is not JSON, moved to rejected.jsonl: %.200r", raw)
        with (self.directory / "rejected.jsonl").open("ab") as fh:
            fh.write(raw + b"\n")


@dataclass
class _Taken:
    """The files a replay took and how far it got, for ``Spool._put_back``."""

    paths: list[Path] = field(default_factory=list)
    #: (index of its file in ``paths``, event), oldest first; None until all were read
    events: list[tuple[int, dict[str, Any]]] | None = None
    #: ``events[:done]`` were applied or rejected
    done: int = 0
    #: files a line of which was rejected as it was read
    touched: set[int] = field(default_factory=set)


def _line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True) + "\n"


def _lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().splitlines()
    except FileNotFoundError:
        return []


def _replayable(path: Path) -> bool:
    """``events-*`` files are taken as found (under their lock, see ``_take``);
    ``replaying-<owner>-<n>.jsonl`` only when no live replayer holds the owner's lock."""
    if path.name.startswith("events-"):
        return True
    return path.name.startswith("replaying-") and not _held(_lock_of(path.parent, _owner_of(path)))


def _owner_of(taken: Path) -> str:
    """The owner in ``replaying-<owner>-<take>.jsonl``."""
    return taken.name[len("replaying-") : -len(".jsonl")].rpartition("-")[0]


def _lock_of(directory: Path, owner: str) -> Path:
    return directory / f"replaying-{owner}.lock"


def _held(lock: Path) -> bool:
    """Whether a live process holds ``lock``."""
    try:
        with lock.open("rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
