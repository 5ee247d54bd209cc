"""A local spool for failure and success events that could not reach Redis.

When Redis is down, a signal handler must neither raise into Celery nor drop the
event. It appends the event as one JSON line to a file of its own process (so
prefork children never interleave writes), and a later call with Redis back replays
the spool. Replay takes a file by renaming it, so two processes never replay the
same events; events that fail again are written back, and lines that cannot be
parsed are moved aside to ``rejected.jsonl`` rather than deleted. Files are named by
host and process, so one spool directory may be shared by several machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def append(self, event: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._own_file()
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=True) + "\n"
        with path.open("a", encoding="ascii") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return path

    def pending(self) -> bool:
        """Whether any spooled events wait; a cheap check for hot paths."""
        try:
            return any(self.directory.glob("events-*.jsonl"))
        except OSError:
            return False

    def replay(self, handle: Callable[[dict[str, Any]], None]) -> int:
        """Feed every spooled event to ``handle``; returns how many were replayed.
        Stops at the first event ``handle`` raises on, keeping it and the rest."""
        replayed = 0
        for path in sorted(self.directory.glob("events-*.jsonl")):
            taken = path.with_name(f"{path.stem}.replaying-{os.getpid()}")
            try:
                path.rename(taken)
            except FileNotFoundError:
                continue
            lines = taken.read_text(encoding="ascii").splitlines()
            for index, line in enumerate(lines):
                try:
                    event = json.loads(line)
                except ValueError:
                    self._reject(line)
                    continue
                try:
                    handle(event)
                except Exception:
                    self._put_back(lines[index:])
                    taken.unlink()
                    raise
                replayed += 1
            taken.unlink()
        return replayed

    def _own_file(self) -> Path:
        return self.directory / f"events-{socket.gethostname()}-{os.getpid()}.jsonl"

    def _put_back(self, lines: list[str]) -> None:
        with self._own_file().open("a", encoding="ascii") as fh:
            fh.write("".join(line + "\n" for line in lines))

    def _reject(self, line: str) -> None:
        log.error("spooled event is not JSON, moved to rejected.jsonl: %.200s", line)
        with (self.directory / "rejected.jsonl").open("a", encoding="ascii") as fh:
            fh.write(line + "\n")

    def count(self) -> int:
        """Events waiting, for status output."""
        total = 0
        for path in self.directory.glob("events-*.jsonl"):
            with contextlib.suppress(OSError), path.open("rb") as fh:
                total += sum(1 for _ in fh)
        return total
