"""The click and rich commands as an operator runs them: ``docrecovery ...``,
``python main.py ...`` and ``celery -A tasks docrecovery ...``, each a real process
against the session's Redis (and a real worker where a command sends tasks).

A terminal is a real pseudo-terminal (:func:`in_terminal`): tables and progress bars
appear only there, and ``--json`` is parsed, never matched as text.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from faults.support import wait_for
from test_cli import (
    DOCRECOVERY,
    failure,
    present,
    queued,
    record_dead,
    record_due,
    tracker,
)

from recovery.records import document_id
from recovery.store import Tracker

__all__ = ["tracker"]  # a fixture, used by name (test_cli.py's)

CELERY = Path(sys.executable).parent / "celery"
REPO = Path(__file__).resolve().parent.parent
SECRET = "hunter2"
#: Terminal control sequences (bold, cursor moves), removed from what a test reads.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    """A user's shell (test_cli's: REDIS_URL, documents due at once), no colours, a
    wide terminal."""
    return {**cli_env, "NO_COLOR": "1", "TERM": "xterm", "COLUMNS": "320"}


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Run:
    """``run("status", "--json", via="celery")``: the command, piped, waited for."""

    def go(*args: str, via: str = "docrecovery", **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            entry(via, args),
            env={**env, **extra},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return go


def entry(via: str, args: tuple[str, ...]) -> list[str]:
    """The command line of each entry point: the same commands under three names."""
    if via == "celery":
        return [str(CELERY), "-A", "tasks", "docrecovery", *args]
    if via == "main":
        return [sys.executable, str(REPO / "main.py"), *args]
    return [str(DOCRECOVERY), *args]


def in_terminal(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, *, stdout_too: bool = True
) -> tuple[int, str, str]:
    """Run ``docrecovery args`` with its stderr (and stdout unless told) on a
    pseudo-terminal; its exit code, what the terminal showed, and the piped stdout."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        entry("docrecovery", args),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    piped = process.stdout.read().decode() if process.stdout else ""
    code = process.wait(60)
    shown = ANSI.sub("", screen.decode(errors="replace"))
    return code, shown.replace("\r\n", "\n"), piped


def signature_of(tracker: Tracker, doc_id: str) -> str:
    record = tracker.reports.get_record(doc_id)
    assert record is not None
    return record.signature


def groups(tracker: Tracker, doc_root: Path) -> tuple[list[str], list[str]]:
    """Two error groups: three missing files (back in place) and two import failures."""
    missing = record_due(tracker, [present(doc_root, f"back-{n}.txt") for n in range(3)])
    imports = record_due(tracker, [doc_root / f"r-{n}.docx" for n in range(2)], "import")
    return missing, imports


# --- status ------------------------------------------------------------------------------


def test_status_on_a_terminal_shows_tables_with_the_waiting_count_and_each_held_reason(
    run: Run, env: dict[str, str], tmp_path: Path, tracker: Tracker, doc_root: Path
) -> None:
    # Given two documents held back because their files are still missing
    held = record_due(tracker, [doc_root / "gone-1.txt", doc_root / "gone-2.txt"])
    assert run("recover").returncode == 0

    code, screen, _ = in_terminal(("status",), env, tmp_path)

    # Then the terminal shows tables: the counts with the waiting ones, and why they wait
    assert code == 0, screen
    assert "┃ state" in screen
    assert any(line.startswith("│ waiting") and " 2 │" in line for line in screen.splitlines())
    assert "waiting 2 (held back)" in screen
    for doc_id, name in zip(held, ("gone-1.txt", "gone-2.txt"), strict=True):
        [line] = [line for line in screen.splitlines() if doc_id in line]
        assert f"file still missing: {doc_root / name}" in line


def test_status_watch_refreshes_count_times_one_json_document_a_line(run: Run) -> None:
    done = run("status", "--watch", "0.1", "--count", "3", "--json")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["total_failed_documents"] == 0 for line in lines)


def test_status_watch_in_a_pipe_prints_a_block_per_refresh_and_count_needs_watch(
    run: Run, redis_url: str
) -> None:
    watched = run("status", "--watch", "0.1", "--count", "2")
    alone = run("status", "--count", "2")

    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.count(f"redis: {redis_url}\n") == 2
    assert alone.returncode == 2
    assert "--count only applies with --watch" in alone.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--watch", "nan", "--count", "2"),
        ("status", "--watch", "inf", "--count", "2"),
        ("status", "--watch", "1e300", "--count", "2"),
        ("list", "--older-than", "nan"),
        ("list", "--older-than", "inf"),
    ],
    ids=["watch-nan", "watch-inf", "watch-1e300", "older-than-nan", "older-than-inf"],
)
def test_a_number_that_is_not_finite_or_past_its_bound_is_refused_with_exit_2(
    run: Run, args: tuple[str, ...]
) -> None:
    # When a command is given NaN, infinity or a wait of 1e300 s (before: status --watch
    # crashed in time.sleep with exit 1, list --older-than nan listed 0 documents)
    done = run(*args)

    # Then it is a usage error naming the option
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"Invalid value for '{args[1]}'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# --- list --------------------------------------------------------------------------------


def test_list_on_a_terminal_shows_state_category_retries_next_attempt_signature_and_path(
    env: dict[str, str], tmp_path: Path, tracker: Tracker, doc_root: Path
) -> None:
    # Given a due failure whose path holds rich markup, and a dead document
    [due] = record_due(tracker, [doc_root / "[bold]x[/bold].txt"])
    dead = record_dead(tracker, doc_root / "dead.txt")

    code, screen, _ = in_terminal(("list",), env, tmp_path)

    assert code == 0, screen
    lines = screen.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["document"])
    for column in ("state", "category", "retries", "next attempt", "signature", "path / reason"):
        assert column in header
    # each row: the document's facts, its path, and the reason on the line below
    at = next(n for n, line in enumerate(lines) if due in line)
    signature = signature_of(tracker, due)
    assert lines[at].split()[:6] == [due, "failed", "file_not_found", "0", "now", signature]
    # the path is printed as it is: its brackets are not read as markup
    assert lines[at].rstrip().endswith(str(doc_root / "[bold]x[/bold].txt"))
    assert lines[at + 1].strip() == f"FileNotFoundError: {doc_root / '[bold]x[/bold].txt'}"
    dead_at = next(n for n, line in enumerate(lines) if dead in line)
    assert lines[dead_at].split()[1:3] == ["dead", "permanent"]
    assert lines[dead_at + 1].strip() == "permanent error: not retried"


def test_list_signature_selects_exactly_one_error_group_and_json_parses(
    run: Run, tracker: Tracker, doc_root: Path
) -> None:
    missing, imports = groups(tracker, doc_root)
    signature = signature_of(tracker, imports[0])

    done = run("list", "--signature", signature, "--json")
    text = run("list", "--signature", signature)

    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [r["doc_id"] for r in listed] == imports
    assert {r["signature"] for r in listed} == {signature}
    assert text.stdout.splitlines()[-1] == "2 document(s)"
    assert not any(doc_id in text.stdout for doc_id in missing)


@pytest.mark.parametrize("bad", ["xyz", "ABCDEF012345", "0123456789abc"])
def test_a_signature_that_is_not_twelve_hex_digits_is_refused_with_exit_2(
    run: Run, bad: str
) -> None:
    done = run("list", "--signature", bad)

    assert done.returncode == 2
    assert "is not a signature: 12 hex digits" in done.stderr


# --- show --------------------------------------------------------------------------------


def test_show_prints_every_field_and_the_full_traceback_with_passwords_masked(
    run: Run, tracker: Tracker, doc_root: Path
) -> None:
    # Given a failure whose error and traceback quote a URL with its password
    path = doc_root / "a.txt"
    record = failure(path, "network")
    record.error_message = f"ConnectionError: Error 111 connecting to redis://:{SECRET}@cache:6379"
    record.traceback = "".join(
        f'  File "/app/step{n}.py", line {n}, in step{n}\n' for n in range(40)
    ) + (f"ConnectionError: redis://:{SECRET}@cache:6379\n")
    tracker.store.record_failure(record)
    doc_id = document_id(str(path))

    text = run("show", doc_id)
    as_json = run("show", doc_id, "--json")

    assert (text.returncode, as_json.returncode) == (0, 0), text.stderr + as_json.stderr
    stored = tracker.reports.get_record(doc_id)
    assert stored is not None
    for label in [f.replace("_", " ") for f in vars(stored) if f not in ("error_message",)]:
        assert label in text.stdout
    for n in range(40):
        assert f'File "/app/step{n}.py", line {n}, in step{n}' in text.stdout
    assert "redis://:***@cache:6379" in text.stdout
    shown = json.loads(as_json.stdout)
    assert shown["doc_id"] == doc_id
    assert shown["document_path"] == str(path)
    assert shown["signature"] == stored.signature
    assert shown["traceback"].count("\n") == 41
    assert SECRET not in text.stdout + as_json.stdout


def test_show_of_a_document_not_tracked_exits_1_and_says_so(run: Run) -> None:
    done = run("show", "0" * 20)

    assert done.returncode == 1
    assert done.stderr.startswith(f"docrecovery: {'0' * 20} is not tracked")


# --- analyze -----------------------------------------------------------------------------


def test_analyze_shows_age_groups_categories_workers_and_queries_and_json_parses(
    run: Run, tracker: Tracker, doc_root: Path
) -> None:
    missing, imports = groups(tracker, doc_root)

    text = run("analyze")
    as_json = run("analyze", "--json")

    assert (text.returncode, as_json.returncode) == (0, 0), text.stderr + as_json.stderr
    analysis = json.loads(as_json.stdout)
    assert analysis["age_distribution"]["1-6h"] == 5
    assert analysis["error_categories"] == {"file_not_found": 3, "import": 2}
    by_signature = {g["signature"]: g["count"] for g in analysis["error_signatures"]}
    assert by_signature == {
        signature_of(tracker, missing[0]): 3,
        signature_of(tracker, imports[0]): 2,
    }
    for title in ("age (since first failure)", "error groups", "categories", "workers", "queries"):
        assert title in text.stdout
    for signature, count in by_signature.items():
        [row] = [line for line in text.stdout.splitlines() if signature in line]
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[:2] == [signature, str(count)]
        assert "█" in cells[2]


# --- recover, submit: progress bars --------------------------------------------------------


def test_recover_draws_a_progress_bar_on_a_terminal_only_and_stdout_stays_the_summary(
    env: dict[str, str], tmp_path: Path, tracker: Tracker, doc_root: Path
) -> None:
    record_due(tracker, [present(doc_root, f"d-{n}.txt") for n in range(3)])

    code, stderr, stdout = in_terminal(("recover",), env, tmp_path, stdout_too=False)

    assert code == 0, stderr
    assert "recovering" in stderr
    assert "3/3" in stderr
    assert stdout.splitlines()[0] == "recovery: 3 resubmitted in 1 batch(es), 0 held back"
    # and with --json, nothing but the JSON: no bar even on a terminal
    code, stderr, stdout = in_terminal(("recover", "--json"), env, tmp_path, stdout_too=False)
    assert code == 0
    assert "recovering" not in stderr
    assert json.loads(stdout)["resubmitted"] == []


@pytest.mark.slow
def test_submit_json_against_a_worker_reports_each_outcome_and_exits_1_on_a_failure(
    run: Run, worker_process: Callable[..., Any], doc_root: Path
) -> None:
    worker_process("w1")
    good, missing = present(doc_root, "good.txt"), doc_root / "missing.txt"

    done = run("submit", str(good), str(missing), "--wait", "30", "--json")

    assert done.returncode == 1, done.stderr
    ok, failed = json.loads(done.stdout)
    assert (ok["path"], ok["status"], ok["result"]["type"]) == (str(good), "ok", "text")
    assert (failed["path"], failed["status"]) == (str(missing), "failed")
    assert failed["error"].startswith("FileNotFoundError")
    assert "sending" not in done.stderr


# --- error groups: retry and delete ---------------------------------------------------------


@pytest.mark.slow
def test_retry_signature_resubmits_the_whole_group_once_and_a_worker_recovers_it(
    run: Run, worker_process: Callable[..., Any], tracker: Tracker, doc_root: Path
) -> None:
    # Given a group of missing files that are back, and another group
    missing, imports = groups(tracker, doc_root)
    signature = signature_of(tracker, missing[0])

    done = run("retry", "--signature", signature, "--json")
    again = run("retry", "--signature", signature, "--json")

    # Then the group is sent once: the second run finds it already in recovery
    assert (done.returncode, again.returncode) == (0, 0), done.stderr + again.stderr
    result = json.loads(done.stdout)
    assert sorted(item["doc_id"] for item in result["resubmitted"]) == sorted(missing)
    assert json.loads(again.stdout) == {"resubmitted": [], "skipped": missing, "released": []}
    # When a worker runs them, they succeed and leave tracking; the other group stays
    worker_process("w1")
    wait_for(
        lambda: all(tracker.reports.get_record(d) is None for d in missing),
        30,
        "the group to recover",
    )
    assert [r.doc_id for r in tracker.reports.get_failed_documents()] == imports
    assert tracker.reports.status()["recovery_metrics"]["successful_recoveries"] == 3


def test_retry_signature_run_twice_at_once_enqueues_each_document_once(
    env: dict[str, str], tmp_path: Path, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    missing = record_due(tracker, [doc_root / f"m-{n:02}.txt" for n in range(15)])
    record_due(tracker, [doc_root / "r.docx"], "import")
    args = ("retry", "--signature", signature_of(tracker, missing[0]))

    both = [
        subprocess.Popen(
            entry("docrecovery", args),
            env=env,
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in both]

    assert [process.returncode for process in both] == [0, 0], outputs
    assert sorted(m["docrecovery"]["doc_id"] for m in queued(redis_client)) == sorted(missing)


def test_delete_signature_forgets_exactly_that_group(
    run: Run, tracker: Tracker, doc_root: Path
) -> None:
    missing, imports = groups(tracker, doc_root)

    done = run("delete", "--signature", signature_of(tracker, imports[0]), "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted": 2}
    assert [r.doc_id for r in tracker.reports.get_failed_documents()] == missing


@pytest.mark.parametrize(
    "args",
    [("retry",), ("delete",), ("retry", "0" * 20, "--all"), ("delete", "0" * 20, "--dead")],
    ids=["retry-nothing", "delete-nothing", "ids-and-all", "ids-and-filter"],
)
def test_retry_and_delete_need_ids_or_a_selection_not_both(run: Run, args: tuple[str, ...]) -> None:
    done = run(*args)

    assert done.returncode == 2
    assert "Usage: docrecovery" in done.stderr


@pytest.mark.parametrize("name", ["show", "retry", "delete"])
@pytest.mark.parametrize(
    ("doc_id", "escaped"),
    [("a\udcff", "a\\xff"), ("zzz", "zzz"), ("0" * 19 + "F", "0" * 19 + "F")],
    ids=["not-utf-8", "not-hex", "upper-case"],
)
def test_an_argument_that_is_not_a_document_id_is_refused_with_exit_2_and_changes_nothing(
    run: Run, tracker: Tracker, doc_root: Path, name: str, doc_id: str, escaped: str
) -> None:
    # Given a tracked document, and an id holding a byte that is not UTF-8 (a shell
    # argument) or that is not 20 hex digits
    [tracked] = record_due(tracker, [doc_root / "a.txt"])

    # When a command is given it (before: UnicodeEncodeError, a traceback and exit 1;
    # retry and delete of "zzz" exited 0 as if it were merely not tracked)
    done = run(name, doc_id)

    # Then it is a usage error naming the argument, escaped, and nothing was touched
    assert done.returncode == 2, done.stderr
    assert f"'{escaped}' is not a document id: 20 hex digits" in done.stderr
    assert "Traceback" not in done.stderr
    record = tracker.reports.get_record(tracked)
    assert record is not None
    assert record.state == "failed"


def test_purge_json_counts_what_it_deleted(run: Run, tracker: Tracker, doc_root: Path) -> None:
    record_dead(tracker, doc_root / "dead.txt")
    record_due(tracker, [doc_root / "live.txt"])

    done = run("purge", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"purged": 1, "which": "dead"}


# --- options and help ----------------------------------------------------------------------

COMMANDS = ("status", "list", "show", "analyze", "recover", "retry", "delete", "purge")


@pytest.mark.parametrize("name", [*COMMANDS, "submit", "demo"])
def test_every_command_has_help_with_an_example(run: Run, name: str) -> None:
    done = run(name, "--help")

    assert done.returncode == 0, done.stderr
    assert "Example" in done.stdout
    assert f"docrecovery {name}" in done.stdout or name == "recover"


@pytest.mark.parametrize(
    "args", [("status", "--dry-run"), ("list", "--now"), ("--dry-run", "list")]
)
def test_dry_run_and_now_belong_to_recover_alone(run: Run, args: tuple[str, ...]) -> None:
    done = run(*args)

    assert done.returncode == 2
    assert "No such option" in done.stderr


def test_json_before_the_command_applies_to_it(run: Run) -> None:
    done = run("--json", "status")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_failed_documents"] == 0


def test_a_password_in_a_stored_error_is_masked_in_list_and_status(
    run: Run, env: dict[str, str], tmp_path: Path, tracker: Tracker, doc_root: Path
) -> None:
    record = failure(doc_root / "a.txt", "network")
    record.error_message = f"ConnectionError: amqp://user:{SECRET}@broker//"
    tracker.store.record_failure(record)

    listed = run("list", "--json")
    code, screen, _ = in_terminal(("list",), env, tmp_path)

    assert code == 0, screen
    assert "amqp://user:***@broker//" in screen
    assert json.loads(listed.stdout)[0]["error_message"].endswith("amqp://user:***@broker//")
    assert SECRET not in listed.stdout + screen


# --- celery -A tasks docrecovery ------------------------------------------------------------


def test_celery_docrecovery_runs_the_same_commands_on_the_app_celery_loaded(
    run: Run, tracker: Tracker, doc_root: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    missing, imports = groups(tracker, doc_root)
    dead = record_dead(tracker, doc_root / "dead.txt")

    status = run("status", "--json", via="celery")
    listed = run("list", "--live", "--json", via="celery")
    shown = run("show", imports[0], via="celery")
    recovered = run("recover", via="celery")
    retried = run("retry", "--signature", signature_of(tracker, imports[0]), via="celery")
    deleted = run("delete", imports[0], via="celery")
    purged = run("purge", via="celery")

    for done in (status, listed, shown, recovered, retried, deleted, purged):
        assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(status.stdout)["redis"] == redis_url
    assert [r["doc_id"] for r in json.loads(listed.stdout)] == missing + imports
    assert imports[0] in shown.stdout
    assert recovered.stdout.startswith("recovery: 5 resubmitted in 1 batch(es)")
    # every due document went to the app's broker: one message each, the group's
    # manual retry skipped them as already in recovery
    assert len(queued(redis_client)) == 5
    assert retried.stdout.count("skipped ") == 2
    assert deleted.stdout.strip() == "deleted 1 document(s)"
    assert purged.stdout.strip() == "purged 1 dead document(s)"
    assert tracker.reports.get_record(dead) is None


def test_celery_docrecovery_reads_the_redis_of_the_app_broker_and_keeps_exit_codes(
    run: Run, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    # Given no REDIS_URL: the app's broker is given to celery itself (-b)
    shell = {k: v for k, v in env.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [str(CELERY), "-A", "tasks", "-b", redis_url, "docrecovery", "status", "--json"],
        env=shell,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    missing = run("show", "0" * 20, via="celery")
    closed = run("list", via="celery", REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redis"] == redis_url
    assert missing.returncode == 1
    assert closed.returncode == 2
    assert "docrecovery: cannot reach Redis at redis://:***@127.0.0.1:" in closed.stderr
    assert SECRET not in closed.stdout + closed.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
