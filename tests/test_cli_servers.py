"""``docrecovery metrics`` and ``docrecovery dashboard`` through their real entry
points: each serves the tracker of the session's Redis until stopped, and refuses a
public address without credentials (exit 2)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import http_get
from faults.support import wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_cli import record_dead, record_due, tracker
from test_cli_commands import entry, env

from recovery.redis_server import free_port
from recovery.store import Tracker

__all__ = ["env", "tracker"]  # fixtures, used by name

Serve = Callable[..., str]


def get(url: str, auth: tuple[str, str] | None = None) -> str:
    """The body of a 200 answer; any other status fails the test."""
    response = http_get(url, auth)
    assert response.status == 200, (url, response)
    return response.body


def answers(url: str) -> bool:
    """Whether anything answers HTTP there (a refusal is an answer)."""
    try:
        http_get(url)
    except OSError:
        return False
    return True


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[Serve]:
    """``serve("metrics", via="celery")``: the command on a free port, answering."""
    started: list[subprocess.Popen[str]] = []

    def start(command: str, *args: str, via: str = "docrecovery", **extra: str) -> str:
        port = free_port()
        process = subprocess.Popen(
            entry(via, (command, "--port", str(port), *args)),
            env={**env, **extra},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: process.poll() is not None or answers(base), 30, f"{command} to listen")
        assert process.poll() is None, f"{command} exited with {process.returncode}"
        return base

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("via", ["docrecovery", "celery"])
def test_metrics_serves_the_trackers_counts(
    serve: Serve, tracker: Tracker, doc_root: Path, via: str
) -> None:
    # Given two due documents and a dead one
    record_due(tracker, [doc_root / "a.txt", doc_root / "b.txt"])
    record_dead(tracker, doc_root / "c.pdf")

    # When Prometheus scrapes the exporter the command started
    text = get(f"{serve('metrics', via=via)}/metrics")

    # Then the exposition says so
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("docrecovery_tracker_up", ())] == 1
    assert samples[("docrecovery_documents", (("state", "due"),))] == 2
    assert samples[("docrecovery_documents", (("state", "dead"),))] == 1


def test_metrics_with_credentials_from_the_environment_asks_for_them(serve: Serve) -> None:
    base = serve("metrics", DOCRECOVERY_METRICS_USER="prom", DOCRECOVERY_METRICS_PASSWORD="s3cret")

    assert http_get(f"{base}/metrics").status == 401
    assert "docrecovery_tracker_up 1.0" in get(f"{base}/metrics", auth=("prom", "s3cret"))


def test_dashboard_serves_the_overview_and_the_api(
    serve: Serve, tracker: Tracker, doc_root: Path
) -> None:
    record_due(tracker, [doc_root / "a.txt"])
    record_dead(tracker, doc_root / "b.pdf")

    base = serve("dashboard", via="celery")

    overview = json.loads(get(f"{base}/api/overview"))
    assert overview["status"]["total_failed_documents"] == 2
    assert "Overview" in get(base)


@pytest.mark.parametrize("command", ["metrics", "dashboard"])
def test_a_public_address_without_credentials_exits_2_naming_the_variables(
    env: dict[str, str], command: str
) -> None:
    done = subprocess.run(
        entry("docrecovery", (command, "--host", "0.0.0.0", "--port", str(free_port()))),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert f"DOCRECOVERY_{command.upper()}_USER" in done.stderr
    assert "loopback" in done.stderr
