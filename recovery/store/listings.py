"""Tracked documents listed, selected and paged, as the reader's config sees them.

An operator's queries, never on a worker's hot path: records are read in pipelined
chunks, and a page reads its index by score from a cursor, so paging costs the same at
a thousand records or a million.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recovery import policy
from recovery.errors import CorruptRecord
from recovery.keys import Keys
from recovery.records import DEAD, FailedDocumentRecord
from recovery.store.connection import Part, Shard, strs
from recovery.store.maintenance import chunks

log = logging.getLogger(__name__)


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


class Listings(Part):
    """Records by id, index, selection or page (the listing half of ``tracker.reports``)."""

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
        return [record for _, record in self._read(doc_ids) if record is not None]

    def _read(self, doc_ids: Sequence[str]) -> list[tuple[str, FailedDocumentRecord | None]]:
        """Each id with its record, None when it is missing or corrupt."""
        read: list[tuple[str, FailedDocumentRecord | None]] = []
        with self.connection.errors("read records"):
            for chunk in chunks(doc_ids):
                pipe = self.connection.pipeline()
                for doc_id in chunk:
                    pipe.hgetall(self.connection.shard(doc_id).keys.record(doc_id))
                replies = pipe.execute(raise_on_error=False)
                read += [
                    (doc_id, self._decode_or_report(doc_id, fields))
                    for doc_id, fields in zip(chunk, replies, strict=True)
                ]
        return read

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
        return [record for _, record in self.to_probe(limit) if record is not None]

    def to_probe(self, limit: int) -> list[tuple[str, FailedDocumentRecord | None]]:
        """The held documents a run probes, least recently probed first, each with its
        record (None when it cannot be read: it must still be probed, or it would stay
        first and keep every other held document from its turn)."""
        with self.connection.errors("read held documents"):
            ids = self._merged("waiting", limit - 1)[:limit]
        return self._read(ids)

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


def _index_name(keys: Keys, index: str) -> str:
    """The Keys property that names ``index`` (a sorted set of the first shard)."""
    for name in ("failed", "dead", "due", "claimed", "waiting", "corrupt", "imports"):
        if getattr(keys, name) == index:
            return name
    raise ValueError(f"{index!r} is not an index of {keys.prefix!r}")


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0
