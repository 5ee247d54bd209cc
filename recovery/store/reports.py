"""What the tracker holds, read without changing it, as the reader's config sees it.

Status and analysis cost the same at ten records or ten million: one read-only script
counts, per backoff lane and retry level, what is eligible now, what later and what is
past ``max_retry_count`` — all under *this* reader's settings — and the small
aggregate hashes the scripts keep up to date come in the same pipelined round trip.
Listings, selections and pages are :mod:`recovery.store.listings`'s.

With ``shards`` > 1 each shard is read the same way, the reads pipelined together,
and the replies added up: counts and counters summed (the runs counted, and the last
run's time, are each shard's own: the largest), an error group's first occurrence the
earliest, a circuit breaker's window the shards' recent outcomes interleaved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from recovery import policy
from recovery.errors import CorruptCounter
from recovery.keys import Keys
from recovery.records import strict
from recovery.store import series
from recovery.store.connection import strs
from recovery.store.listings import Listings
from recovery.store.report_replies import (
    AGES,
    AGGREGATES,
    BREAKERS,
    IN_FLIGHT,
    STATS,
    flat,
    merge_windows,
    pairs,
    sum_reports,
)

#: Age buckets of the failure analysis, by hours since the first failure.
AGE_BUCKETS = ("<1h", "1-6h", "6-24h", "1-3d", "3-7d", ">7d")
#: Their edges in seconds, ascending (the scripts read them as JSON).
AGE_EDGES = json.dumps([hours * 3600 for hours in (1, 6, 24, 72, 168)])
#: The aggregate hashes an analysis reads whole (``Keys`` names), in reply order; a
#: status passes none, so its call names only the keys it counts.
ANALYSIS_HASHES = (
    "by_category",
    "by_worker",
    "worker_failures",
    "worker_successes",
    "by_query",
    "query_failures",
    "query_successes",
    "signatures",
    "signature_info",
    "signature_last",
)


#: Prefix of the stats fields counting failures per error category (record_failure.lua).
CATEGORY_FAILURES = "failures:"
#: Stats fields that hold a time or a sum of seconds (set by settle.lua, added to with
#: HINCRBYFLOAT by resolve.lua, which names it among the sums it checks); every other one
#: is a whole count.
DECIMAL_STATS = frozenset({"recovery_time_total", "last_recovery_run"})


@dataclass(frozen=True)
class Snapshot:
    """The tracker at one moment, as :meth:`Reports.snapshot` reads it."""

    #: As :meth:`Reports.status` returns it, under the reader's config.
    status: dict[str, Any]
    #: The stats hash as stored: the counters the scripts keep, but those in ``corrupt``.
    stats: dict[str, str]
    #: Tracked task runs checked in and not yet reported.
    in_flight: int
    #: Each category's recent recovery outcomes, oldest first ('1' success).
    breakers: dict[str, str]
    #: Stats fields that are not numbers, left out of ``stats`` and of the status's
    #: recovery metrics (which count them as absent): a reader shows what it can.
    corrupt: tuple[CorruptCounter, ...] = ()

    def failures_by_category(self) -> dict[str, int]:
        """Failures recorded per error category since the tracker began counting them."""
        return {
            field[len(CATEGORY_FAILURES) :]: int(value)
            for field, value in self.stats.items()
            if field.startswith(CATEGORY_FAILURES)
        }


class Reports(Listings):
    """Counts, analysis and snapshots, over the listings: ``tracker.reports``."""

    def _report(self, now: float | None, *, detail: bool) -> tuple[list[Any], list[CorruptCounter]]:
        """report.lua's reply (summed over shards): a status passes only the keys it
        counts, an analysis the aggregate hashes too, and age buckets; with the stats
        fields that are not numbers, taken out of it."""
        args: dict[str, Any] = {
            "now": "" if now is None else now,
            "delays": self._delays,
            "ages": AGE_EDGES if detail else "",
        }
        with self.connection.errors("analysis" if detail else "status"):
            if len(self.shards) == 1:
                shard = self.shards[0]
                replies = [shard.scripts.report(items=_hashes(shard.keys, detail), **args)]
            else:
                calls = [
                    (
                        s.scripts.report,
                        *s.scripts.report.bind(items=_hashes(s.keys, detail), **args),
                    )
                    for s in self.shards
                ]
                replies = self.connection.read_all(calls)
        corrupt = [
            bad
            for shard, reply in zip(self.shards, replies, strict=True)
            for bad in _set_aside(reply, shard.keys.stats)
        ]
        if len(replies) == 1:
            return replies[0], corrupt
        return sum_reports(replies, self.config.breaker_window), corrupt

    @cached_property
    def _delays(self) -> str:
        """This reader's backoff as report.lua reads it (its config is fixed)."""
        return policy.level_delays(self.config)

    def _checked_report(self, now: float | None, *, detail: bool) -> list[Any]:
        """report.lua's reply; a stats field that is not a number raises its
        CorruptCounter, which says how to repair it, for a status must not show it."""
        reply, corrupt = self._report(now, detail=detail)
        if corrupt:
            raise corrupt[0]
        return reply

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Counts under this reader's config and the recovery metrics, O(1) in the
        number of records, one round trip."""
        return _status(self._checked_report(now, detail=False))

    def analysis(self, now: float | None = None) -> dict[str, Any]:
        """Failures by age (every tracked document), category, worker and query."""
        return _analysis(self._checked_report(now, detail=True))

    def overview(self, now: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Status and analysis from one round trip: the analysis's counts are the
        status's too."""
        reply = self._checked_report(now, detail=True)
        return _status(reply), _analysis(reply)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Status, the raw counters, runs in flight and the breaker windows from one
        report call: what the Prometheus exporter reads at each scrape. Stats fields
        that are not numbers are set aside in ``corrupt``, not raised: the rest holds."""
        reply, corrupt = self._report(now, detail=False)
        return Snapshot(
            _status(reply),
            pairs(reply[STATS]),
            int(reply[IN_FLIGHT]),
            pairs(reply[BREAKERS]),
            tuple(corrupt),
        )

    def breaker_windows(self) -> dict[str, str]:
        """Each category's recent recovery outcomes, oldest first ('1' success); with
        shards, each shard's windows interleaved from their newest (the order of
        outcomes in different shards is not kept), ``breaker_window`` long."""
        with self.connection.errors("read circuit breakers"):
            pipe = self.connection.pipeline()
            for shard in self.shards:
                pipe.hgetall(shard.keys.breakers)
            windows: list[dict[str, str]] = pipe.execute()
        return merge_windows(windows, self.config.breaker_window)

    def recoveries_over_time(self) -> list[series.Bucket]:
        """Resubmissions, successful and failed recoveries per interval, oldest first
        (see :mod:`recovery.store.series`), summed over shards: a bounded read,
        whatever the store holds."""
        with self.connection.errors("read recoveries over time"):
            pipe = self.connection.pipeline()
            for shard in self.shards:
                pipe.zrange(shard.keys.series_buckets, 0, -1)
                pipe.hgetall(shard.keys.series)
            replies = pipe.execute()
        return series.total(
            [
                series.buckets(strs(starts), fields)
                for starts, fields in zip(replies[::2], replies[1::2], strict=True)
            ]
        )

    def environments(self) -> dict[str, int]:
        """Each worker's environment generation, as recorded when it last started."""
        k = self.keys
        with self.connection.errors("read environments"):
            pipe = self.connection.pipeline()
            pipe.hgetall(k.fingerprints)
            pipe.hgetall(k.generations)
            workers, generations = pipe.execute()
        return {worker: int(generations.get(fp, 0)) for worker, fp in sorted(workers.items())}


def _status(reply: list[Any]) -> dict[str, Any]:
    """Status from report.lua's reply."""
    total, eligible, scheduled, exhausted, claimed, waiting, dead, corrupt = reply[:AGES]
    return {
        "total_failed_documents": total,
        "eligible_for_recovery": eligible,
        "scheduled": scheduled,
        "exhausted": exhausted,
        "in_recovery": claimed,
        "waiting": waiting,
        "dead": dead,
        "corrupt": corrupt,
        "recovery_metrics": recovery_metrics(pairs(reply[STATS]), total, eligible),
    }


def _analysis(reply: list[Any]) -> dict[str, Any]:
    """The analysis from report.lua's reply with its detail."""
    cats, workers, w_fail, w_won, queries, q_fail, q_won, sigs, info, last = (
        pairs(r) for r in reply[AGGREGATES:]
    )
    return {
        "age_distribution": dict(zip(AGE_BUCKETS, reply[AGES], strict=True)),
        "error_categories": _ints(cats),
        "error_signatures": _groups(sigs, info, last),
        "workers": _rates(workers, w_fail, w_won),
        "queries": _rates(queries, q_fail, q_won),
    }


def recovery_metrics(stats: dict[str, str], total: int, eligible: int) -> dict[str, Any]:
    """The seed's metric names, from the stats hash the scripts keep up to date."""
    succeeded = int(stats.get("successful_recoveries", 0))
    failed = int(stats.get("failed_recoveries", 0))
    timed = int(stats.get("recovery_time_count", 0))
    last = stats.get("last_recovery_run")
    return {
        "total_failed_documents": total,
        "documents_eligible_for_retry": eligible,
        "recovery_attempts": int(stats.get("recovery_attempts", 0)),
        "successful_recoveries": succeeded,
        "failed_recoveries": failed,
        "recovery_success_rate": succeeded / (succeeded + failed) if succeeded + failed else 0.0,
        "average_recovery_time": (
            float(stats.get("recovery_time_total", 0)) / timed if timed else 0.0
        ),
        "last_recovery_run": float(last) if last else None,
        "recovery_runs": int(stats.get("recovery_runs", 0)),
        "failures_recorded": int(stats.get("failures_recorded", 0)),
        "resolved": int(stats.get("resolved", 0)),
        "dead_total": int(stats.get("dead_total", 0)),
        "expired": int(stats.get("expired", 0)),
        "dead_trimmed": int(stats.get("dead_trimmed", 0)),
        "deleted": int(stats.get("deleted", 0)),
        "dropped_after_delete": int(stats.get("dropped_after_delete", 0)),
        "dropped_stale": int(stats.get("dropped_stale", 0)),
    }


def _set_aside(reply: list[Any], key: str) -> list[CorruptCounter]:
    """Take the stats fields that are not numbers out of one shard's report.lua reply
    (``key``: that shard's stats hash), each as the CorruptCounter that names it. Every
    status checks them: the reply is rebuilt only when one is bad."""
    stats = reply[STATS]
    bad = {}
    for field, value in zip(stats[::2], stats[1::2], strict=True):
        try:
            strict(float if field in DECIMAL_STATS else int, value)
        except ValueError:
            bad[field] = value
    if not bad:
        return []
    reply[STATS] = flat({f: v for f, v in pairs(stats).items() if f not in bad})
    return [CorruptCounter(key, field, value) for field, value in bad.items()]


def _hashes(keys: Keys, detail: bool) -> list[str]:
    """The aggregate hashes report.lua returns whole: an analysis's, none for a status."""
    return [getattr(keys, name) for name in ANALYSIS_HASHES] if detail else []


def _ints(raw: dict[str, str]) -> dict[str, int]:
    return dict(sorted(((k, int(v)) for k, v in raw.items()), key=lambda kv: -kv[1]))


#: Error groups an analysis lists, the largest first.
SIGNATURES_SHOWN = 50


def _groups(
    counts: dict[str, str], info: dict[str, str], last: dict[str, str]
) -> list[dict[str, Any]]:
    """Errors grouped by similarity: count, example, first and last seen per group."""
    groups = []
    for sig, count in counts.items():
        try:
            first = json.loads(info.get(sig, "{}"))
        except ValueError:
            first = {}
        groups.append(
            {
                "signature": sig,
                "count": int(count),
                "error_type": first.get("error_type", ""),
                "category": first.get("category", ""),
                "example": first.get("example", ""),
                "first_seen": first.get("first"),
                "last_seen": float(last[sig]) if sig in last else None,
            }
        )
    groups.sort(key=lambda group: (-group["count"], group["signature"]))
    return groups[:SIGNATURES_SHOWN]


def _rates(
    tracked: dict[str, str], failures: dict[str, str], successes: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Per name: documents tracked now, failures and runs seen; every name that ran,
    failing or not (a worker that never failed has a failure rate of 0)."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(tracked) | set(failures) | set(successes)):
        fail = int(failures.get(name, 0))
        done = fail + int(successes.get(name, 0))
        out[name] = {
            "tracked": int(tracked.get(name, 0)),
            "failures": fail,
            "processed": done,
            "failure_rate": fail / done if done else 0.0,
        }
    return out
