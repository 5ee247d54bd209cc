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

#: Replacements, in order: the more specific shapes first, so a path's digits are not
#: turned into <n> before the path is recognized.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", "<url>"),
        (r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/:'\"]+)+[\\/]?", "<path>"),
        (r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b", "<id>"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", "<address>"),
        (
            r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b",
            "<hex>",
        ),
        (r"\d+(?:\.\d+)?", "<n>"),
    )
)
#: Characters of a normalized message kept as the group's pattern.
PATTERN_CHARS = 200


def normalize(message: str) -> str:
    """The message with what varies between occurrences replaced by placeholders; only
    its head is read (a 10 MB message must not cost 10 MB of regular expressions)."""
    text = " ".join(message[: PATTERN_CHARS * 5].split())
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text[:PATTERN_CHARS]


def signature(error_type: str, message: str) -> str:
    """12 hex digits naming the group of (type, normalized message)."""
    raw = f"{error_type}\0{normalize(message)}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=6).hexdigest()
