"""Retention, trims and repairs of the tracker.

Run once per recovery run, never on a worker's hot path: removing documents past
their retention (one script call per chunk of ids read from a time-scored index),
trimming the dead set to ``dead_max`` with a warning, and the O(N) repair of the
aggregate counts, needed only after records vanished by their TTL safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Literal, TypeVar

from recovery.config import RecoveryConfig
from recovery.keys import Keys
from recovery.store.changes import CHUNK, TTL_MARGIN_SECONDS
from recovery.store.connection import Connection, Part, Shard, strs

log = logging.getLogger(__name__)

#: Names kept in each per-worker and per-query run counter (the busiest ones).
RATE_ENTRIES = 1000

Index = Literal["failed", "any"]
T = TypeVar("T")


class Maintenance(Part):
    def __init__(self, connection: Connection, config: RecoveryConfig) -> None:
        super().__init__(connection, config)
        self._expired = 0
        self._strays = 0

    def cleanup(self, now: float | None = None) -> dict[str, int]:
        """Apply retention: every record first failed before the retention window,
        live or dead, and dead ones beyond ``dead_max`` (oldest first, with a warning:
        never silently)."""
        now = self.connection.server_time() if now is None else now
        removed = {"expired": 0, "dead_trimmed": 0}
        with self.connection.errors("cleanup"):
            for shard in self.shards:
                for name, count in self._clean(shard, now).items():
                    removed[name] += count
            self._repair_aggregates()
            for shard in self.shards:
                self._trim_rate_counters(shard.keys)
        if removed["dead_trimmed"]:
            log.warning(
                "dead set over dead_max=%d: removed the %d oldest dead documents",
                self.config.dead_max,
                removed["dead_trimmed"],
            )
        return removed

    def _clean(self, shard: Shard, now: float) -> dict[str, int]:
        """Retention and the dead set's bound, in one shard (``dead_max`` is each
        shard's share of it, rounded up)."""
        k = shard.keys
        client = self.connection.client
        cutoff = now - self.config.retention_seconds
        expired = self._remove_range(shard, k.failed, "failed", cutoff, "expired")
        expired += self._remove_range(shard, k.corrupt, "any", cutoff, "expired")
        client.zremrangebyscore(k.superseded, "-inf", cutoff)
        client.zremrangebyscore(k.replayed_successes, "-inf", cutoff)
        # delete marks by when, negated once an outcome of their run was dropped
        client.zremrangebyscore(k.deleted, -cutoff, cutoff)
        trimmed = 0
        excess = int(client.zcard(k.dead)) - -(-self.config.dead_max // len(self.shards))
        while excess > 0:
            ids = strs(client.zrange(k.dead, 0, min(excess, CHUNK) - 1))
            if not ids:
                break
            trimmed += self._remove(shard, ids, "any", 0, "dead_trimmed")
            excess -= len(ids)
        return {"expired": expired, "dead_trimmed": trimmed}

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Stop tracking these documents, whatever their state."""
        with self.connection.errors("delete"):
            removed = sum(
                self._remove(shard, chunk, "any", 0, "deleted")
                for shard, ids in self.split(doc_ids, str)
                for chunk in chunks(ids)
            )
            self._repair_aggregates()
        return removed

    def drop_everything(self) -> int:
        """Delete every key under this tracker's prefix, records, counters and the
        application's own keys alike: a reset for demos and tests, O(N) by SCAN."""
        client = self.connection.client
        with self.connection.errors("drop every key"):
            names = [
                name
                for shard in self.shards
                for name in client.scan_iter(match=shard.keys.pattern(), count=1000)
            ]
            for chunk in chunks(names):
                client.delete(*chunk)  # a cluster client sends one DEL per slot
        return len(names)

    def _remove_range(
        self, shard: Shard, index: str, which: Index, cutoff: float, counter: str
    ) -> int:
        client = self.connection.client
        total = 0
        while ids := strs(client.zrangebyscore(index, "-inf", cutoff, 0, CHUNK)):
            total += self._remove(shard, ids, which, cutoff, counter)
            if len(ids) < CHUNK:
                break
        return total

    def _remove(
        self, shard: Shard, ids: Sequence[str], which: Index, cutoff: float, counter: str
    ) -> int:
        removed, expired, strays = shard.scripts.remove(
            items=[shard.keys.record(doc_id) for doc_id in ids],
            item_args=ids,
            now="",
            which=which,
            cutoff=cutoff,
            counter=counter,
            ttl=self.config.retention_seconds + TTL_MARGIN_SECONDS,
        )
        self._expired += int(expired)
        self._strays += int(strays)
        return int(removed)

    def _repair_aggregates(self) -> None:
        """Rebuild the counts once after removals that met index entries without a
        record, saying truthfully which kind they were (see ``lua/remove.lua``)."""
        if self._expired:
            log.warning(
                "%d tracked document(s) had lost their record (TTL fired before cleanup, "
                "was beat stopped?); rebuilding the aggregate counts",
                self._expired,
            )
        if self._strays:
            log.warning(
                "%d index entries had no record (never recorded by docrecovery, or "
                "deleted outside it); dropped them, rebuilding the aggregate counts",
                self._strays,
            )
        if self._expired or self._strays:
            self._expired = self._strays = 0
            self.rebuild_aggregates()

    def _trim_rate_counters(self, k: Keys) -> None:
        """Keep the per-worker and per-query run counters, and the error groups, to the
        RATE_ENTRIES busiest names (of each shard): free-text queries and messages would
        otherwise add a field each, forever."""
        client = self.connection.client
        if int(client.hlen(k.signatures)) > RATE_ENTRIES:
            counts: dict[str, str] = client.hgetall(k.signatures)  # type: ignore[assignment]
            ranked = sorted(counts, key=lambda sig: -int(counts[sig]))
            for chunk in chunks(ranked[RATE_ENTRIES:]):
                pipe = self.connection.pipeline(transaction=True)
                for key in (k.signatures, k.signature_info, k.signature_last):
                    pipe.hdel(key, *chunk)
                pipe.execute()
        for successes, failures in (
            (k.worker_successes, k.worker_failures),
            (k.query_successes, k.query_failures),
        ):
            if int(client.hlen(successes)) + int(client.hlen(failures)) <= RATE_ENTRIES:
                continue
            pipe = self.connection.pipeline()
            pipe.hgetall(successes)
            pipe.hgetall(failures)
            won, lost = pipe.execute()
            runs = {name: int(won.get(name, 0)) + int(lost.get(name, 0)) for name in won | lost}
            ranked = sorted(runs, key=lambda name: -runs[name])
            for chunk in chunks(ranked[RATE_ENTRIES:]):
                pipe = self.connection.pipeline(transaction=True)
                pipe.hdel(successes, *chunk)
                pipe.hdel(failures, *chunk)
                pipe.execute()

    def rebuild_aggregates(self) -> None:
        """Recount documents by category, worker and query from the records.

        A repair, O(N): needed only when records vanished without the scripts (their
        TTL safety net fired), which leaves counts behind.
        """
        for shard in self.shards:
            self._rebuild(shard.keys)

    def _rebuild(self, k: Keys) -> None:
        client = self.connection.client
        counts: dict[str, dict[str, int]] = {k.by_category: {}, k.by_worker: {}, k.by_query: {}}
        with self.connection.errors("rebuild aggregates"):
            ids = strs(client.zrange(k.failed, 0, -1))
            for chunk in chunks(ids):
                pipe = self.connection.pipeline()
                for doc_id in chunk:
                    pipe.hmget(k.record(doc_id), "cat", "worker", "query", "qlabel")
                for fields in pipe.execute(raise_on_error=False):
                    if not isinstance(fields, list):
                        continue
                    cat, worker, query, label = fields
                    for key, value in zip(counts, (cat, worker, label or query), strict=True):
                        if value:
                            counts[key][value] = counts[key].get(value, 0) + 1
            pipe = self.connection.pipeline(transaction=True)
            for key, values in counts.items():
                pipe.delete(key)
                if values:
                    pipe.hset(key, mapping=dict(values.items()))
            pipe.execute()


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
