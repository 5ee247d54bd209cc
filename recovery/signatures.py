"""Errors grouped by similarity: the seed's "groups similar errors for pattern
identification".

A signature is a short hash of the error type and its message with what varies
between occurrences of one problem normalized away — paths, URLs and addresses, ids
(UUIDs, hex), numbers — so 500 ``No such file: /data/x123.pdf`` failures form one
group, while ``No module named 'docx'`` and ``'pypdf'`` stay two. The tracker counts
failures per signature as it records them (O(1) per failure) and keeps one example
with the first and last time it was seen.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

#: What varies between occurrences of one problem, by placeholder; one alternation,
#: so a message is scanned once. Earlier shapes win where two could match (a URL's or
#: a path's digits are not numbers of their own).
_SHAPES = re.compile(
    "|".join(
        f"(?P<{name}>{pattern})"
        for name, pattern in (
            ("url", r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+"),
            ("path", r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/:'\"]+)+[\\/]?"),
            ("id", r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"),
            ("address", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"),
            (
                "hex",
                r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b",
            ),
            ("n", r"\d+(?:\.\d+)?"),
        )
    )
)
#: Characters of a normalized message kept as the group's pattern.
PATTERN_CHARS = 200
#: Characters read from either end of a message for its error line.
READ_CHARS = 1000
TRACEBACK = "Traceback (most recent call last)"


def error_line(message: str) -> str:
    """The line that says what the error is: the first, or a traceback's last. Only the
    ends are read (stripping copies a string, so only an end is stripped), and a 10 MB
    message costs no more than a short one."""
    window = READ_CHARS * 2
    head = message[:window].lstrip()[:READ_CHARS]
    if len(head) < READ_CHARS and len(message) > window:  # a blank lead of over READ_CHARS
        head = message.lstrip()[:READ_CHARS]
    if head.startswith(TRACEBACK):
        tail = message[-window:].rstrip()
        if len(tail) < READ_CHARS and len(message) > window:
            tail = message.rstrip()
        return tail[-READ_CHARS:].rsplit("\n", 1)[-1]
    return head.split("\n", 1)[0]


#: Error lines whose signature is remembered: a failure storm repeats one line (an
#: outage's "Connection refused", a missing module) thousands of times, and the
#: normalizing scan is most of what a signature costs.
CACHED_LINES = 1024


def normalize(message: str) -> str:
    """The error line with what varies between occurrences replaced by placeholders."""
    return _normalized(error_line(message))


def _normalized(line: str) -> str:
    line = " ".join(line.split())
    return _SHAPES.sub(lambda match: f"<{match.lastgroup}>", line)[:PATTERN_CHARS]


def signature(error_type: str, message: str) -> str:
    """12 hex digits naming the group of (type, normalized message)."""
    return _signature(error_type, error_line(message))


@lru_cache(maxsize=CACHED_LINES)
def _signature(error_type: str, line: str) -> str:
    raw = f"{error_type}\0{_normalized(line)}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=6).hexdigest()
