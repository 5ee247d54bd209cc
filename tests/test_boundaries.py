"""The shape the code keeps: one Redis boundary, named script keys, two layers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import redis

from recovery.keys import Keys
from recovery.store.scripts import NAMES, LuaScript, Signature, signature, source

ROOT = Path(__file__).resolve().parent.parent
RECOVERY = ROOT / "recovery"
LUA = RECOVERY / "store" / "lua"


def imported_modules(path: Path) -> set[str]:
    """Top-level modules a file imports at run time (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only |= {id(child) for child in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def library_modules() -> list[Path]:
    return sorted(RECOVERY.rglob("*.py"))


def test_only_the_store_talks_to_redis() -> None:
    # recovery/redis_server.py starts a server for the CLI and the tests, and
    # sentinel_server.py a Sentinel-managed group for tests and benchmarks: tooling
    talking = {
        str(path.relative_to(ROOT))
        for path in library_modules()
        if "redis" in imported_modules(path)
        and RECOVERY / "store" not in path.parents
        and path.name not in {"redis_server.py", "sentinel_server.py"}
    }

    assert talking == set()


#: The sizes a newcomer can read in one sitting (issue 8: a class ~250 lines, a module
#: ~400), for the library and the pipeline.
MODULE_LINES, CLASS_LINES = 400, 250


@pytest.mark.parametrize(
    "path",
    [*library_modules(), *sorted((ROOT / "tasks").rglob("*.py"))],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_no_module_or_class_grows_past_what_one_reads_in_a_sitting(path: Path) -> None:
    source = path.read_text()
    classes = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }

    assert source.count("\n") <= MODULE_LINES
    assert {name: lines for name, lines in classes.items() if lines > CLASS_LINES} == {}


def test_the_recovery_library_never_imports_the_pipeline() -> None:
    importing = [p.name for p in library_modules() if "tasks" in imported_modules(p)]

    assert importing == []


@pytest.mark.parametrize("name", [*NAMES, "_lib"])
def test_no_script_body_numbers_its_keys_or_arguments(name: str) -> None:
    body = (LUA / f"{name}.lua").read_text()

    assert "KEYS[" not in body
    assert "ARGV[" not in body


@pytest.mark.parametrize("name", NAMES)
def test_every_script_declares_its_keys_and_each_shared_key_exists(name: str) -> None:
    declared = signature(name)
    per_call = {"record", "settled"}

    assert declared.keys
    assert set(declared.keys) - per_call <= {
        attr for attr, value in vars(Keys).items() if isinstance(value, property)
    }
    # and every name its body uses is bound to its position in what Redis runs
    assert re.search(r"\b[KA]\.\w", source(name)) is None


def test_a_script_body_naming_what_its_header_does_not_declare_is_refused() -> None:
    declared = Signature(("due",), ("now",))

    assert declared.bind("x", "return redis.call('ZCARD', K.due, A.now)") == (
        "return redis.call('ZCARD', KEYS[1], ARGV[1])"
    )
    with pytest.raises(ValueError, match=r"uses K\.dead, not in its header"):
        declared.bind("x", "return redis.call('ZCARD', K.dead)")
    with pytest.raises(ValueError, match="uses A as a table"):
        declared.bind("x", "return helper(A)")


def test_a_call_with_a_missing_or_unknown_name_fails_before_reaching_redis(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        end_run = LuaScript(client, Keys(), "end_run")
        with pytest.raises(TypeError, match=r"takes keys \[\] and args \['task_id'\]"):
            end_run(task="t1")
        begin = LuaScript(client, Keys(), "begin")
        with pytest.raises(TypeError, match=r"takes keys \['record'\]"):
            begin(now="", task_id="t", limit=1, call="{}", doc_id="d")
        assert end_run(task_id="t1") == 0
    finally:
        client.close()
