"""State changes that wait for replicas (``wait_replicas``): Redis ``WAIT``, opt-in.

Redis replicates asynchronously: a primary answers a write before any replica has
it, so a primary that dies a moment later takes the write with it when Sentinel
promotes a replica — an acknowledged failure record is gone, and nothing spools it
(README, Redis Sentinel, has the measured figures). With ``wait_replicas = n`` each
state change is sent in one pipeline with ``WAIT n timeout``: still one round trip,
which returns once ``n`` replicas have the change (the replicas' acknowledgement is
what it costs). A primary killed before that answers nothing, so the caller spools the
event instead of counting it done.

When fewer replicas acknowledge within ``wait_timeout_ms`` (one is down or far
behind), the change stands on the primary alone and a warning says so, at most once a
minute: failing the call would have the caller spool and replay a change the primary
already made, counting it twice. To refuse writes instead while replicas are missing,
set ``min-replicas-to-write`` on the Redis server.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two warnings about changes the replicas did not acknowledge.
WARN_EVERY = 60.0


class Wait:
    """``WAIT replicas timeout_ms`` after the commands of a pipeline."""

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._warned = -math.inf

    def execute(self, pipe: Any) -> list[Any]:
        """Run ``pipe`` (not a transaction) with WAIT after its commands, in one round
        trip; returns its commands' replies, errors as values."""
        pipe.wait(self.replicas, self.timeout_ms)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        acknowledged = replies.pop()
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if acknowledged < self.replicas:
            self._short(int(acknowledged))
        return replies

    def _short(self, acknowledged: int) -> None:
        now = time.monotonic()
        if now - self._warned < WARN_EVERY:
            return
        self._warned = now
        log.warning(
            "docrecovery: a state change was acknowledged by %d of %d replicas within %d ms;"
            " it is on the primary only until they catch up (a failover before then loses"
            " it)",
            acknowledged,
            self.replicas,
            self.timeout_ms,
        )
