"""The Lua scripts: each file declares its key signature once, in its header.

A script's header names its fixed keys and arguments::

    -- KEYS: record due failed
    -- ARGV: now doc_id
    -- (any further KEYS and ARGV are per-item, read with item_key(i) / item_arg(i),
    -- item_keys and item_args of them)

From that one declaration the loader

- compiles each name the body uses to its position, so a body says ``K.due`` and
  ``A.now``, never ``KEYS[16]``, while Redis runs ``KEYS[2]`` and ``ARGV[1]``: no
  table of names is built on every call (that cost a tenth of the failure script's
  server time). A name the header does not declare is refused when the script is
  loaded, instead of reading as nil. Before the body come the helpers of
  ``_lib.lua`` it uses (and those they use): Lua builds every function and table of a
  script's top level on each call, so a script carries none it does not call;
- builds the KEYS list in Python: a name that is a :class:`~recovery.keys.Keys`
  property resolves by itself (and is built once per script); any other name, such
  as ``record``, must be given by the caller; ARGV is built from keyword arguments
  in the declared order. A missing or unknown name raises at once instead of
  shifting every later argument.

A call is one EVALSHA, by the client's own ``evalsha`` (redis-py's ``Script`` wrapper
costs a few microseconds a call in tuple copies and an import, a measurable share of
recording a failure); on NOSCRIPT (after a SCRIPT FLUSH, a restart, or a failover to a
replica that never loaded it) the script is loaded and called again, so every state
change stays one round trip. With
``wait_replicas`` set, a script that writes is sent in one pipeline with ``WAIT``
(:mod:`recovery.store.replication`), reloaded the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
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
        return (
            f"local function item_key(i) return KEYS[{len(self.keys)} + i] end\n"
            f"local function item_arg(i) return ARGV[{len(self.args)} + i] end\n"
            f"local item_keys = #KEYS - {len(self.keys)}\n"
            f"local item_args = #ARGV - {len(self.args)}\n"
        )

    def bind(self, name: str, body: str) -> str:
        """The body with each ``K.<key>`` and ``A.<arg>`` at its position in KEYS and
        ARGV; raises ValueError for a name the header does not declare, or for ``K`` or
        ``A`` used as a table (there is none to pass around)."""
        positions = {
            "K": ("KEYS", {n: i for i, n in enumerate(self.keys, 1)}),
            "A": ("ARGV", {n: i for i, n in enumerate(self.args, 1)}),
        }
        code = _COMMENT.sub("", body)
        for table, field in _NAMED.findall(code):
            if field not in positions[table][1]:
                raise ValueError(f"lua/{name}.lua uses {table}.{field}, not in its header")
        bare = _BARE.search(_NAMED.sub("", code))
        if bare:
            raise ValueError(f"lua/{name}.lua uses {bare.group()} as a table; name a key")

        def position(match: re.Match[str]) -> str:
            array, declared = positions[match.group(1)]
            index = declared.get(match.group(2))
            return match.group() if index is None else f"{array}[{index}]"

        return _NAMED.sub(position, body)


#: ``K.due`` / ``A.now`` in a script body; a bare ``K`` or ``A``; a comment.
_NAMED = re.compile(r"\b([KA])\.([A-Za-z_][A-Za-z0-9_]*)")
_BARE = re.compile(r"\b[KA]\b")
_COMMENT = re.compile(r"--[^\n]*")


@cache
def _file(name: str) -> str:
    return (resources.files("recovery.store") / "lua" / f"{name}.lua").read_text()


@cache
def signature(name: str) -> Signature:
    return Signature.parse(name, _file(name))


@cache
def source(name: str) -> str:
    """What Redis runs: the per-item helpers, the shared helpers the script uses, the
    script with its names bound to positions."""
    declared = signature(name)
    body = declared.bind(name, _file(name))
    return "\n".join((declared.prelude(), helpers(body), body))


#: A top-level definition of _lib.lua: ``local function name`` or ``local a, b =``.
_DEFINES = re.compile(r"^local (?:function (\w+)|([\w, ]+?) =)", re.MULTILINE)


def helpers(body: str) -> str:
    """The definitions of ``_lib.lua`` that ``body`` uses, directly or through other
    helpers, in the library's order. A helper only uses those defined above it, so
    one pass from the last definition up finds them all."""
    lib = _file("_lib")
    starts = [m.start() for m in _DEFINES.finditer(lib)]
    chunks = []
    for start, end in zip(starts, [*starts[1:], len(lib)], strict=True):
        head = _DEFINES.match(lib, start)
        names = (head.group(1) or head.group(2)) if head else ""
        chunks.append(({n.strip() for n in names.split(",")}, lib[start:end]))
    needed = set(_WORDS.findall(_COMMENT.sub("", body)))
    for defined, text in reversed(chunks):
        if defined & needed:
            needed |= set(_WORDS.findall(_COMMENT.sub("", text)))
    return "".join(text for defined, text in chunks if defined & needed)


_WORDS = re.compile(r"\b\w+\b")


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
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self._shared = {n: getattr(keys, n) for n in self.signature.keys if _is_shared(keys, n)}
        self._given = [n for n in self.signature.keys if n not in self._shared]
        # checked and filled on every call: built once, so a call costs a lookup a name
        self._given_names = frozenset(self._given)
        self._arg_names = frozenset(self.signature.args)
        self._key_slots = [self._shared.get(n, "") for n in self.signature.keys]
        self._given_at = [(i, n) for i, n in enumerate(self.signature.keys) if n in self._given]

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
        pipe.evalsha(self.sha, len(keys), *keys, *argv)
        [reply] = wait.execute(pipe)
        return reply

    def run(self, keys: list[str], argv: list[Any]) -> Any:
        """Run it with KEYS and ARGV as :meth:`bind` made them."""
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *argv)
        except NoScriptError:
            self._client.script_load(self.source)
            return self._client.evalsha(self.sha, len(keys), *keys, *argv)

    def bind(
        self,
        keys: dict[str, str] | None = None,
        items: Sequence[str] = (),
        item_args: Sequence[Any] = (),
        **args: Any,
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of a call, for a pipeline (see ``Connection.read_all``)."""
        keys = keys or {}
        if keys.keys() != self._given_names or args.keys() != self._arg_names:
            raise TypeError(
                f"{self.name}.lua takes keys {self._given} and args {list(self.signature.args)};"
                f" got keys {sorted(keys)} and args {sorted(args)}"
            )
        ordered = self._key_slots.copy()
        for i, name in self._given_at:
            ordered[i] = keys[name]
        ordered += items
        argv = list(map(args.__getitem__, self.signature.args))
        argv += item_args
        return ordered, argv


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
