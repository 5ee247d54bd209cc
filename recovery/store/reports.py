"""What the tracker holds, read without changing it, as the reader's config sees it.

Status and analysis cost the same at ten records or ten million: one read-only script
counts, per backoff lane and retry level, what is eligible now, what later and what is
past ``max_retry_count`` — all under *this* reader's settings — and the small
aggregate hashes the scripts keep up to date come in the same pipelined round trip.
Listing and selecting read records in pipelined chunks; they are an operator's
queries, never on a worker's hot path.

With ``shards`` > 1 each shard is read the same way, the reads pipelined together,
and the replies added up: counts and counters summed (the runs counted, and the last
run's time, are each shard's own: the largest), an error group's first occurrence the
earliest, a circuit breaker's window the shards' recent outcomes interleaved.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recovery import policy
from recovery.errors import CorruptRecord
from recovery.keys import Keys
from recovery.records import DEAD, FailedDocumentRecord
from recovery.store import series
from recovery.store.connection import Part, Shard, strs
from recovery.store.maintenance import chunks

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Selection:
    """A filter over tracked documents for manual operations; None matches anything."""

    category: str | None = None
    worker: str | None = None
    query: str | None = None
    #: An error group (recovery/signatures.py): ``docrecovery list --signature``.
    signature: str | None = None
    older_than_hours: float | None = None
    #: True: dead only; False: live (not dead) only; None: both.
    dead: bool | None = None
    limit: int | None = None
    #: True: only records a claim found unreadable (the corrupt index; ``dead`` does
    #: not apply, their state cannot be trusted); False: readable ones only; None:
    #: both, when ``dead`` is None too — so "everything" means every tracked id.
    corrupt: bool | None = None

    def indexes(self, keys: Keys) -> list[str]:
        """The indexes this selection reads, each id in exactly one of them."""
        chosen = [] if self.corrupt else [keys.dead if self.dead else keys.failed]
        if self.corrupt or (self.corrupt is None and self.dead is None):
            chosen.append(keys.corrupt)
        return chosen

    def matches(self, category: Any, worker: Any, query: Any, signature: Any, state: Any) -> bool:
        wanted = (
            (self.category, category),
            (self.worker, worker),
            (self.query, query),
            (self.signature, signature),
        )
        if any(want is not None and want != have for want, have in wanted):
            return False
        return self.dead is not False or state != DEAD


#: Index entries one page may examine: a page over a selective filter stops there and
#: hands back a cursor, so no request reads more than this, at any store size.
PAGE_BUDGET = 5000
#: Index entries read per round trip of a page.
PAGE_CHUNK = 500
#: The indexes a page walks.
PageIndex = Literal["failed", "waiting", "dead"]
#: Record fields a selection filters on, in the order Selection.matches takes them,
#: then the first failure's time (ages).
FILTER_FIELDS = ("cat", "worker", "query", "sig", "state", "first")


@dataclass(frozen=True)
class Page:
    """One page of an index: the matching ids in index order, the records of those
    that could be read, and the cursor of the next page (None: the index ended)."""

    ids: list[str]
    records: list[FailedDocumentRecord]
    next: str | None
    #: Index entries read for this page (at most PAGE_BUDGET).
    examined: int


def cursor(score: float, doc_id: str) -> str:
    """Where a page ended: the last entry's score and id (ties are ordered by id)."""
    return f"{score!r}:{doc_id}"


def parse_cursor(raw: str) -> tuple[float, str]:
    """A cursor back into (score, id); ValueError names what is wrong."""
    score, sep, doc_id = raw.rpartition(":")
    try:
        value = float(score)
    except ValueError:
        value = float("nan")
    if not sep or not doc_id or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"bad cursor {raw!r}: expected '<score>:<document id>'")
    return value, doc_id


#: Prefix of the stats fields counting failures per error category (record_failure.lua).
CATEGORY_FAILURES = "failures:"


@dataclass(frozen=True)
class Snapshot:
    """The tracker at one moment, as :meth:`Reports.snapshot` reads it."""

    #: As :meth:`Reports.status` returns it, under the reader's config.
    status: dict[str, Any]
    #: The stats hash as stored: the counters the scripts keep.
    stats: dict[str, str]
    #: Tracked task runs checked in and not yet reported.
    in_flight: int
    #: Each category's recent recovery outcomes, oldest first ('1' success).
    breakers: dict[str, str]

    def failures_by_category(self) -> dict[str, int]:
        """Failures recorded per error category since the tracker began counting them."""
        return {
            field[len(CATEGORY_FAILURES) :]: int(value)
            for field, value in self.stats.items()
            if field.startswith(CATEGORY_FAILURES)
        }


class Reports(Part):
    def get_record(self, doc_id: str) -> FailedDocumentRecord | None:
        """One record, or None; raises CorruptRecord if it cannot be decoded."""
        key = self.connection.shard(doc_id).keys.record(doc_id)
        client = self.connection.client
        with self.connection.errors("read record"):
            kind = str(client.type(key))
            if kind not in ("hash", "none"):
                raise CorruptRecord(key, f"holds a {kind}, not a hash")
            fields: dict[str, str] = client.hgetall(key)  # type: ignore[assignment]
        return self._decode(key, fields) if fields else None

    def _decode(self, key: str, fields: dict[str, Any]) -> FailedDocumentRecord:
        """A stored record, with when this reader's config would retry it."""
        record = FailedDocumentRecord.from_redis(key, fields)
        record.next_retry_at = policy.next_retry_at(self.config, record)
        return record

    def get_failed_documents(
        self, limit: int | None = None, offset: int = 0, index: str | None = None
    ) -> list[FailedDocumentRecord]:
        """Tracked documents, live and dead, oldest first failure first (or one index,
        such as ``keys.dead``). Corrupt records are logged and skipped."""
        if limit is not None and limit <= 0:
            return []
        stop = -1 if limit is None else offset + limit - 1
        name = _index_name(self.keys, index or self.keys.failed)
        with self.connection.errors("list failed documents"):
            if len(self.shards) == 1:
                ids = strs(self.connection.client.zrange(getattr(self.keys, name), offset, stop))
            else:
                merged = self._merged(name, stop)
                ids = merged[offset:] if stop < 0 else merged[offset : stop + 1]
        return self.get_records(ids)

    def _merged(self, index: str, stop: int) -> list[str]:
        """The ids of one index of every shard up to rank ``stop`` (-1: all), in score
        order across shards."""
        pipe = self.connection.pipeline()
        for shard in self.shards:
            pipe.zrange(getattr(shard.keys, index), 0, stop, withscores=True)
        ranked = heapq.merge(*pipe.execute(), key=lambda pair: (pair[1], pair[0]))
        return [str(doc_id) for doc_id, _ in ranked]

    def get_records(self, doc_ids: Sequence[str]) -> list[FailedDocumentRecord]:
        """These documents' records, read in pipelined chunks; missing ones are left
        out, corrupt ones logged and skipped."""
        records: list[FailedDocumentRecord] = []
        with self.connection.errors("read records"):
            for chunk in chunks(doc_ids):
                pipe = self.connection.pipeline()
                for doc_id in chunk:
                    pipe.hgetall(self.connection.shard(doc_id).keys.record(doc_id))
                replies = pipe.execute(raise_on_error=False)
                for doc_id, fields in zip(chunk, replies, strict=True):
                    record = self._decode_or_report(doc_id, fields)
                    if record is not None:
                        records.append(record)
        return records

    def _decode_or_report(self, doc_id: str, fields: Any) -> FailedDocumentRecord | None:
        key = self.connection.shard(doc_id).keys.record(doc_id)
        try:
            if isinstance(fields, Exception):
                raise CorruptRecord(key, str(fields))
            return self._decode(key, fields) if fields else None
        except CorruptRecord as exc:
            log.warning("skipping: %s", exc)
            return None

    def held(self, limit: int) -> list[FailedDocumentRecord]:
        """Documents held back by a failed precondition, least recently probed first."""
        with self.connection.errors("read held documents"):
            ids = self._merged("waiting", limit - 1)[:limit]
        return self.get_records(ids)

    def select(self, selection: Selection | None = None, now: float | None = None) -> list[str]:
        """Ids of tracked documents matching ``selection``, oldest failure first.

        An operator's query, not a hot path: it reads each candidate's few filter
        fields, in pipelined chunks, from the indexes the selection names. A corrupt
        record is dated by when it was found so (its own times may be garbage), and a
        key that is not a hash matches no field filter.
        """
        selection = selection or Selection()
        cutoff = (time.time() if now is None else now) - (selection.older_than_hours or 0) * 3600
        chosen: dict[str, float] = {}
        with self.connection.errors("select documents"):
            for shard in self.shards:
                for index in selection.indexes(shard.keys):
                    self._select(shard, index, selection, cutoff, chosen)
        ordered = sorted(chosen, key=lambda doc_id: (chosen[doc_id], doc_id))
        return ordered[: selection.limit] if selection.limit else ordered

    def _select(
        self,
        shard: Shard,
        index: str,
        selection: Selection,
        cutoff: float,
        chosen: dict[str, float],
    ) -> None:
        """Add what matches ``selection`` in one index of one shard to ``chosen``."""
        scored: list[tuple[str, float]] = self.connection.client.zrange(  # type: ignore[assignment]
            index, 0, -1, withscores=True
        )
        for chunk in chunks(scored):
            for (doc_id, score), fields in zip(chunk, self._fields(shard, chunk), strict=True):
                if not selection.matches(*fields[:5]):
                    continue
                first = float(score) if index == shard.keys.corrupt else _float(fields[5])
                if selection.older_than_hours is None or first <= cutoff:
                    chosen.setdefault(str(doc_id), first)

    def page(
        self,
        index: PageIndex,
        selection: Selection | None = None,
        after: str | None = None,
        limit: int = 50,
        *,
        now: float | None = None,
        budget: int = PAGE_BUDGET,
    ) -> Page:
        """Up to ``limit`` ids of one index (``"failed"``, ``"waiting"``, ``"dead"``)
        matching ``selection``, in the index's order, from the cursor ``after`` on (see
        :func:`cursor`). A page reads the index by score from the cursor, O(log N +
        what it examines), and examines at most ``budget`` entries per shard, so paging
        costs the same at a thousand records or a million; a page that stops at the
        budget still hands back the cursor to go on from. With shards, each shard is
        read from the same cursor and the pages merged up to the nearest place where
        a shard stopped, so nothing is skipped."""
        selection = selection or Selection()
        start = None if after is None else parse_cursor(after)
        cutoff = (time.time() if now is None else now) - (selection.older_than_hours or 0) * 3600
        found: list[tuple[float, str]] = []
        frontier: tuple[float, str] | None = None
        examined = 0
        with self.connection.errors("read a page of documents"):
            for shard in self.shards:
                matches, stopped, seen = self._page_of(
                    shard, getattr(shard.keys, index), selection, start, limit, budget, cutoff
                )
                found += matches
                examined += seen
                if stopped is not None and (frontier is None or stopped < frontier):
                    frontier = stopped
        found = sorted(f for f in found if frontier is None or f <= frontier)
        if len(found) > limit:
            found, frontier = found[:limit], found[limit - 1]
        elif found and frontier is not None and len(found) == limit:
            frontier = found[-1]
        ids = [doc_id for _, doc_id in found]
        following = cursor(*frontier) if frontier is not None else None
        return Page(ids, self.get_records(ids), following, examined)

    def _page_of(
        self,
        shard: Shard,
        index: str,
        selection: Selection,
        start: tuple[float, str] | None,
        limit: int,
        budget: int,
        cutoff: float,
    ) -> tuple[list[tuple[float, str]], tuple[float, str] | None, int]:
        """One shard's matches after ``start`` (at most ``limit``), where it stopped
        (None: its index ended) and how many entries it examined."""
        low: float | str = "-inf" if start is None else start[0]
        matches: list[tuple[float, str]] = []
        last = start
        examined, offset, more = 0, 0, True
        client = self.connection.client
        while more and len(matches) < limit and examined < budget:
            want = min(PAGE_CHUNK, budget - examined)
            raw: list[tuple[str, float]] = client.zrangebyscore(  # type: ignore[assignment]
                index, low, "+inf", start=offset, num=want, withscores=True
            )
            offset += len(raw)
            examined += len(raw)
            more = len(raw) == want
            # entries at the cursor's own score up to its id were on earlier pages
            batch = [
                (str(d), float(sc)) for d, sc in raw if start is None or (float(sc), str(d)) > start
            ]
            for (doc_id, score), fields in zip(batch, self._fields(shard, batch), strict=True):
                if len(matches) == limit:
                    more = True
                    break
                last = (score, doc_id)
                if selection.matches(*fields[:5]) and (
                    selection.older_than_hours is None or _float(fields[5]) <= cutoff
                ):
                    matches.append((score, doc_id))
        return matches, (last if more and last is not None else None), examined

    def _fields(self, shard: Shard, entries: Sequence[tuple[str, float]]) -> list[list[Any]]:
        """The fields selections filter on (category, worker, query, signature, state,
        first failure) of each entry's record, pipelined; all None for a key that is
        not a hash."""
        pipe = self.connection.pipeline()
        for doc_id, _ in entries:
            pipe.hmget(shard.keys.record(doc_id), *FILTER_FIELDS)
        replies = pipe.execute(raise_on_error=False) if entries else []
        return [r if isinstance(r, list) else [None] * len(FILTER_FIELDS) for r in replies]

    def _report(self, now: float | None, *, detail: bool) -> list[Any]:
        """report.lua's reply (summed over shards): a status passes only the keys it
        counts, an analysis the aggregate hashes too, and age buckets."""
        args: dict[str, Any] = {
            "now": "" if now is None else now,
            "delays": policy.level_delays(self.config),
            "ages": AGE_EDGES if detail else "",
        }
        calls = [
            (
                shard.scripts.report,
                *shard.scripts.report.bind(
                    items=[getattr(shard.keys, n) for n in ANALYSIS_HASHES] if detail else [],
                    **args,
                ),
            )
            for shard in self.shards
        ]
        with self.connection.errors("analysis" if detail else "status"):
            if len(calls) == 1:
                script, keys, argv = calls[0]
                reply: list[Any] = script.run(keys, argv)
                return reply
            return _sum_reports(self.connection.read_all(calls), self.config.breaker_window)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Counts under this reader's config and the recovery metrics, O(1) in the
        number of records, one round trip."""
        return _status(self._report(now, detail=False))

    def analysis(self, now: float | None = None) -> dict[str, Any]:
        """Failures by age (every tracked document), category, worker and query."""
        return _analysis(self._report(now, detail=True))

    def overview(self, now: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Status and analysis from one round trip: the analysis's counts are the
        status's too."""
        reply = self._report(now, detail=True)
        return _status(reply), _analysis(reply)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Status, the raw counters, runs in flight and the breaker windows from one
        report call: what the Prometheus exporter reads at each scrape."""
        reply = self._report(now, detail=False)
        return Snapshot(_status(reply), _pairs(reply[10]), int(reply[11]), _pairs(reply[12]))

    def breaker_windows(self) -> dict[str, str]:
        """Each category's recent recovery outcomes, oldest first ('1' success); with
        shards, each shard's windows interleaved from their newest (the order of
        outcomes in different shards is not kept), ``breaker_window`` long."""
        with self.connection.errors("read circuit breakers"):
            pipe = self.connection.pipeline()
            for shard in self.shards:
                pipe.hgetall(shard.keys.breakers)
            windows: list[dict[str, str]] = pipe.execute()
        return _merge_windows(windows, self.config.breaker_window)

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
    _now, total, eligible, scheduled, exhausted, claimed, waiting, dead, corrupt = reply[:9]
    return {
        "total_failed_documents": total,
        "eligible_for_recovery": eligible,
        "scheduled": scheduled,
        "exhausted": exhausted,
        "in_recovery": claimed,
        "waiting": waiting,
        "dead": dead,
        "corrupt": corrupt,
        "recovery_metrics": recovery_metrics(_pairs(reply[10]), total, eligible),
    }


def _analysis(reply: list[Any]) -> dict[str, Any]:
    """The analysis from report.lua's reply with its detail."""
    cats, workers, w_fail, w_won, queries, q_fail, q_won, sigs, info, last = (
        _pairs(r) for r in reply[13:]
    )
    return {
        "age_distribution": dict(zip(AGE_BUCKETS, reply[9], strict=True)),
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


def _index_name(keys: Keys, index: str) -> str:
    """The Keys property that names ``index`` (a sorted set of the first shard)."""
    for name in ("failed", "dead", "due", "claimed", "waiting", "corrupt", "imports"):
        if getattr(keys, name) == index:
            return name
    raise ValueError(f"{index!r} is not an index of {keys.prefix!r}")


def _merge_windows(windows: list[dict[str, str]], window: int) -> dict[str, str]:
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
COUNTS = range(1, 9)
AGES, STATS, IN_FLIGHT, BREAKERS, AGGREGATES = 9, 10, 11, 12, 13
SIGNATURE_INFO, SIGNATURE_LAST = 21, 22


def _sum_reports(replies: list[list[Any]], window: int) -> list[Any]:
    """One report.lua reply from each shard's (``window``: breaker_window)."""
    first = replies[0]
    out: list[Any] = [first[0]]
    out += [sum(int(r[i]) for r in replies) for i in COUNTS]
    out.append([sum(int(r[AGES][b]) for r in replies) for b in range(len(first[AGES]))])
    stats = [_pairs(r[STATS]) for r in replies]
    out.append(_flat(_sum_hashes(stats, keep_max=PER_RUN)))
    out.append(sum(int(r[IN_FLIGHT]) for r in replies))
    out.append(_flat(_merge_windows([_pairs(r[BREAKERS]) for r in replies], window)))
    for i in range(AGGREGATES, len(first)):
        hashes = [_pairs(r[i]) for r in replies]
        if i == SIGNATURE_INFO:
            merged = _earliest(hashes)
        elif i == SIGNATURE_LAST:
            merged = _sum_hashes(hashes, keep_max=tuple(set().union(*hashes)))
        else:
            merged = _sum_hashes(hashes)
        out.append(_flat(merged))
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


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


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
