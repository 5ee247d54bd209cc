"""``docrecovery metrics`` and ``docrecovery dashboard`` through their real entry
points: each serves the tracker of the session's Redis until stopped, and refuses a
public address without credentials (exit 2)."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import http_get
from faults.support import wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_cli import queued, record_dead, record_due, tracker
from test_cli_commands import CELERY, Run, entry, env, run

from recovery.redis_server import free_port
from recovery.store import Tracker

__all__ = ["env", "run", "tracker"]  # fixtures, used by name

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
    """``serve("metrics", via="celery")``: the command on a free port, answering;
    ``app`` names another module for ``celery -A`` than the project's ``tasks``."""
    started: list[subprocess.Popen[str]] = []

    def start(
        command: str, *args: str, via: str = "docrecovery", app: str = "tasks", **extra: str
    ) -> str:
        port = free_port()
        line = entry(via, (command, "--port", str(port), *args))
        if via == "celery":
            line = [str(CELERY), "-A", app, *line[3:]]
        process = subprocess.Popen(
            line,
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


def post_json(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    """POST ``body`` as a script does, with a bearer token (no CSRF token needed)."""
    request = urllib.request.Request(
        url,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_the_dashboard_under_celery_retries_through_the_broker_of_the_app_it_loaded(
    serve: Serve, tracker: Tracker, doc_root: Path, redis_url: str, tmp_path: Path
) -> None:
    # Given an app whose broker, set in its code, is another Redis database than the
    # tracker's (REDIS_URL)
    [doc_id] = record_due(tracker, [doc_root / "a.txt"])
    broker_url = redis_url.rsplit("/", 1)[0] + "/9"
    (tmp_path / "brokered.py").write_text(
        f"from tasks.app import app\napp.conf.broker_url = {broker_url!r}\n"
    )
    base = serve("dashboard", via="celery", app="brokered", DOCRECOVERY_DASHBOARD_TOKEN="t0ken")

    # When a script retries the document through the dashboard the command started
    answer = post_json(f"{base}/api/retry", {"ids": [doc_id]}, "t0ken")

    # Then the task went to the app's broker, as `celery -A tasks docrecovery retry` sends
    assert [r["doc_id"] for r in answer["resubmitted"]] == [doc_id], answer
    broker = redis.Redis.from_url(broker_url, decode_responses=True)
    tracker_db = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert [m["args"][0] for m in queued(broker)] == [str(doc_root / "a.txt")]
        assert queued(tracker_db) == []
    finally:
        broker.close()
        tracker_db.close()


@pytest.mark.parametrize("command", ["metrics", "dashboard"])
def test_a_public_address_without_credentials_exits_2_naming_the_variables(
    run: Run, command: str
) -> None:
    done = run(command, "--host", "0.0.0.0", "--port", str(free_port()))

    assert done.returncode == 2
    assert f"DOCRECOVERY_{command.upper()}_USER" in done.stderr
    assert "loopback" in done.stderr


@pytest.mark.parametrize("command", ["metrics", "dashboard"])
def test_a_port_in_use_exits_2_with_one_line_naming_the_address(run: Run, command: str) -> None:
    # Given another server listening on the port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When the command is told to listen there
        done = run(command, "--port", str(port))

    # Then it says so in one line and exits 2, as for any address it cannot use
    assert done.returncode == 2, done.stderr
    expected = f"docrecovery: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert done.stderr == expected


@pytest.mark.parametrize("command", ["metrics", "dashboard"])
def test_a_host_that_does_not_resolve_exits_2_with_one_line_naming_it(
    run: Run, command: str
) -> None:
    # Given credentials, so a name beyond loopback is allowed
    upper = command.upper()
    credentials = {f"DOCRECOVERY_{upper}_USER": "ops", f"DOCRECOVERY_{upper}_PASSWORD": "s3cret"}

    # When the command is told to listen on a name that does not resolve
    done = run(command, "--host", "no-such-host.invalid", "--port", "5599", **credentials)

    # Then it names the address and the cause in one line and exits 2
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("docrecovery: cannot listen on no-such-host.invalid:5599: ")
    assert done.stderr.count("\n") == 1


def test_a_dashboard_on_every_address_answers_on_ipv4_and_ipv6(serve: Serve) -> None:
    # Given a dashboard with credentials told to listen on :: (every address); serve
    # waits for it on 127.0.0.1 (before: its IPv6 socket took IPv6 only, refusing it)
    base = serve(
        "dashboard",
        "--host",
        "::",
        DOCRECOVERY_DASHBOARD_USER="ops",
        DOCRECOVERY_DASHBOARD_PASSWORD="s3cret",
    )

    # Then it answers on the IPv6 loopback too
    assert answers(f"http://[::1]:{base.rsplit(':', 1)[1]}")


def status_under(url: str, host: str) -> int:
    """The status of a GET of ``url`` sent with ``host`` as its Host header, as a
    browser sends the name it was given (a name rebound to 127.0.0.1, an alias)."""
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_dashboard_answers_its_own_names_and_the_allowed_hosts_only(
    serve: Serve, how: str
) -> None:
    # Given a dashboard without credentials, told of one more name of this machine
    if how == "option":
        base = serve("dashboard", "--allowed-host", "dash.internal")
    else:
        base = serve("dashboard", DOCRECOVERY_DASHBOARD_ALLOWED_HOSTS="dash.internal")
    port = base.rsplit(":", 1)[1]

    # When browsers ask for the overview under several names
    statuses = {
        name: status_under(base, f"{name}:{port}")
        for name in ("127.0.0.1", "localhost", "[::1]", "dash.internal", "attacker.example")
    }

    # Then it answers every name of this machine and refuses a rebound one
    assert statuses == {
        "127.0.0.1": 200,
        "localhost": 200,
        "[::1]": 200,
        "dash.internal": 200,
        "attacker.example": 400,
    }


def test_a_bad_allowed_host_exits_2_naming_it(run: Run) -> None:
    done = run("dashboard", "--allowed-host", "dash/internal")

    assert done.returncode == 2
    assert "'allowed host': got 'dash/internal'" in done.stderr
    assert "Traceback" not in done.stderr
