"""report.lua's reply: where each part of it sits, and one reply made of each
shard's (counts and counters summed, breaker windows interleaved, error groups at their
earliest occurrence).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any


def merge_windows(windows: list[dict[str, str]], window: int) -> dict[str, str]:
    """Breaker windows of every shard as one (a single shard's as it is)."""
    if len(windows) == 1:
        return windows[0]
    return {
        category: _interleave([w.get(category, "") for w in windows])[-window:]
        for category in sorted(set().union(*windows))
    }


def _interleave(windows: list[str]) -> str:
    """Outcome strings merged newest with newest: '01' and '1' give '011'."""
    longest = max(map(len, windows), default=0)
    padded = [w.rjust(longest, " ") for w in windows]
    return "".join(itertools.chain.from_iterable(zip(*padded, strict=True))).replace(" ", "")


#: Counters of report.lua's stats that each shard keeps for every run (settle stamps
#: every shard): the largest is the tracker's, not their sum.
PER_RUN = ("recovery_runs", "last_recovery_run")
#: Positions in report.lua's reply: counts to sum, the age buckets, the stats, and
#: with detail the aggregate hashes (summed, but for the two about error groups).
COUNTS = range(8)
AGES, STATS, IN_FLIGHT, BREAKERS, AGGREGATES = 8, 9, 10, 11, 12
SIGNATURE_INFO, SIGNATURE_LAST = 20, 21


def sum_reports(replies: list[list[Any]], window: int) -> list[Any]:
    """One report.lua reply from each shard's (``window``: breaker_window)."""
    first = replies[0]
    out: list[Any] = [sum(int(r[i]) for r in replies) for i in COUNTS]
    out.append([sum(int(r[AGES][b]) for r in replies) for b in range(len(first[AGES]))])
    stats = [pairs(r[STATS]) for r in replies]
    out.append(flat(_sum_hashes(stats, keep_max=PER_RUN)))
    out.append(sum(int(r[IN_FLIGHT]) for r in replies))
    out.append(flat(merge_windows([pairs(r[BREAKERS]) for r in replies], window)))
    for i in range(AGGREGATES, len(first)):
        hashes = [pairs(r[i]) for r in replies]
        if i == SIGNATURE_INFO:
            merged = _earliest(hashes)
        elif i == SIGNATURE_LAST:
            merged = _sum_hashes(hashes, keep_max=tuple(set().union(*hashes)))
        else:
            merged = _sum_hashes(hashes)
        out.append(flat(merged))
    return out


def _sum_hashes(hashes: list[dict[str, str]], keep_max: Sequence[str] = ()) -> dict[str, str]:
    """Field by field, the sum (or, for ``keep_max``, the largest) of numeric hashes."""
    merged: dict[str, float] = {}
    for h in hashes:
        for name, raw in h.items():
            value = float(raw)
            if name not in merged:
                merged[name] = value
            elif name in keep_max:
                merged[name] = max(merged[name], value)
            else:
                merged[name] += value
    return {name: repr(v) if v != int(v) else str(int(v)) for name, v in merged.items()}


def _earliest(infos: list[dict[str, str]]) -> dict[str, str]:
    """Per error group, the first occurrence the shards saw first."""
    merged: dict[str, str] = {}
    for info in infos:
        for sig, raw in info.items():
            if sig not in merged or _first_seen(raw) < _first_seen(merged[sig]):
                merged[sig] = raw
    return merged


def _first_seen(raw: str) -> float:
    try:
        return float(json.loads(raw).get("first", 0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
