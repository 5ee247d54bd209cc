"""The Lua scripts: each file declares its key signature once, in its header.

A script's header names its fixed keys and arguments::

    -- KEYS: record due failed
    -- ARGV: now doc_id
    -- (any further KEYS and ARGV are per-item, read with item_key(i) / item_arg(i))

From that one declaration the loader

- prepends a prelude binding the names to tables, so a body says ``K.due`` and
  ``A.now``, never ``KEYS[16]``, then ``_lib.lua``, the helpers every script shares;
- builds the KEYS list in Python: a name that is a :class:`~recovery.keys.Keys`
  property resolves by itself (and is built once per script); any other name, such
  as ``record``, must be given by the caller; ARGV is built from keyword arguments
  in the declared order. A missing or unknown name raises at once instead of
  shifting every later argument.

``register_script`` gives an object that calls EVALSHA and, on NOSCRIPT (after a
SCRIPT FLUSH, a restart, or a failover to a replica that never loaded it), loads the
script and calls it again, so every state change stays one round trip. With
``wait_replicas`` set, a script that writes is sent in one pipeline with ``WAIT``
(:mod:`recovery.store.replication`), reloaded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from recovery.keys import Keys
from recovery.store.replication import Wait

NAMES = (
    "record_failure",
    "resolve",
    "select_due",
    "claim",
    "settle",
    "release",
    "remove",
    "begin",
    "register_env",
    "promote_imports",
    "end_run",
    "report",
    "reopen",
)
#: Scripts that only read: nothing for replicas to acknowledge.
READ_ONLY = frozenset({"select_due", "report"})


@dataclass(frozen=True)
class Signature:
    """The fixed KEYS and ARGV names a script declares in its header."""

    keys: tuple[str, ...]
    args: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Signature:
        declared: dict[str, tuple[str, ...]] = {}
        for line in text.splitlines():
            for part in ("KEYS", "ARGV"):
                if line.startswith(f"-- {part}:"):
                    declared[part] = tuple(line.split(":", 1)[1].split())
        if set(declared) != {"KEYS", "ARGV"}:
            raise ValueError(f"lua/{name}.lua: header must declare '-- KEYS:' and '-- ARGV:'")
        return cls(declared["KEYS"], declared["ARGV"])

    def prelude(self) -> str:
        keys = ", ".join(f"{name} = KEYS[{i}]" for i, name in enumerate(self.keys, 1))
        args = ", ".join(f"{name} = ARGV[{i}]" for i, name in enumerate(self.args, 1))
        return (
            f"local K = {{{keys}}}\n"
            f"local A = {{{args}}}\n"
            f"local function item_key(i) return KEYS[{len(self.keys)} + i] end\n"
            f"local function item_arg(i) return ARGV[{len(self.args)} + i] end\n"
            f"local item_args = #ARGV - {len(self.args)}\n"
        )


@cache
def _file(name: str) -> str:
    return (resources.files("recovery.store") / "lua" / f"{name}.lua").read_text()


@cache
def signature(name: str) -> Signature:
    return Signature.parse(name, _file(name))


@cache
def source(name: str) -> str:
    """What Redis runs: the shared library, the named-key prelude, the script."""
    return "\n".join((signature(name).prelude(), _file("_lib"), _file(name)))


class LuaScript:
    """One registered script, called with named keys and arguments."""

    def __init__(
        self, client: Redis | RedisCluster, keys: Keys, name: str, wait: Wait | None = None
    ) -> None:
        self.name = name
        self.signature = signature(name)
        self.source = source(name)
        self._client = client
        self._wait = None if name in READ_ONLY else wait
        self._script: Script = client.register_script(self.source)
        self._shared = {n: getattr(keys, n) for n in self.signature.keys if _is_shared(keys, n)}
        self._given = [n for n in self.signature.keys if n not in self._shared]

    def __call__(
        self,
        keys: dict[str, str] | None = None,
        items: Sequence[str] = (),
        item_args: Sequence[Any] = (),
        **args: Any,
    ) -> Any:
        """Run it: ``keys`` names the per-call keys (``record=...``), ``args`` every
        declared argument; ``items`` and ``item_args`` follow them in KEYS and ARGV."""
        script_keys, argv = self.bind(keys, items, item_args, **args)
        if self._wait is None:
            return self.run(script_keys, argv)
        reply = self._call_and_wait(self._wait, script_keys, argv)
        if isinstance(reply, NoScriptError):
            self._client.script_load(self.source)
            reply = self._call_and_wait(self._wait, script_keys, argv)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _call_and_wait(self, wait: Wait, keys: list[str], argv: list[Any]) -> Any:
        """EVALSHA and WAIT in one round trip; the script's reply, an error as a value."""
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(self._script.sha, len(keys), *keys, *argv)
        [reply] = wait.execute(pipe)
        return reply

    def run(self, keys: list[str], argv: list[Any]) -> Any:
        """Run it with KEYS and ARGV as :meth:`bind` made them."""
        return self._script(keys=keys, args=argv)

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    def bind(
        self,
        keys: dict[str, str] | None = None,
        items: Sequence[str] = (),
        item_args: Sequence[Any] = (),
        **args: Any,
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of a call, for a pipeline (see ``Connection.read_all``)."""
        keys = keys or {}
        if set(keys) != set(self._given) or set(args) != set(self.signature.args):
            raise TypeError(
                f"{self.name}.lua takes keys {self._given} and args {list(self.signature.args)};"
                f" got keys {sorted(keys)} and args {sorted(args)}"
            )
        ordered = [keys[n] if n in keys else self._shared[n] for n in self.signature.keys]
        return [*ordered, *items], [*(args[n] for n in self.signature.args), *item_args]


def _is_shared(keys: Keys, name: str) -> bool:
    return isinstance(getattr(type(keys), name, None), property)


class Scripts:
    """Every script, registered once on one client: ``scripts.claim(...)``; the ones
    that write wait for replicas when ``wait`` is given."""

    def __init__(self, client: Redis | RedisCluster, keys: Keys, wait: Wait | None = None) -> None:
        for name in NAMES:
            setattr(self, name, LuaScript(client, keys, name, wait))

    record_failure: LuaScript
    resolve: LuaScript
    select_due: LuaScript
    claim: LuaScript
    settle: LuaScript
    release: LuaScript
    remove: LuaScript
    begin: LuaScript
    register_env: LuaScript
    promote_imports: LuaScript
    end_run: LuaScript
    report: LuaScript
    reopen: LuaScript
