"""A local spool for failure and success events that could not reach Redis.

When Redis is down, a signal handler must neither raise into Celery nor drop the
event. It appends the event as one JSON line, stamped with a nanosecond clock, to a
file of its own host and process (so prefork children never interleave writes), and
a later call with Redis back replays the spool:

- a replayer takes files by renaming them to its own name under the file's lock, so
  two processes never replay the same events and no append lands in a file already
  read; files left by a replayer that died on this host are taken over, so its
  events are not stranded;
- events of all files are replayed in the order they happened (a success must not be
  applied before the failure it followed);
- an event that fails again because Redis is still away is written back with
  everything after it; an event that fails for any other reason, and a line that
  cannot be parsed, are moved aside to ``rejected.jsonl`` (never deleted, never
  blocking the events behind them).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEQ = "spool_seq"


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

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
        """Events waiting, for status output."""
        return sum(len(path.read_bytes().splitlines()) for path in self._waiting())

    def replay(
        self,
        handle: Callable[[dict[str, Any]], None],
        unavailable: type[Exception] = Exception,
    ) -> int:
        """Feed every spooled event to ``handle``, oldest first; returns how many were
        replayed. At the first event that raises ``unavailable`` it stops, keeping that
        event and the rest for the next replay, and re-raises; an event that raises
        anything else is rejected and the replay goes on."""
        taken = self._take()
        events = sorted(self._read(taken), key=lambda event: int(event.get(SEQ, 0)))
        replayed = 0
        try:
            for index, event in enumerate(events):
                try:
                    handle({k: v for k, v in event.items() if k != SEQ})
                except unavailable:
                    self._write(self._own("events"), events[index:])
                    raise
                except Exception:
                    log.exception("spooled event cannot be applied; moved to rejected.jsonl")
                    self.reject(event)
                    continue
                replayed += 1
        finally:
            for path in taken:
                path.unlink(missing_ok=True)
        return replayed

    def reject(self, event: dict[str, Any]) -> None:
        """Keep an event that can never be applied where an operator can read it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(self.directory / "rejected.jsonl", [event])

    # --- files -------------------------------------------------------------------

    def _own(self, kind: str) -> Path:
        return self.directory / f"{kind}-{socket.gethostname()}-{os.getpid()}.jsonl"

    def _waiting(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [path for path in self.directory.glob("*.jsonl") if _replayable(path)]

    def _take(self) -> list[Path]:
        """Rename each file to this replayer's name while holding its lock, so no
        appender is mid-write (an appender checks, under the lock, that its file was
        not renamed away, and reopens if it was)."""
        taken = []
        mine = self._own("replaying")
        for index, path in enumerate(sorted(self._waiting())):
            target = mine.with_name(f"{mine.stem}-{index}.jsonl")
            try:
                with path.open("rb") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    path.rename(target)
            except FileNotFoundError:
                continue
            taken.append(target)
        return taken

    def _read(self, paths: list[Path]) -> list[dict[str, Any]]:
        events = []
        for path in paths:
            for raw in path.read_bytes().splitlines():
                try:
                    event = json.loads(raw.decode("ascii"))
                    if not isinstance(event, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self._reject(raw)
                    continue
                events.append(event)
        return events

    def _write(self, path: Path, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        lines = "".join(
            json.dumps(event, separators=(",", ":"), ensure_ascii=True) + "\n" for event in events
        )
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


def _replayable(path: Path) -> bool:
    """``events-*`` files are taken as found (under their lock, see ``_take``);
    ``replaying-<host>-<pid>-<n>.jsonl`` only from a replayer on this host that died
    mid-replay."""
    name = path.name[: -len(".jsonl")]
    if name.startswith("events-"):
        return True
    if not name.startswith("replaying-"):
        return False
    host, _, pid = name[len("replaying-") :].rpartition("-")[0].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path``."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
