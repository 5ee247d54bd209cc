"""A fingerprint of a worker's environment: installed distributions and importable
top-level modules.

An import failure is worth retrying as soon as a worker runs with something new
installed, not after a timer. Each worker computes this at ``worker_ready`` and
records it; import failures carry the fingerprint they failed under, and a run
promotes those recorded under an older generation (``lua/promote_imports.lua``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import pkgutil
from functools import cache


@cache
def fingerprint() -> str:
    """16 hex digits; cached per process (a restarted worker is a new process)."""
    digest = hashlib.blake2b(digest_size=8)
    dists = sorted(
        f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions()
    )
    modules = sorted({module.name for module in pkgutil.iter_modules()})
    for item in (*dists, "--", *modules):
        digest.update(item.encode() + b"\n")
    return digest.hexdigest()
