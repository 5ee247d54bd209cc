"""Stored text as a terminal may show it: one line, printable, passwords masked.

Paths are whatever the file system holds and messages whatever an exception said, so
everything a command prints from the store goes through :func:`shown`: a document
stays one line, bytes that are not UTF-8 cannot crash a command after it already
changed something, and a connection URL in an error keeps its password to itself.
"""

from __future__ import annotations

import re
import time
from typing import Any

from recovery.store import redact_text

#: Characters that would break a line apart, hide text or be ambiguous when printed:
#: C0 and C1 controls, DEL, line and paragraph separators, the backslash that starts an
#: escape, and lone surrogates (undecodable bytes of a path, see os.fsdecode).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]")
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Record fields holding an error's words, which may quote a URL with its password.
MESSAGE_FIELDS = ("error_message", "traceback", "state_reason")


def shown(text: object) -> str:
    """``text`` as one line of printable text, escaped the way Python writes string
    literals (an undecodable byte of a path shows as ``\\xNN``, the byte itself), with
    any URL's password masked."""
    return _UNPRINTABLE.sub(_escape, redact_text(str(text)))


def shown_lines(text: str) -> str:
    """A multi-line text (a traceback) line by line, each line as :func:`shown` has it."""
    return "\n".join(shown(line) for line in text.splitlines())


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")


def masked(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's fields for ``--json``: exact (paths included), except that passwords
    in its messages are masked."""
    return {
        name: redact_text(value) if name in MESSAGE_FIELDS and isinstance(value, str) else value
        for name, value in fields.items()
    }


def duration(seconds: float) -> str:
    """``42s``, ``5m``, ``3h 12m``, ``2d 4h``: the two largest units."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes}m"
    if seconds < 86400:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def moment(at: float | None, now: float) -> str:
    """A time as ``2026-01-02 10:11:12 (3h 12m ago)`` or ``(in 5m)``; ``-`` for none."""
    if at is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    relative = f"in {duration(at - now)}" if at > now else f"{duration(now - at)} ago"
    return f"{stamp} ({relative})"


def ago(at: float | None, now: float) -> str:
    """``3h 12m ago``; ``-`` for none."""
    return "-" if at is None else f"{duration(now - at)} ago"


def next_attempt(at: float | None, now: float) -> str:
    """When a run may take a document again: ``now``, ``in 5m``, or ``-`` (not a
    matter of time: dead, held back, in recovery, out of retries)."""
    if at is None:
        return "-"
    return "now" if at <= now else f"in {duration(at - now)}"
