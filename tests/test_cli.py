"""The command line as a user runs it: ``python main.py ...`` and ``docrecovery ...``.

Each command is a real subprocess with ``REDIS_URL`` set to the test's Redis; failed
documents are set up through the tracker API, and what a command resubmits is read
where a worker would find it, kombu's list named after the queue (``LLEN documents``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import seed
from conftest import run_python
from faults.support import wait_for

from recovery.api import FailedDocumentsTracker
from recovery.config import RecoveryConfig
from recovery.records import FailedDocumentRecord, document_id
from recovery.redis_server import RedisServer
from recovery.store import Tracker, default_redis_url, redact

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
DOCRECOVERY = Path(sys.executable).parent / "docrecovery"
HOUR = 3600.0
EXIT_UNAVAILABLE = 2

Cli = Callable[..., subprocess.CompletedProcess[str]]


def command(via: str, args: tuple[str, ...]) -> list[str]:
    if via == "main":
        return [sys.executable, str(REPO / "main.py"), *args]
    return [str(DOCRECOVERY), *args]


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Cli:
    """``cli("status", "--json", via="docrecovery", env={...})``: run and wait."""

    def run(
        *args: str, via: str = "docrecovery", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command(via, args),
            env={**cli_env, **(env or {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def tracker(redis_url: str) -> Iterator[Tracker]:
    """The tracker the CLI reads, with the CLI's settings (due at once, no jitter)."""
    config = RecoveryConfig.from_mapping({"min_retry_interval_hours": 0, "retry_jitter": 0})
    tracker = FailedDocumentsTracker(redis_url, config)
    yield tracker
    tracker.close()


def failure(
    path: Path | str, category: str = "file_not_found", at: float | None = None
) -> FailedDocumentRecord:
    errors = {"file_not_found": "FileNotFoundError", "import": "ModuleNotFoundError"}
    return FailedDocumentRecord(
        document_path=str(path),
        task_id=f"task-{document_id(str(path))}",
        error_message=f"{errors.get(category, 'RuntimeError')}: {path}",
        failure_timestamp=time.time() if at is None else at,
        args=[str(path), None, {}],
        error_type=errors.get(category, "RuntimeError"),
        error_category=category,
    )


def present(root: Path, name: str) -> Path:
    """A document that failed and is back in place (so its recovery is not held)."""
    return Path(shutil.copy(SAMPLES / "worker-lost.txt", root / name))


def an_hour_ago() -> float:
    """Failure times an hour back, strictly increasing from call to call, so the
    documents of a test are listed in the order they were recorded."""
    return time.time() - HOUR + next(_TICKS) * 1e-3


_TICKS = itertools.count()


def record_due(tracker: Tracker, paths: list[Path], category: str = "file_not_found") -> list[str]:
    """Record a failure of each path, oldest first; returns their ids."""
    for path in paths:
        tracker.store.record_failure(failure(path, category, at=an_hour_ago()))
    return [document_id(str(path)) for path in paths]


def record_dead(tracker: Tracker, path: Path) -> str:
    """A document dead at its first failure: a permanent error, never retried."""
    tracker.store.record_failure(failure(path, "permanent", at=an_hour_ago()))
    record = tracker.reports.get_record(document_id(str(path)))
    assert record is not None
    assert (record.state, record.retry_count) == ("dead", 0)
    return record.doc_id


def queued(client: redis.Redis, queue: str = "documents") -> list[dict[str, Any]]:
    """The messages waiting in a queue: headers, with the args decoded from the body."""
    raw: list[str] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
    out = []
    for item in raw:
        message = json.loads(item)
        body = json.loads(base64.b64decode(message["body"]))
        out.append({**message["headers"], "args": body[0]})
    return out


def snapshot(client: redis.Redis) -> dict[str, Any]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- python main.py --recover ------------------------------------------------------------


def test_main_recover_with_nothing_due_exits_0_and_prints_a_summary(cli: Cli) -> None:
    done = cli("--recover", via="main")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        "recovery: 0 resubmitted in 1 batch(es), 0 held back",
        "tracked 0: 0 due now, 0 due later, 0 out of retries, 0 in recovery, 0 waiting,"
        " 0 dead, 0 corrupt",
    ]


def test_main_recover_resubmits_every_due_document_batch_after_batch(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    # Given 25 due documents and batches of 10
    ids = record_due(tracker, [present(doc_root, f"doc-{n:02}.txt") for n in range(25)])

    done = cli("--recover", via="main", env={"DOCRECOVERY_RECOVERY_BATCH_SIZE": "10"})

    # Then each is resubmitted exactly once, in three batches
    assert done.returncode == 0, done.stderr
    messages = queued(redis_client)
    assert len(messages) == 25
    assert sorted(m["docrecovery"]["doc_id"] for m in messages) == sorted(ids)
    assert all(m["task"] == "tasks.process_document" for m in messages)
    assert done.stdout.splitlines()[0] == "recovery: 25 resubmitted in 3 batch(es), 0 held back"
    assert tracker.reports.status()["in_recovery"] == 25


def test_main_recover_goes_on_past_a_full_batch_of_documents_still_missing(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    # Given the ten oldest failures are files still missing, and five are back
    record_due(tracker, [doc_root / f"missing-{n}.txt" for n in range(10)])
    back = record_due(tracker, [present(doc_root, f"back-{n}.txt") for n in range(5)])

    done = cli("--recover", via="main", env={"DOCRECOVERY_RECOVERY_BATCH_SIZE": "10"})

    # Then the five behind the full batch of waiting ones are resubmitted too
    assert done.returncode == 0, done.stderr
    assert sorted(m["docrecovery"]["doc_id"] for m in queued(redis_client)) == sorted(back)
    assert len(tracker.reports.get_failed_documents()) == 15
    status = tracker.reports.status()
    assert (status["in_recovery"], status["waiting"]) == (5, 10)
    # and the text output says which are held back, and why
    held = [line for line in done.stdout.splitlines() if line.startswith("  held ")]
    assert len(held) == 10
    assert all("file still missing" in line for line in held)
    # and status shows the ones still waiting, with their reason, in text too
    waiting = [line for line in cli("status").stdout.splitlines() if "  waiting  " in line]
    assert len(waiting) == 10
    assert all("file still missing" in line for line in waiting)


def test_redis_url_option_overrides_the_environment(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    record_due(tracker, [present(doc_root, "a.txt")])
    elsewhere = f"redis://127.0.0.1:{closed_port()}/0"

    done = cli("--recover", "--redis-url", redis_url, via="main", env={"REDIS_URL": elsewhere})

    assert done.returncode == 0, done.stderr
    assert "recovery: 1 resubmitted" in done.stdout
    assert redis_client.llen("documents") == 1


def test_verbose_logs_debug_lines_and_the_default_does_not(cli: Cli) -> None:
    quiet = cli("--recover", via="main")
    verbose = cli("--recover", "--verbose", via="main")

    assert (quiet.returncode, verbose.returncode) == (0, 0)
    assert "DEBUG " not in quiet.stderr
    assert "DEBUG " in verbose.stderr
    assert "recovery run: 0 claimed" in verbose.stderr


@pytest.mark.parametrize("via", ["option", "environment"])
def test_unreachable_redis_exits_2_with_a_clear_message_and_no_password(cli: Cli, via: str) -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"
    if via == "option":
        done = cli("--recover", "--redis-url", url, via="main")
    else:
        done = cli("--recover", via="main", env={"REDIS_URL": url})

    assert done.returncode == EXIT_UNAVAILABLE
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_recover_dry_run_prints_what_would_be_resubmitted_and_changes_nothing(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    paths = [present(doc_root, "a.txt"), present(doc_root, "b.txt")]
    record_due(tracker, paths)
    before = snapshot(redis_client)

    done = cli("--recover", "--dry-run", via="main")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "dry run: the next batch would resubmit 2 document(s)"
    for path in paths:
        assert any(str(path) in line and "resubmit" in line for line in lines[1:])
    assert snapshot(redis_client) == before
    assert redis_client.llen("documents") == 0


# --- which Redis: one default everywhere -------------------------------------------------

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def test_the_redis_url_is_the_argument_else_redis_url_else_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert default_redis_url() == DEFAULT_URL
    monkeypatch.setenv("REDIS_URL", "")
    assert default_redis_url() == DEFAULT_URL

    monkeypatch.setenv("REDIS_URL", "redis://from-env:6380/1")
    assert default_redis_url() == "redis://from-env:6380/1"
    assert default_redis_url(None) == "redis://from-env:6380/1"
    assert default_redis_url("redis://given:6381/2") == "redis://given:6381/2"


def test_workers_beat_and_the_python_api_resolve_the_same_default(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a shell without REDIS_URL
    env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
    script = (
        "import celeryconfig, json\n"
        "from tasks.app import app\n"
        "from recovery import installed\n"
        "from distributed_processor import DistributedProcessor\n"
        "from recovery_system import DocumentRecoveryManager\n"
        "print(json.dumps([celeryconfig.broker_url, celeryconfig.result_backend,\n"
        "    app.conf.broker_url, installed(app).redis_url,\n"
        "    DistributedProcessor().redis_url, DocumentRecoveryManager().tracker.url]))\n"
    )

    done = run_python(["-c", script], env, tmp_path)

    # Then the worker's broker and backend (celeryconfig: workers and beat), the
    # processor and the manager all use the one default
    assert json.loads(done.stdout) == [DEFAULT_URL] * 6


@pytest.mark.parametrize(
    ("via", "args"),
    [("main", ("--recover",)), ("docrecovery", ("status",)), ("docrecovery", ("list",))],
)
def test_a_command_whose_redis_url_is_closed_exits_2_naming_it_and_reports_nothing(
    cli: Cli, tmp_path: Path, via: str, args: tuple[str, ...]
) -> None:
    # Given REDIS_URL naming a port nothing listens on (it wins over the default)
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"

    done = cli(*args, via=via, env={"REDIS_URL": url})

    # Then the command names the URL it tried, password masked, and reports nothing
    assert done.returncode == EXIT_UNAVAILABLE, done.stdout + done.stderr
    assert done.stderr.startswith(f"docrecovery: cannot reach Redis at {redact(url)}: ")
    assert "s3cret" not in done.stdout + done.stderr
    assert "tracked 0" not in done.stdout
    assert "embedded" not in done.stderr
    assert not (tmp_path / "data" / "redis").exists()


def test_status_without_redis_url_reports_on_the_default_redis_never_an_embedded_one(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a shell without REDIS_URL, and a key prefix no one uses (read only)
    env = {k: v for k, v in cli_env.items() if k != "REDIS_URL"}
    env["DOCRECOVERY_KEY_PREFIX"] = f"cli-test-{os.getpid()}"

    done = subprocess.run(
        command("docrecovery", ("status", "--json")),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then it reports on the default URL when a Redis answers there (one does on some
    # machines), else exits 2 naming it; it never starts a fresh, empty server
    if done.returncode == 0:
        assert json.loads(done.stdout)["redis"] == DEFAULT_URL
    else:
        assert done.returncode == EXIT_UNAVAILABLE, done.stderr
        assert done.stderr.startswith(f"docrecovery: cannot reach Redis at {DEFAULT_URL}: ")
    assert "embedded" not in done.stderr
    assert not (tmp_path / "data" / "redis").exists()


def test_status_names_the_redis_it_reports_on(cli: Cli, redis_url: str) -> None:
    text = cli("status")
    as_json = cli("status", "--json")

    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    assert text.stdout.splitlines()[0] == f"redis: {redis_url}"
    assert json.loads(as_json.stdout)["redis"] == redis_url


@pytest.mark.slow
def test_the_demo_without_redis_url_runs_on_an_embedded_server_and_says_where(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("REDIS_URL", "DOCRECOVERY_ROOTS")}

    done = subprocess.run(
        command("docrecovery", ("demo",)),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    data = tmp_path / "data"
    assert f"(data in {data / 'redis'})" in done.stderr.splitlines()[0]
    assert done.stderr.startswith("embedded redis-server at redis://127.0.0.1:")
    assert (
        done.stdout.splitlines()[-1] == f"demo succeeded; worker and beat logs in {data / 'demo'}"
    )


# --- docrecovery status / list ----------------------------------------------------------


def test_status_json_parses_and_carries_the_seeds_metric_names(
    cli: Cli, tracker: Tracker, doc_root: Path
) -> None:
    record_due(tracker, [doc_root / "a.txt", doc_root / "b.txt"])
    record_due(tracker, [doc_root / "c.docx"], category="import")

    done = cli("status", "--json")

    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status["recovery_metrics"]) >= seed.METRICS
    assert status["total_failed_documents"] == 3
    assert status["recovery_metrics"]["documents_eligible_for_retry"] == 3
    assert status["analysis"]["error_categories"] == {"file_not_found": 2, "import": 1}


def test_list_shows_every_tracked_document_and_filters_by_category_and_state(
    cli: Cli, tracker: Tracker, doc_root: Path
) -> None:
    # Given two missing files, an import failure and a dead document
    missing = record_due(tracker, [doc_root / "a.txt", doc_root / "b.txt"])
    [imported] = record_due(tracker, [doc_root / "c.docx"], category="import")
    dead = record_dead(tracker, doc_root / "gone.txt")

    everything = cli("list")
    live = cli("list", "--live")
    by_category = cli("list", "--category", "import")
    only_dead = cli("list", "--dead")

    # Then the live ones are listed oldest first with state, category and retries
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[-1] == "3 document(s)"
    assert [line.split()[0] for line in lines[:-1]] == [*missing, imported]
    assert lines[0].split()[1:5] == ["failed", "file_not_found", "retries", "0"]
    assert str(doc_root / "a.txt") in lines[0]
    assert by_category.stdout.splitlines() == [
        next(line for line in lines if line.startswith(imported)),
        "1 document(s)",
    ]
    [dead_line, count] = only_dead.stdout.splitlines()
    assert dead_line.split()[:5] == [dead, "dead", "permanent", "retries", "0"]
    assert count == "1 document(s)"
    # And without a state filter every tracked document is listed, the dead one too
    assert everything.stdout.splitlines()[-1] == "4 document(s)"
    assert {line.split()[0] for line in everything.stdout.splitlines()[:-1]} == {
        *missing,
        imported,
        dead,
    }


# --- paths that are not clean text -----------------------------------------------------

#: What a user's terminal session sets: Python's UTF-8 stdio (strict errors), or a UTF-8
#: locale (under which Python writes undecodable bytes back out raw).
TERMINALS = pytest.mark.parametrize(
    "terminal", [{"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C.UTF-8"}], ids=["pythonio", "locale"]
)
#: A name that is not UTF-8, as Python decodes it (surrogate escapes), and how it prints.
UNDECODABLE = (os.fsdecode(b"\xff\xfe.txt"), r"\xff\xfe.txt")


@TERMINALS
def test_list_prints_undecodable_and_control_characters_escaped_one_document_per_line(
    cli: Cli, tracker: Tracker, doc_root: Path, terminal: dict[str, str]
) -> None:
    # Given failures of a path that is not UTF-8, one with a newline and one with a NUL
    names = [UNDECODABLE, ("two\nlines.txt", r"two\nlines.txt"), ("nul\0.txt", r"nul\x00.txt")]
    ids = record_due(tracker, [doc_root / name for name, _ in names])

    done = cli("list", env=terminal)

    # Then each document is one line, its path escaped where it is not printable text
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "3 document(s)"
    assert [line.split()[0] for line in lines[:-1]] == ids
    for line, (_, shown) in zip(lines, names, strict=False):
        assert f"  {doc_root}/{shown}  " in line


@TERMINALS
def test_list_json_keeps_undecodable_and_control_characters_exactly(
    cli: Cli, tracker: Tracker, doc_root: Path, terminal: dict[str, str]
) -> None:
    paths = [str(doc_root / UNDECODABLE[0]), str(doc_root / "two\nlines\0.txt")]
    record_due(tracker, [Path(path) for path in paths])

    done = cli("list", "--json", env=terminal)

    assert done.returncode == 0, done.stderr
    assert [record["document_path"] for record in json.loads(done.stdout)] == paths


@TERMINALS
def test_recover_prints_an_undecodable_path_escaped_after_resubmitting_it_once(
    cli: Cli,
    tracker: Tracker,
    doc_root: Path,
    redis_client: redis.Redis,
    terminal: dict[str, str],
) -> None:
    # Given a due document whose name is not UTF-8, back in place
    name, shown = UNDECODABLE
    record_due(tracker, [present(doc_root, name)])

    done = cli("recover", env=terminal)

    # Then it is resubmitted once and the summary names it, escaped
    assert done.returncode == 0, done.stderr
    assert f"  {doc_root}/{shown}  attempt 1 -> documents" in done.stdout.splitlines()
    assert len(queued(redis_client)) == 1


# --- docrecovery retry / delete / purge -------------------------------------------------


# the queue is flushed (redis_url) before the worker starts consuming it
@pytest.mark.usefixtures("redis_url", "celery_worker")
def test_retry_resubmits_a_dead_document_as_a_manual_retry_that_is_not_counted(
    cli: Cli, tracker: Tracker, doc_root: Path
) -> None:
    # Given a dead document (a permanent error), its file missing besides
    path = doc_root / "gone.txt"
    doc_id = record_dead(tracker, path)

    # When an operator retries it by id and the worker runs it
    done = cli("retry", doc_id)

    # Then it was resubmitted as a manual retry, and its failure counted no retry
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"resubmitted {doc_id}  {path} -> documents")

    def failed_again() -> bool:
        record = tracker.reports.get_record(doc_id)
        return record is not None and record.failure_count == 2

    wait_for(failed_again, 30, "the manual retry to fail")
    record = tracker.reports.get_record(doc_id)
    assert record is not None
    # revived by the operator, it failed for a cause that can go away: live again,
    # its retries untouched
    assert (record.state, record.error_category, record.retry_count) == (
        "failed",
        "file_not_found",
        0,
    )
    # a manual retry is a recovery attempt in the metrics, just not a counted retry
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["failed_recoveries"], metrics["successful_recoveries"]) == (1, 0)

    # When the file is back and it is retried again, it is processed and cleared
    present(doc_root, "gone.txt")
    assert cli("retry", doc_id).returncode == 0
    wait_for(lambda: tracker.reports.get_record(doc_id) is None, 30, "the manual retry to succeed")
    metrics = tracker.reports.status()["recovery_metrics"]
    assert (metrics["failed_recoveries"], metrics["successful_recoveries"]) == (1, 1)
    assert metrics["recovery_attempts"] == 2


def test_retry_a_document_not_tracked_is_reported_as_skipped(cli: Cli) -> None:
    done = cli("retry", "0" * 20)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"skipped     {'0' * 20}  (not tracked, or already being recovered)"
    ]


def test_retry_that_the_broker_refuses_exits_1_naming_what_was_not_sent(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    # Given a due document and a broker that cannot be reached
    [doc_id] = record_due(tracker, [doc_root / "a.txt"])
    broker = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{closed_port()}/0"}

    # When an operator retries it, in text and in JSON
    done = cli("retry", doc_id, env=broker)
    as_json = cli("--json", "retry", doc_id, env=broker)

    # Then both exit 1 and name it as not sent; it is due as it was
    assert done.returncode == 1, done.stderr
    assert f"not sent    {doc_id}  (resubmission failed; left as it was)" in done.stdout
    assert as_json.returncode == 1, as_json.stderr
    assert json.loads(as_json.stdout)["released"] == [doc_id]
    assert redis_client.zscore(tracker.keys.due, doc_id) is not None
    assert redis_client.zcard(tracker.keys.claimed) == 0


def test_retry_all_by_category_enqueues_each_document_once_even_run_twice_at_once(
    cli_env: dict[str, str],
    tmp_path: Path,
    tracker: Tracker,
    doc_root: Path,
    redis_client: redis.Redis,
) -> None:
    # Given 20 file_not_found failures and 3 import failures
    chosen = record_due(tracker, [doc_root / f"missing-{n:02}.txt" for n in range(20)])
    record_due(tracker, [doc_root / f"doc-{n}.docx" for n in range(3)], category="import")

    # When two operators run the same retry at the same time
    args = ("retry", "--all", "--category", "file_not_found")
    both = [
        subprocess.Popen(
            command("docrecovery", args),
            env=cli_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in both]

    # Then each selected document was enqueued exactly once, and nothing else
    assert [process.returncode for process in both] == [0, 0], outputs
    ids = [m["docrecovery"]["doc_id"] for m in queued(redis_client)]
    assert sorted(ids) == sorted(chosen)
    assert all(m["docrecovery"]["manual"] is True for m in queued(redis_client))
    lines = [line for out, _ in outputs for line in out.splitlines()]
    assert sum(line.startswith("resubmitted ") for line in lines) == 20


def test_retry_all_selects_dead_documents_too(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    [live] = record_due(tracker, [doc_root / "live.txt"])
    dead = record_dead(tracker, doc_root / "dead.txt")

    done = cli("retry", "--all")

    assert done.returncode == 0, done.stderr
    assert sorted(m["docrecovery"]["doc_id"] for m in queued(redis_client)) == sorted([live, dead])


def test_delete_stops_tracking_the_named_document(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    [gone, kept] = record_due(tracker, [doc_root / "a.txt", doc_root / "b.txt"])

    done = cli("delete", gone)
    again = cli("delete", gone)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deleted 1 document(s)"
    assert again.stdout.strip() == "deleted 0 document(s)"
    assert tracker.reports.get_record(gone) is None
    assert tracker.reports.get_record(kept) is not None
    assert redis_client.zscore("{docrecovery}:due", gone) is None
    assert tracker.reports.status()["total_failed_documents"] == 1


def test_purge_deletes_dead_documents_only(cli: Cli, tracker: Tracker, doc_root: Path) -> None:
    dead = [record_dead(tracker, doc_root / f"dead-{n}.txt") for n in range(2)]
    [live] = record_due(tracker, [doc_root / "live.txt"])

    done = cli("purge")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 2 dead document(s)"
    assert [tracker.reports.get_record(doc_id) for doc_id in dead] == [None, None]
    assert tracker.reports.get_record(live) is not None
    status = tracker.reports.status()
    assert (status["total_failed_documents"], status["dead"]) == (1, 0)


def test_purge_everything_deletes_live_and_dead_documents(
    cli: Cli, tracker: Tracker, doc_root: Path
) -> None:
    dead = record_dead(tracker, doc_root / "dead.txt")
    [live] = record_due(tracker, [doc_root / "live.txt"])

    done = cli("purge", "--everything")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 2 tracked document(s)"
    assert (tracker.reports.get_record(dead), tracker.reports.get_record(live)) == (None, None)
    status = tracker.reports.status()
    assert (status["total_failed_documents"], status["dead"]) == (0, 0)


# --- bad settings -----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["main", "docrecovery"])
def test_a_bad_docrecovery_setting_exits_2_with_a_message_naming_the_key(
    cli: Cli, via: str
) -> None:
    done = cli(
        "--recover" if via == "main" else "status",
        via=via,
        env={"DOCRECOVERY_MAX_RETRY_COUNT": "abc"},
    )

    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert "max_retry_count" in done.stderr
    assert "'abc'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "CELERY_TASK_TIME_LIMIT",
        "CELERY_VISIBILITY_TIMEOUT",
        "CELERY_RESULT_EXPIRES",
        "CELERY_BEAT_MAX_INTERVAL",
        "CELERY_BEAT_LOCK_TIMEOUT",
    ],
)
def test_a_celery_number_that_is_not_whole_seconds_exits_2_naming_the_variable(
    cli: Cli, name: str
) -> None:
    # Given a duration written with its unit (before: int()'s ValueError, a traceback)
    done = cli("status", env={name: "5m"})

    # Then one line names the variable, the value and what it takes
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines() == [
        f"docrecovery: setting {name!r}: got '5m'; allowed: a whole number of seconds"
        f" >= {1 if name == 'CELERY_VISIBILITY_TIMEOUT' else 0}"
    ]


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("http://h:6379/0", "http://h:6379/0", "must specify one of the following schemes"),
        ("redis://h:notaport/0", "redis://h:notaport/0", "Port could not be cast"),
        ("redis://h:99999/0", "redis://h:99999/0", "Port out of range"),
        ("redis://h/0?socket_timeout=abc", "redis://h/0?socket_timeout=abc", "'socket_timeout'"),
        ("redis://:s3cr#et@h:6379/0", "redis://:***@h:6379/0", "its password does not parse"),
        ("redis://h:6379/abc", "redis://h:6379/abc", "must be a database number"),
        ("redis://[::1/0", "redis://[::1/0", "Invalid IPv6 URL"),
    ],
    ids=[
        "scheme",
        "port-not-a-number",
        "port-out-of-range",
        "query-option",
        "password-with-#",
        "db-not-a-number",
        "ipv6-unclosed",
    ],
)
@pytest.mark.parametrize(
    ("via", "args"),
    [("docrecovery", ("status",)), ("main", ("--recover",))],
    ids=["status", "main"],
)
def test_a_redis_url_no_client_can_use_exits_2_naming_it_masked_without_a_traceback(
    cli: Cli, url: str, shown: str, why: str, via: str, args: tuple[str, ...]
) -> None:
    # Given a URL no client can use (before: a ValueError's traceback, exit 1; a
    # database path that is not a number was taken for db 0 by status, and crashed a
    # recovery as it built the pipeline's broker URL, as did an unclosed IPv6 host)
    done = cli(*args, "--redis-url", url, via=via)

    # Then one line names the setting, the URL without its password, and why
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"docrecovery: setting 'REDIS_URL': got '{shown}'; allowed: ")
    assert why in line
    # a password cut short by its unencoded '#' is masked whole, in the reason too
    assert "s3cr" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("via", "args"),
    [("docrecovery", ("status",)), ("main", ("--recover",)), ("docrecovery", ("list",))],
    ids=["status", "main", "list"],
)
def test_an_empty_redis_url_option_is_a_usage_error_naming_the_option(
    cli: Cli, via: str, args: tuple[str, ...]
) -> None:
    # Given --redis-url given empty, as "$URL" gives it when URL is not set (before: taken
    # as not given, and the command went on with $REDIS_URL without a word)
    done = cli(*args, "--redis-url", "", via=via)

    # Then it is refused as usage, naming the option, and nothing is reported
    assert done.returncode == EXIT_UNAVAILABLE, done.stdout + done.stderr
    assert "Error: Invalid value for '--redis-url': an empty URL names no Redis" in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("via", "args"),
    [("docrecovery", ("status",)), ("main", ("--recover",))],
    ids=["status", "main"],
)
def test_a_database_the_server_does_not_have_exits_2_naming_the_url_masked(
    cli: Cli, locked_redis: RedisServer, via: str, args: tuple[str, ...]
) -> None:
    # Given a URL whose database number is past the server's `databases` (before: the
    # server's "DB index is out of range" was a failure of the work, exit 1)
    with redis.Redis(port=locked_redis.port, password=PASSWORD) as client:
        databases = int(client.config_get("databases")["databases"])
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/{databases}"

    done = cli(*args, "--redis-url", url, via=via)

    # Then one line names the URL without its password and says what is wrong
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"docrecovery: Redis at {redact(url)} refused: ")
    assert "the server has fewer databases than the URL's database number needs" in line
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("via", "args"),
    [("docrecovery", ("status",)), ("main", ("--recover",))],
    ids=["status", "main"],
)
def test_a_stats_counter_that_is_not_a_number_exits_1_naming_it_and_its_repair(
    cli: Cli,
    tracker: Tracker,
    doc_root: Path,
    redis_client: redis.Redis,
    via: str,
    args: tuple[str, ...],
) -> None:
    # Given a due document and a counter of the stats hash set by hand to a word
    # (before: int()'s ValueError, a traceback, exit 1)
    record_due(tracker, [present(doc_root, "a.txt")])
    redis_client.hset(tracker.keys.stats, "recovery_attempts", "abc")

    done = cli(*args, via=via)

    # Then one line names the key, the field, the value and the repair; nothing is sent
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"docrecovery: Redis at {redact(tracker.url)}: stats field 'recovery_attempts' of"
        " '{docrecovery}:stats' holds 'abc', not a number; repair it with"
        " HDEL {docrecovery}:stats recovery_attempts (it counts again from 0)"
    ]
    assert redis_client.llen("documents") == 0

    # And once repaired as it says, the command works, the counter counting from 0
    redis_client.hdel(tracker.keys.stats, "recovery_attempts")
    again = cli(*args, via=via)
    assert again.returncode == 0, again.stderr


# --- docrecovery submit against a real worker -------------------------------------------


@pytest.mark.slow
def test_submit_and_wait_against_a_worker_prints_ok_and_a_failure_names_the_worker(
    cli: Cli,
    worker_process: Callable[..., Any],
    tracker: Tracker,
    doc_root: Path,
) -> None:
    worker_process("w1")
    good = present(doc_root, "good.txt")
    missing = doc_root / "missing.txt"

    ok = cli("submit", str(good), "--query", "lease", "--wait", "30")
    failed = cli("submit", str(missing), "--wait", "30")

    assert ok.returncode == 0, ok.stdout + ok.stderr
    [line] = [line for line in ok.stdout.splitlines() if line.startswith("ok")]
    assert line.startswith(f"ok      {good}: text, ")
    assert failed.returncode == 1
    assert f"FAILED  {missing}: FileNotFoundError" in failed.stdout
    doc_id = document_id(str(missing))
    wait_for(
        lambda: tracker.reports.get_record(doc_id) is not None, 30, "the failure to be recorded"
    )
    record = tracker.reports.get_record(doc_id)
    assert record is not None
    assert record.worker_id == f"w1@{socket.gethostname()}"


# --- docrecovery submit without a reachable broker -------------------------------------

#: Within this the command must have given up: a hang guard, not a benchmark.
GIVES_UP_WITHIN = 10.0
PASSWORD = "right-password"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server that requires the password ``PASSWORD``."""
    server = RedisServer(tmp_path / "locked", appendonly=False)
    server.start()
    with server.client() as client:
        client.config_set("requirepass", PASSWORD)
    yield server
    with redis.Redis(port=server.port, password=PASSWORD) as client:
        client.config_set("requirepass", "")
    server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def submit_to(cli: Cli, doc_root: Path, url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    document = present(doc_root, "a.txt")
    started = time.monotonic()
    done = cli("submit", str(document), env={"REDIS_URL": url})
    return done, time.monotonic() - started


def test_submit_to_a_closed_port_exits_2_at_once_with_one_line(cli: Cli, doc_root: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"

    done, took = submit_to(cli, doc_root, url)

    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines() == [
        f"docrecovery: cannot reach the broker at {redact(url)}: connection refused"
    ]
    assert "s3cret" not in done.stdout + done.stderr
    assert took < GIVES_UP_WITHIN


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_submit_with_a_wrong_or_no_password_exits_2_at_once_with_one_line(
    cli: Cli, doc_root: Path, locked_redis: RedisServer, password: str | None
) -> None:
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{locked_redis.port}/0"

    done, took = submit_to(cli, doc_root, url)

    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines() == [
        f"docrecovery: cannot reach the broker at {redact(url)}: authentication failed"
    ]
    assert "wrong-password" not in done.stdout + done.stderr
    assert took < GIVES_UP_WITHIN


def test_submit_to_a_server_that_never_answers_exits_2_with_a_timeout(
    cli: Cli, doc_root: Path, silent_port: int
) -> None:
    url = f"redis://127.0.0.1:{silent_port}/0"

    done, took = submit_to(cli, doc_root, url)

    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines() == [f"docrecovery: cannot reach the broker at {url}: timeout"]
    assert took < GIVES_UP_WITHIN


def test_submit_with_the_tracker_up_and_the_broker_down_names_the_broker_not_the_tracker(
    cli: Cli, doc_root: Path, redis_url: str
) -> None:
    # Given the tracker's Redis is up and CELERY_BROKER_URL names a closed port
    broker = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    document = present(doc_root, "a.txt")

    done = cli("submit", str(document), env={"CELERY_BROKER_URL": broker})

    # Then the one line names the broker it could not reach (before: "cannot reach
    # Redis at" the tracker's URL, which was reachable)
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines() == [
        f"docrecovery: cannot reach the broker at {redact(broker)}: connection refused"
    ]
    assert redis_url not in done.stderr
    assert "s3cret" not in done.stdout + done.stderr


def test_submit_to_a_broker_scheme_kombu_has_no_transport_for_exits_2_naming_the_setting(
    cli: Cli, doc_root: Path
) -> None:
    # Given a typo in the broker's scheme (before: kombu's KeyError, a traceback, exit 1)
    document = present(doc_root, "a.txt")

    done = cli("submit", str(document), env={"CELERY_BROKER_URL": "amqb://user:s3cret@host//"})

    # Then one line names the setting, the URL masked, and kombu's suggestion
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "docrecovery: setting 'CELERY_BROKER_URL': got 'amqb://user:***@host//'; allowed:"
    )
    assert "No such transport: amqb.  Did you mean amqp?" in line
    assert "s3cret" not in done.stdout + done.stderr


def test_list_shows_every_tracked_id_a_corrupt_one_too_and_agrees_with_status(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    # Given a readable failure and a record a claim found unreadable
    [good] = record_due(tracker, [doc_root / "good.txt"])
    redis_client.set("{docrecovery}:doc:garbage", "not a hash")
    redis_client.zadd("{docrecovery}:corrupt", {"garbage": time.time()})

    everything = cli("list")
    only_corrupt = cli("list", "--corrupt")
    status = json.loads(cli("status", "--json").stdout)

    # Then both are listed, the corrupt one saying so (before: list showed 1 of 2)
    lines = everything.stdout.splitlines()
    assert lines[-1] == "2 document(s)"
    assert any(line.startswith(good) for line in lines)
    assert any(line.startswith("garbage") and "unreadable" in line for line in lines)
    assert only_corrupt.stdout.splitlines()[-1] == "1 document(s)"
    assert status["total_failed_documents"] + status["corrupt"] == 2


def test_list_calls_a_record_it_cannot_read_unreadable_and_the_delete_it_suggests_removes_it(
    cli: Cli, tracker: Tracker, doc_root: Path, redis_client: redis.Redis
) -> None:
    # Given a tracked document whose record body no longer decodes (no claim has seen
    # it, so it is in no corrupt index)
    [doc_id] = record_due(tracker, [doc_root / "a.txt"])
    redis_client.hset(f"{{docrecovery}}:doc:{doc_id}", "body", "garbage")

    listed = cli("list")
    status = json.loads(cli("status", "--json").stdout)

    # Then list says it cannot be read and how to remove it (before: "corrupt ...
    # (delete or purge it)", while status counted 0 corrupt and purge left it)
    assert listed.stdout.splitlines()[0] == (
        f"{doc_id}  unreadable record cannot be read (remove it: docrecovery delete {doc_id})"
    )
    assert status["corrupt"] == 0
    # and the command it names does
    removed = cli("delete", doc_id)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "deleted 1 document(s)"
    assert cli("list").stdout.splitlines() == ["0 document(s)"]
