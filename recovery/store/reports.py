"""What the tracker holds, read without changing it, as the reader's config sees it.

Status and analysis cost the same at ten records or ten million: one read-only script
counts, per backoff lane and retry level, what is eligible now, what later and what is
past ``max_retry_count`` — all under *this* reader's settings — and the small
aggregate hashes the scripts keep up to date come in the same pipelined round trip.
Listing and selecting read records in pipelined chunks; they are an operator's
queries, never on a worker's hot path.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recovery import policy
from recovery.errors import CorruptRecord
from recovery.keys import Keys
from recovery.records import DEAD, FailedDocumentRecord
from recovery.store.connection import Part, strs
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


class Reports(Part):
    def get_record(self, doc_id: str) -> FailedDocumentRecord | None:
        """One record, or None; raises CorruptRecord if it cannot be decoded."""
        key = self.keys.record(doc_id)
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
        with self.connection.errors("list failed documents"):
            ids = strs(self.connection.client.zrange(index or self.keys.failed, offset, stop))
        return self.get_records(ids)

    def get_records(self, doc_ids: Sequence[str]) -> list[FailedDocumentRecord]:
        """These documents' records, read in pipelined chunks; missing ones are left
        out, corrupt ones logged and skipped."""
        records: list[FailedDocumentRecord] = []
        with self.connection.errors("read records"):
            for chunk in chunks(doc_ids):
                pipe = self.connection.pipeline()
                for doc_id in chunk:
                    pipe.hgetall(self.keys.record(doc_id))
                replies = pipe.execute(raise_on_error=False)
                for doc_id, fields in zip(chunk, replies, strict=True):
                    record = self._decode_or_report(doc_id, fields)
                    if record is not None:
                        records.append(record)
        return records

    def _decode_or_report(self, doc_id: str, fields: Any) -> FailedDocumentRecord | None:
        key = self.keys.record(doc_id)
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
            ids = strs(self.connection.client.zrange(self.keys.waiting, 0, limit - 1))
        return self.get_records(ids)

    def select(self, selection: Selection | None = None, now: float | None = None) -> list[str]:
        """Ids of tracked documents matching ``selection``, oldest failure first.

        An operator's query, not a hot path: it reads each candidate's few filter
        fields, in pipelined chunks, from the indexes the selection names. A corrupt
        record is dated by when it was found so (its own times may be garbage), and a
        key that is not a hash matches no field filter.
        """
        selection = selection or Selection()
        k = self.keys
        cutoff = (time.time() if now is None else now) - (selection.older_than_hours or 0) * 3600
        chosen: dict[str, float] = {}
        client = self.connection.client
        with self.connection.errors("select documents"):
            for index in selection.indexes(k):
                scored: list[tuple[str, float]] = client.zrange(  # type: ignore[assignment]
                    index, 0, -1, withscores=True
                )
                for chunk in chunks(scored):
                    pipe = self.connection.pipeline()
                    for doc_id, _ in chunk:
                        pipe.hmget(
                            k.record(doc_id), "cat", "worker", "query", "sig", "state", "first"
                        )
                    replies = pipe.execute(raise_on_error=False)
                    for (doc_id, score), fields in zip(chunk, replies, strict=True):
                        if not isinstance(fields, list):
                            fields = [None] * 6
                        if not selection.matches(*fields[:5]):
                            continue
                        first = float(score) if index == k.corrupt else _float(fields[5])
                        if selection.older_than_hours is None or first <= cutoff:
                            chosen.setdefault(str(doc_id), first)
        ordered = sorted(chosen, key=lambda doc_id: (chosen[doc_id], doc_id))
        return ordered[: selection.limit] if selection.limit else ordered

    def _report(self, now: float | None, *, detail: bool) -> list[Any]:
        k = self.keys
        with self.connection.errors("analysis" if detail else "status"):
            reply: list[Any] = self.connection.scripts.report(
                items=[getattr(k, name) for name in ANALYSIS_HASHES] if detail else [],
                now="" if now is None else now,
                delays=policy.level_delays(self.config),
                ages=AGE_EDGES if detail else "",
            )
        return reply

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

    def breaker_windows(self) -> dict[str, str]:
        """Each category's recent recovery outcomes, oldest first ('1' success)."""
        with self.connection.errors("read circuit breakers"):
            return self.connection.client.hgetall(self.keys.breakers)  # type: ignore[return-value]

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
        _pairs(r) for r in reply[11:]
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
    }


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
