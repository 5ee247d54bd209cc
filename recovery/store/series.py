"""Recoveries over time: a bounded series the settle and resolve scripts keep.

Each bucket (:data:`STEP` seconds wide) counts the documents a run or an operator
resubmitted (``settle.lua``) and the recoveries that succeeded (``resolve.lua``), each
in the same script call that counts them in the stats hash. Failed recoveries are
counted by ``record_failure.lua``; the two scripts above note that running total in
the bucket they write, so a bucket's failures are the difference from the bucket
before — a failure shows in the bucket of the next run or success. Opening a bucket
drops those older than :data:`KEEP` buckets: the series never grows past it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bucket width: an hour, a few recovery runs at the default interval (30 minutes).
STEP = 3600
#: Buckets kept: a week, the default retention of the records themselves.
KEEP = 168


@dataclass(frozen=True)
class Bucket:
    """One interval of the series: when it starts and what happened in it."""

    start: int
    resubmitted: int
    recovered: int
    failed: int


def buckets(starts: list[str], fields: dict[str, str]) -> list[Bucket]:
    """The series from its stored form (bucket starts, the hash), oldest first, with
    the empty intervals between kept buckets filled in as zeros."""
    if not starts:
        return []
    known = sorted(int(float(start)) for start in starts)
    seen = int(fields.get("base", 0))
    out = []
    for start in range(known[0], known[-1] + STEP, STEP):
        total = int(fields.get(f"{start}:failed", seen))
        out.append(
            Bucket(
                start=start,
                resubmitted=int(fields.get(f"{start}:sent", 0)),
                recovered=int(fields.get(f"{start}:ok", 0)),
                failed=max(0, total - seen),
            )
        )
        seen = total
    return out


def total(series: list[list[Bucket]]) -> list[Bucket]:
    """Several shards' series as one: per interval, the sum of theirs."""
    if len(series) == 1:
        return series[0]
    sums: dict[int, list[int]] = {}
    for bucket in (b for one in series for b in one):
        into = sums.setdefault(bucket.start, [0, 0, 0])
        into[0] += bucket.resubmitted
        into[1] += bucket.recovered
        into[2] += bucket.failed
    if not sums:
        return []
    span = range(min(sums), max(sums) + STEP, STEP)
    return [Bucket(start, *sums.get(start, (0, 0, 0))) for start in span]
