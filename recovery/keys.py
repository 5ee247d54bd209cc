"""Every Redis key docrecovery uses, built in one place.

All names share one hash-tagged prefix (``{docrecovery}`` by default), so every key
lands in the same Redis Cluster slot and a Lua script may touch any of them. Scripts
never build key names themselves: Python builds them here and passes them through
KEYS. ``tests/test_keys.py`` pins the exact strings; changing one is a data migration.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "docrecovery"


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

    def app(self, *parts: str) -> str:
        """A key of the application's own, under ``app:`` beside the tracker's names
        (the pipeline keeps its results at ``app("result", doc_id)``): same prefix,
        same Cluster slot, never a clash with a name of the tracker."""
        return self._name("app", *parts)

    @property
    def due(self) -> str:
        """Sorted set: doc id scored by the time it may next be retried."""
        return self._name("due")

    @property
    def failed(self) -> str:
        """Sorted set: doc id scored by its first failure time (age and retention)."""
        return self._name("failed")

    @property
    def claimed(self) -> str:
        """Sorted set: doc id scored by the expiry of its recovery lease."""
        return self._name("claimed")

    @property
    def dead(self) -> str:
        """Sorted set: doc id scored by the time it stopped being retried."""
        return self._name("dead")

    @property
    def waiting(self) -> str:
        """Sorted set: doc id scored by when a document whose precondition (its file
        exists, is readable) still fails will be probed again."""
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
    def inflight(self) -> str:
        """Sorted set: task id scored by the deadline of a running tracked task."""
        return self._name("inflight")

    @property
    def inflight_tasks(self) -> str:
        """Hash: task id -> JSON call of a running tracked task."""
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
    def worker_failures(self) -> str:
        """Hash: worker -> failure events seen (for failure rates)."""
        return self._name("agg", "worker_failures")

    @property
    def worker_processed(self) -> str:
        """Hash: worker -> tracked task runs finished, failed or not."""
        return self._name("agg", "worker_processed")

    @property
    def query_failures(self) -> str:
        """Hash: query -> failure events seen."""
        return self._name("agg", "query_failures")

    @property
    def query_processed(self) -> str:
        """Hash: query -> tracked task runs finished, failed or not."""
        return self._name("agg", "query_processed")

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
    def run_lock(self) -> str:
        """Lock that keeps two recovery runs from overlapping."""
        return self._name("lock", "run")
