"""The Lua scripts, loaded from ``recovery/lua`` and registered once per client.

Each script is its file with ``_lib.lua`` prepended. ``register_script`` gives an
object that calls EVALSHA and falls back to EVAL once after a SCRIPT FLUSH or a
restart, so every state change stays a single round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

NAMES = (
    "record_failure",
    "resolve",
    "claim",
    "settle",
    "release",
    "remove",
    "begin",
    "register_env",
    "promote_imports",
    "end_run",
)


@cache
def source(name: str) -> str:
    lua = resources.files("recovery") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Scripts:
    record_failure: Script
    resolve: Script
    claim: Script
    settle: Script
    release: Script
    remove: Script
    begin: Script
    register_env: Script
    promote_imports: Script
    end_run: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in NAMES})
