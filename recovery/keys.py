"""Every Redis key docrecovery uses, built in one place.

All names share one hash-tagged prefix (``{docrecovery}`` by default), so every key
lands in the same Redis Cluster slot and a Lua script may touch any of them. Scripts
never build key names themselves: Python builds them here and passes them through
KEYS. ``tests/test_keys.py`` pins the exact strings; changing one is a data migration.

With ``shards`` > 1 (:func:`shard_keys`) the tracker keeps one full key set per shard,
each under a hash tag of its own, and files a document in the shard
:func:`shard_of` its id picks: a Redis Cluster spreads the shards over its primaries,
and every script still touches one slot.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "docrecovery"
#: Score strides of the due index: ``lane * LANE + retries * LEVEL + seconds``. The
#: scripts use the same numbers (``lua/_lib.lua``; tests/test_keys.py checks they agree).
LANE = 1e12
LEVEL = 1e10
#: Hash slots of a Redis Cluster (a key's slot is the CRC16 of its hash tag modulo this).
SLOTS = 16384


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; ``Keys("x").due`` is ``{x}:due``."""

    prefix: str = DEFAULT_PREFIX

    def _name(self, *parts: str) -> str:
        return ":".join((f"{{{self.prefix}}}", *parts))

    def pattern(self) -> str:
        """SCAN pattern of every key under this prefix (resets only, never hot paths)."""
        return f"{self._name('')}*"

    def record(self, doc_id: str) -> str:
        """Hash holding one failed document's record."""
        return self._name("doc", doc_id)

    def settled(self, token: str) -> str:
        """String: what the settle of the claim ``token`` returned (its resubmissions),
        kept for a claim's lease: the same settle applied again, its reply lost,
        returns it and changes and counts nothing twice (see ``lua/settle.lua``)."""
        return self._name("settled", token)

    def app(self, *parts: str) -> str:
        """A key of the application's own, under ``app:`` beside the tracker's names
        (the pipeline keeps its results at ``app("result", doc_id)``): same prefix,
        same Cluster slot, never a clash with a name of the tracker."""
        return self._name("app", *parts)

    @property
    def due(self) -> str:
        """Sorted set: live doc id waiting for recovery, scored by its backoff lane,
        retry count and last attempt (``lane * LANE + retries * LEVEL + last``):
        a run reads each (lane, retry count) as one score range with its own bound."""
        return self._name("due")

    @property
    def failed(self) -> str:
        """Sorted set: every tracked doc id, live or dead, scored by its first failure
        time (age and retention)."""
        return self._name("failed")

    @property
    def corrupt(self) -> str:
        """Sorted set: doc id whose record cannot be read, scored by when that was
        found: kept visible and removable, out of every run's way."""
        return self._name("corrupt")

    @property
    def claimed(self) -> str:
        """Sorted set: doc id claimed, sent or recovering, scored by when its claim
        runs out (see ``lua/release.lua``)."""
        return self._name("claimed")

    @property
    def dead(self) -> str:
        """Sorted set: doc id scored by the time it stopped being retried."""
        return self._name("dead")

    @property
    def waiting(self) -> str:
        """Sorted set: doc id held back because its precondition (its file exists, is
        readable) failed, scored by when it was last probed."""
        return self._name("waiting")

    @property
    def imports(self) -> str:
        """Sorted set: import-failed doc id scored by the environment generation it
        failed under; older than the newest generation means worth retrying now."""
        return self._name("imports")

    @property
    def superseded(self) -> str:
        """Sorted set: task ids replaced by a recovery resubmission, scored by time;
        a redelivered message with such an id is a stale duplicate and is dropped."""
        return self._name("superseded")

    @property
    def deleted(self) -> str:
        """Sorted set: task ids of runs that were sent or running when their document
        was deleted, scored by when (negated once an outcome was dropped); their
        outcomes are dropped, not recorded, until retention trims the mark."""
        return self._name("deleted")

    @property
    def replayed_successes(self) -> str:
        """Sorted set: event ids of success reports a spool's replay applied, scored by
        when; the same report applied again (a replay cut off before it could drop it
        from the spool) is a duplicate and counts nothing. Retention trims them."""
        return self._name("replayed", "successes")

    @property
    def inflight(self) -> str:
        """Sorted set: task id scored by the deadline of a running tracked task."""
        return self._name("inflight")

    @property
    def inflight_tasks(self) -> str:
        """Hash: task id -> JSON call of a running tracked task, with the id of its
        check-in."""
        return self._name("inflight", "tasks")

    @property
    def stats(self) -> str:
        """Hash of recovery counters (attempts, successes, times, last run)."""
        return self._name("stats")

    @property
    def by_category(self) -> str:
        """Hash: error category -> tracked documents in it."""
        return self._name("agg", "category")

    @property
    def by_worker(self) -> str:
        """Hash: worker -> tracked documents whose last failure was there."""
        return self._name("agg", "worker")

    @property
    def by_query(self) -> str:
        """Hash: query -> tracked documents failed under it."""
        return self._name("agg", "query")

    @property
    def signatures(self) -> str:
        """Hash: error signature -> failures seen with it (see recovery/signatures.py)."""
        return self._name("agg", "signature")

    @property
    def signature_info(self) -> str:
        """Hash: error signature -> JSON of its first occurrence (time, error type,
        category, an example message)."""
        return self._name("signature", "info")

    @property
    def signature_last(self) -> str:
        """Hash: error signature -> when it was last seen."""
        return self._name("signature", "last")

    @property
    def worker_failures(self) -> str:
        """Hash: worker -> failure events seen (for failure rates)."""
        return self._name("agg", "worker_failures")

    @property
    def worker_successes(self) -> str:
        """Hash: worker -> tracked task runs that succeeded (with worker_failures, the
        runs it processed)."""
        return self._name("agg", "worker_successes")

    @property
    def query_failures(self) -> str:
        """Hash: query -> failure events seen."""
        return self._name("agg", "query_failures")

    @property
    def query_successes(self) -> str:
        """Hash: query -> tracked task runs that succeeded."""
        return self._name("agg", "query_successes")

    @property
    def fingerprints(self) -> str:
        """Hash: worker -> fingerprint of its environment, set at worker start
        (``docrecovery status`` shows which worker runs which generation)."""
        return self._name("env", "fingerprints")

    @property
    def generations(self) -> str:
        """Hash: fingerprint -> generation, plus field ``latest`` (a counter raised
        each time a worker starts with a fingerprint no worker has had before)."""
        return self._name("env", "generations")

    @property
    def breakers(self) -> str:
        """Hash: error category -> JSON state of its circuit breaker."""
        return self._name("breakers")

    @property
    def series(self) -> str:
        """Hash: recoveries over time, per bucket start ``<t>:sent`` (resubmissions),
        ``<t>:ok`` (successful recoveries), ``<t>:failed`` (failed recoveries counted
        so far, as of the bucket's last write), and ``base`` (that count before the
        oldest bucket kept); see ``series_note`` in ``lua/_lib.lua``."""
        return self._name("series", "recoveries")

    @property
    def series_buckets(self) -> str:
        """Sorted set: bucket starts of ``series``, scored by themselves; the oldest
        are trimmed as new ones open, so the series stays bounded."""
        return self._name("series", "buckets")

    @property
    def run_lock(self) -> str:
        """Lock that keeps two recovery runs from overlapping."""
        return self._name("lock", "run")

    @property
    def beat(self) -> str:
        """Prefix of RedBeat's keys (``redbeat_key_prefix``): it appends ``:schedule``,
        ``:statics`` and ``:lock`` (the lock one beat of many holds while it schedules)
        and, without a separator, each entry's name."""
        return self._name("beat")


def slot(tag: str) -> int:
    """The Redis Cluster slot of every key under hash tag ``tag``: CRC16 (XMODEM) of
    the tag, modulo :data:`SLOTS`, as the cluster computes it."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def shard_tag(prefix: str, shard: int, count: int) -> str:
    """The hash tag of shard ``shard`` of ``count``: ``prefix:shard``, else the first
    ``prefix:shard.n`` (n = 1, 2, ...) whose slot lies in the middle half of the
    shard-th of ``count`` equal parts of the slot space. A cluster whose primaries own
    equal slot ranges (what ``redis-cli --cluster create`` makes) then holds ``count /
    primaries`` shards on each primary, whatever the prefix."""
    width = SLOTS / count
    low, high = shard * width + width / 4, shard * width + 3 * width / 4
    tag, n = f"{prefix}:{shard}", 0
    while not low <= slot(tag) < high:
        n += 1
        tag = f"{prefix}:{shard}.{n}"
    return tag


def shard_keys(prefix: str, count: int) -> tuple[Keys, ...]:
    """The key sets of a tracker with ``count`` shards: one shard is today's layout,
    ``{prefix}:...`` unchanged; more are ``{tag}:...`` with :func:`shard_tag`'s tags."""
    if count == 1:
        return (Keys(prefix),)
    return tuple(Keys(shard_tag(prefix, shard, count)) for shard in range(count))


def shard_of(doc_id: str, count: int) -> int:
    """The shard a document is filed in: a stable hash of its id (never Python's
    ``hash``, which differs between processes), so every process agrees."""
    if count == 1:
        return 0
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count
