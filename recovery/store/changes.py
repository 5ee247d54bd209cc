"""State changes of the tracker: every one is a single Lua script call.

The scripts (``recovery/store/lua``) keep a document's record, its indexes and the
aggregates in step atomically, so a crash between two writes cannot leave a document
half-tracked, and each change costs one round trip (a claim two: a read-only
selection, then the atomic take that re-checks it).

Every deadline, lease and age comes from one clock, the Redis server's (``TIME``
inside the scripts), so hosts whose clocks disagree cannot disagree about them. A
caller may pass ``now`` — tests with a fixed clock, a failure replayed from the spool
with the time it happened — and then that time is used instead.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from recovery import policy, signatures
from recovery.calls import RunCall, counted
from recovery.records import FailedDocumentRecord
from recovery.store import series
from recovery.store.connection import Part, Shard, strs, wire

log = logging.getLogger(__name__)

#: Record hashes outlive their retention by this much; cleanup normally removes them
#: first, the TTL only catches what a stopped beat never cleaned.
TTL_MARGIN_SECONDS = 86400
#: Ids handled per script call in cleanup and sweeps, to keep each call short.
CHUNK = 500

FailureState = Literal["failed", "dead", "skipped", "dropped", "stale", "duplicate"]
Verdict = Literal["run", "stale", "lost"]
ClaimMode = Literal["due", "preview", "manual"]
#: A lost run is reported by the redelivery that found its own entry ("any"), or by a
#: sweep with the deadline bound it read entries with.
LostRun = float | Literal["any"]
#: ``now`` of a failure: a time, the record's own failure time (None), or the server's.
FailureTime = float | Literal["server"] | None


@dataclass(frozen=True)
class FailureOutcome:
    state: FailureState
    retry_count: int
    replaced_corrupt: bool


@dataclass(frozen=True)
class Resolution:
    """What a success did: whether the document was tracked, and how long its recovery
    took when the success was a recovery attempt."""

    tracked: bool
    recovery_seconds: float | None = None
    #: the report was applied before, and changed nothing now
    duplicate: bool = False
    #: a probe found nothing stored under its id, and changed and counted nothing
    absent: bool = False


#: The name documents processed without a query are counted under.
NO_QUERY = "(no query)"


def query_label(query: str | None, limit: int) -> str:
    """The name a query is counted under in the per-query aggregates: itself, or when
    longer than ``limit`` its head and a hash of the whole, so a 100 KB query is not a
    100 KB field name in three hashes (the record keeps the whole query); no query is
    counted as such, ``(no query)`` (``query_of`` in lua/_lib.lua)."""
    if not query:
        return NO_QUERY
    if len(query) <= limit:
        return query
    digest = hashlib.blake2b(wire(query), digest_size=8).hexdigest()
    return f"{query[:limit]}…#{digest}"


def _at(now: float | None) -> float | str:
    """A script's ``now`` argument: '' lets the script read the server's clock."""
    return "" if now is None else now


class Store(Part):
    """Records, indexes and aggregates of failed documents, one Lua call per change."""

    def record_failure(
        self,
        record: FailedDocumentRecord,
        *,
        counted: bool = True,
        recovery_attempt: bool = False,
        now: FailureTime = None,
        lost_run: LostRun | None = None,
        event: str = "",
    ) -> FailureOutcome:
        """Track a failure at ``now`` (default: the record's failure time; "server":
        the server's clock, as workers report). A document already tracked gets its
        retry counted unless ``counted`` is false (a manual retry); none keeps fewer
        retries than the record's ``retry_count`` (0 in a worker's report), so a
        failure imported with the retries it used is not retried past the maximum.
        Permanent errors go straight to dead. Whether and when it runs again is each
        recovery run's call. ``lost_run`` reports an in-flight run that never finished
        (see :meth:`record_lost_run`): skipped (state ``skipped``) when the entry is
        gone or, for a sweep, was renewed since, so a lost run is reported once. The
        failure of a run whose document was deleted while it ran is ``dropped``; one of a
        run that recovery has since replaced by a newer task is ``stale``. ``event``
        names a worker's report (a call without one names itself): applied again (a
        spooled replay of a change a failover acknowledged too late, or the call sent
        again by redis-py after the connection dropped before its reply) it is a
        ``duplicate`` and counts nothing twice."""
        at = record.failure_timestamp if now is None else now
        config = self.config
        category = record.error_category
        sig = record.signature or signatures.signature(record.error_type, record.error_message)
        doc_id = record.doc_id
        shard = self.connection.shard(doc_id)
        key = shard.keys.record(doc_id)
        with self.connection.errors("record failure"):
            state, retries, replaced = shard.scripts.record_failure(
                keys={"record": key},
                now="" if at == "server" else at,
                doc_id=doc_id,
                permanent=int(policy.is_permanent(category)),
                counted=int(counted),
                recovery=int(recovery_attempt),
                lane=policy.lane_for(category),
                ttl=int(config.retention_seconds + TTL_MARGIN_SECONDS),
                task_id=wire(record.task_id),
                lost_run="" if lost_run is None else lost_run,
                window=config.breaker_window,
                cat=category,
                worker=wire(record.worker_id or ""),
                query=wire(record.query or ""),
                qlabel=wire(query_label(record.query, config.max_query_label_chars)),
                fp=record.fingerprint,
                tlimit=record.time_limit or "",
                attempts=record.recovery_attempts,
                retries=record.retry_count,
                body=record.body(config.max_error_chars),
                sig=sig,
                etype=wire(record.error_type),
                example=wire(record.error_message[: signatures.PATTERN_CHARS]),
                event=event or secrets.token_hex(8),
            )
        if replaced:
            log.warning("replaced an undecodable value at %s", key)
        if state == "dropped":
            log.info(
                "failure of task %s dropped: %s was deleted while it ran",
                record.task_id,
                record.document_path,
            )
        if state == "stale":
            log.warning(
                "failure of task %s dropped: recovery had already replaced it by a newer"
                " task for %s",
                record.task_id,
                record.document_path,
            )
        return FailureOutcome(state, int(retries), bool(replaced))

    def record_lost_run(self, call: RunCall, bound: LostRun, now: float | None) -> FailureOutcome:
        """Record a run that checked in and never reported as a ``worker_lost``
        failure: a lost attempt counts (unless manual), so a crash loop ends. A lost
        run of a deleted document is recorded nowhere, so it comes back ``skipped``;
        one applied twice (its reply lost) comes back a ``duplicate`` with the retries
        it left, by which a worker still drops the message of a crash loop."""
        outcome = self.record_failure(
            FailedDocumentRecord.lost(call, now or 0.0),
            lost_run=bound,
            counted=counted(call.marker),
            recovery_attempt=call.marker is not None,
            now="server" if now is None else now,
        )
        dropped = outcome.state in ("dropped", "stale")
        return FailureOutcome("skipped", 0, False) if dropped else outcome

    def resolve(
        self,
        doc_id: str,
        *,
        worker: str | None = None,
        query: str | None = None,
        recovery_attempt: bool = False,
        task_id: str = "",
        now: float | None = None,
        event: str = "",
        probe: bool = False,
    ) -> Resolution:
        """Stop tracking a document that was processed. ``event`` names a report
        replayed from a spool: applied again (a replay cut off after Redis applied it)
        it is a ``duplicate`` and counts nothing twice. ``probe``: ``doc_id`` is only
        one reading of what the caller was given; with nothing stored under it the
        call is ``absent`` and changes and counts nothing, so the caller can try
        another reading and count the run once."""
        shard = self.connection.shard(doc_id)
        with self.connection.errors("resolve"):
            tracked, took, *note = shard.scripts.resolve(
                keys={"record": shard.keys.record(doc_id)},
                now=_at(now),
                doc_id=doc_id,
                worker=wire(worker or ""),
                query=wire(query_label(query, self.config.max_query_label_chars)),
                recovery=int(recovery_attempt),
                task_id=wire(task_id),
                window=self.config.breaker_window,
                step=series.STEP,
                keep=series.KEEP,
                event=event,
                probe=int(probe),
            )
        took_seconds = float(took) if took else None
        return Resolution(bool(tracked), took_seconds, note == ["duplicate"], note == ["absent"])

    def put(self, key: str, value: str, ttl: int) -> None:
        """Keep an application value (such as a pipeline's result) with a TTL; ``key``
        comes from ``keys.app(...)``."""
        with self.connection.errors("store a value"):
            pipe = self.connection.pipeline()
            pipe.set(key, value, ex=ttl)
            self.connection.write(pipe)

    def begin(
        self, doc_id: str, call: RunCall, limit: float, now: float | None = None
    ) -> tuple[Verdict, str]:
        """A tracked run starts and may take ``limit`` seconds before it counts as
        lost: returns (verdict, record state); see ``lua/begin.lua``. The run is in
        flight in its document's shard, where its report and the sweep find it. Each
        call stores its entry under a new check-in id: applied twice (redis-py sends
        it again when the connection drops before the reply), it finds its own entry
        and answers 'run', where a redelivery of a run that died finds another's."""
        shard = self.connection.shard(doc_id)
        with self.connection.errors("begin"):
            verdict, state = shard.scripts.begin(
                keys={"record": shard.keys.record(doc_id)},
                now=_at(now),
                task_id=wire(call.task_id),
                limit=limit,
                call=wire(call.to_json(checkin=secrets.token_hex(8))),
                doc_id=doc_id,
            )
        return verdict, str(state)

    def end_run(self, task_id: str) -> bool:
        """Take a run out of flight when it ends with neither success nor failure (a
        task id names no document, so with shards every shard is asked)."""
        with self.connection.errors("end run"):
            return any(
                [bool(shard.scripts.end_run(task_id=wire(task_id))) for shard in self.shards]
            )

    def lost_runs(self, bound: float, limit: int = CHUNK) -> list[RunCall]:
        """In-flight runs whose deadline is at or before ``bound``, up to ``limit`` of
        each shard. An entry that cannot be decoded is reported and dropped, so one bad
        entry never stops a sweep."""
        return [call for shard in self.shards for call in self._lost_runs(shard, bound, limit)]

    def _lost_runs(self, shard: Shard, bound: float, limit: int) -> list[RunCall]:
        k = shard.keys
        client = self.connection.client
        with self.connection.errors("read in-flight runs"):
            ids = strs(client.zrangebyscore(k.inflight, "-inf", bound, 0, limit))
            raws: list[Any] = client.hmget(k.inflight_tasks, ids) if ids else []
        runs = []
        for task_id, raw in zip(ids, raws, strict=True):
            call = RunCall.from_json(task_id, raw)
            if call is None:
                with self.connection.errors("end run"):
                    shard.scripts.end_run(task_id=wire(task_id))
            else:
                runs.append(call)
        return runs

    def end_runs_of(self, worker: str) -> int:
        """Take every run of one worker node out of flight (its operator stopped it);
        reads the in-flight index, which holds only what runs now, never the store."""
        ended = 0
        for call in self.lost_runs(float("inf")):
            if call.worker == worker:
                ended += self.end_run(call.task_id)
        return ended

    def register_environment(self, worker: str, fingerprint: str) -> tuple[int, bool]:
        """Record a worker's environment; returns (generation, whether it is new), as
        the first shard has them. Each shard keeps its own generations (its import
        failures are compared with them), so every shard is told."""
        with self.connection.errors("register environment"):
            replies = [
                shard.scripts.register_env(worker=wire(worker), fingerprint=fingerprint)
                for shard in self.shards
            ]
        generation, new = replies[0]
        return int(generation), bool(new)

    def promote_imports(self) -> list[str]:
        """Import failures recorded under an older environment become eligible now."""
        with self.connection.errors("promote import failures"):
            return [
                doc_id
                for shard in self.shards
                for doc_id in strs(shard.scripts.promote_imports(limit=CHUNK))
            ]
