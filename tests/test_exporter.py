"""The Prometheus exporter, live: ``serve()`` in a child process, scraped over HTTP.

Each exporter runs as ``docrecovery metrics`` runs it (``recovery.exporter.serve``)
against the session's real Redis; the data set is built through the store's own
calls, so every number scraped has a known cause. The exposition text is read with
prometheus_client's own parser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from conftest import http_get
from prometheus_client.parser import text_string_to_metric_families

from recovery.calls import RunCall
from recovery.categories import CATEGORIES
from recovery.config import RecoveryConfig
from recovery.errors import ConfigError
from recovery.exporter import STATES, VARIABLES, DocRecoveryCollector, make
from recovery.keys import Keys
from recovery.records import FailedDocumentRecord
from recovery.redis_server import RedisServer, free_port
from recovery.store import Settlement, Tracker

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
#: The exporter's and the data set's recovery settings: no jitter, so what is due is exact;
#: a breaker window of two recoveries.
SETTINGS = {
    "DOCRECOVERY_RETRY_JITTER": "0",
    "DOCRECOVERY_MAX_RETRY_COUNT": "3",
    "DOCRECOVERY_BREAKER_WINDOW": "2",
}
USER, PASSWORD = "prometheus", "s3cret"

#: Every family the exporter serves (counters without their ``_total``).
FAMILIES = {
    "docrecovery_tracker_up",
    "docrecovery_documents",
    "docrecovery_eligible_documents",
    "docrecovery_recovery_attempts",
    "docrecovery_successful_recoveries",
    "docrecovery_failed_recoveries",
    "docrecovery_recovery_success_ratio",
    "docrecovery_recovery_duration_seconds",
    "docrecovery_last_recovery_run_timestamp_seconds",
    "docrecovery_recovery_runs",
    "docrecovery_recovery_interval_seconds",
    "docrecovery_failures",
    "docrecovery_breaker_open",
    "docrecovery_in_flight_runs",
    "docrecovery_dead_trimmed",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Exporter:
    url: str
    #: What the exporter process writes, stdout and stderr.
    log: Path

    def get(self, path: str = "/metrics", auth: tuple[str, str] | None = None) -> tuple[int, str]:
        """Status and body; an HTTP error status is returned, not raised."""
        response = http_get(self.url + path, auth, REQUEST_TIMEOUT)
        return response.status, response.body

    def scrape(self, auth: tuple[str, str] | None = None) -> Samples:
        status, body = self.get(auth=auth)
        assert status == 200, body
        return samples(body)


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def start_exporter(redis_url: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from recovery.config import RecoveryConfig\n"
            "from recovery.exporter import serve\n"
            "serve(sys.argv[1], RecoveryConfig.from_env(), '127.0.0.1', int(sys.argv[2]))",
            redis_url,
            env["PORT"],
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


ExporterFactory = Callable[..., Exporter]


@pytest.fixture(scope="module")
def exporter(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExporterFactory]:
    """Factory: ``exporter(redis_url, **env)`` serves on a free port until the module
    ends; every process started is terminated."""
    started: list[subprocess.Popen[bytes]] = []

    def start(redis_url: str = redis_server.url, **extra: str) -> Exporter:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRECOVERY_")}
        env |= SETTINGS | extra | {"PORT": str(port)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = tmp_path_factory.mktemp("exporter") / "exporter.log"
        process = start_exporter(redis_url, log, env)
        started.append(process)
        served = Exporter(f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"exporter exited with {process.returncode}:\n{log.read_text()}")
            try:
                if served.get("/healthcheck")[0] == 200:
                    return served
            except OSError:  # not listening yet
                time.sleep(0.1)
        pytest.fail(f"exporter did not answer within {START_TIMEOUT} s:\n{log.read_text()}")

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def config() -> RecoveryConfig:
    return RecoveryConfig.from_env(environ=SETTINGS)


def failure(
    path: str, at: float, category: str = "other", task_id: str = ""
) -> FailedDocumentRecord:
    return FailedDocumentRecord(
        document_path=path,
        task_id=task_id or f"task-{path}",
        error_message=f"{category} error",
        failure_timestamp=at,
        error_category=category,
        args=[path],
    )


@dataclass(frozen=True)
class Known:
    """What the data set holds, by construction."""

    states: dict[str, int]
    failures: dict[str, int]
    last_run: float


def build_data_set(redis_url: str) -> Known:
    """Every state, a success and failures of recoveries, an open breaker, a run in
    flight and a trimmed dead set, through the store's calls."""
    tracker = Tracker(redis_url, config())
    store, claims = tracker.store, tracker.claims
    now = tracker.connection.server_time()
    try:
        store.record_failure(failure("/docs/due", now - 2 * HOUR))
        store.record_failure(failure("/docs/scheduled", now - 600))
        for _ in range(4):  # retries 0, 1, 2, 3: past max_retry_count 3
            store.record_failure(failure("/docs/exhausted", now - 3 * HOUR))
        store.record_failure(failure("/docs/dead-old", now - 5 * HOUR, "permanent"))
        store.record_failure(failure("/docs/dead", now - 4 * HOUR, "permanent"))
        for path in ("/docs/sent", "/docs/resolved"):
            store.record_failure(failure(path, now - 2 * HOUR))
        store.record_failure(failure("/docs/missing", now - 2 * HOUR, "file_not_found"))
        for path in ("/docs/slow-1", "/docs/slow-2"):
            store.record_failure(failure(path, now - 2 * HOUR, "timeout"))

        # one run: five claimed, four sent, one held back
        paths = ["/docs/sent", "/docs/resolved", "/docs/slow-1", "/docs/slow-2", "/docs/missing"]
        claim = claims.claim_ids([failure(p, now).doc_id for p in paths])
        assert len(claim.records) == 5
        claims.settle(
            [
                Settlement(r.doc_id, "wait", "file still missing")
                if r.document_path == "/docs/missing"
                else Settlement(r.doc_id, "sent", f"new-{r.document_path}")
                for r in claim.records
            ],
            token=claim.token,
        )
        # one recovery succeeds, two fail again (timeout: the breaker's window of 2)
        resolved = failure("/docs/resolved", now)
        store.resolve(resolved.doc_id, recovery_attempt=True, task_id="new-/docs/resolved")
        for path in ("/docs/slow-1", "/docs/slow-2"):
            again = failure(path, tracker.connection.server_time(), "timeout", f"new-{path}")
            store.record_failure(again, recovery_attempt=True)
        # a run checked in and not reported yet
        store.begin("0" * 20, RunCall("run-1", "tasks.process_document", "/docs/x"), 300)
        # the dead set over its bound: the oldest dead document is trimmed
        Tracker(redis_url, RecoveryConfig.from_mapping({"dead_max": 1})).maintenance.cleanup()
        last_run = tracker.reports.status()["recovery_metrics"]["last_recovery_run"]
    finally:
        tracker.close()
    return Known(
        states={
            "due": 1,
            "scheduled": 3,  # /docs/scheduled, and the two whose recovery failed
            "exhausted": 1,
            "in_recovery": 1,
            "waiting": 1,
            "dead": 1,
            "corrupt": 0,
        },
        failures={"other": 8, "permanent": 2, "file_not_found": 1, "timeout": 4},
        last_run=last_run,
    )


def test_a_scrape_reports_the_data_set_through_every_metric(
    redis_url: str, exporter: ExporterFactory
) -> None:
    # Given a tracker holding a known data set, and an exporter on its Redis
    known = build_data_set(redis_url)
    served = exporter()

    # When Prometheus scrapes it
    scraped = served.scrape()

    # Then every metric says what the data set holds
    def value(name: str, **labels: str) -> float:
        return scraped[(name, tuple(sorted(labels.items())))]

    assert value("docrecovery_tracker_up") == 1
    assert {s: value("docrecovery_documents", state=s) for s in STATES} == known.states
    assert value("docrecovery_eligible_documents") == 1
    assert value("docrecovery_recovery_attempts_total") == 4
    assert value("docrecovery_successful_recoveries_total") == 1
    assert value("docrecovery_failed_recoveries_total") == 2
    assert value("docrecovery_recovery_success_ratio") == pytest.approx(1 / 3)
    assert value("docrecovery_recovery_duration_seconds_count") == 1
    assert value("docrecovery_recovery_duration_seconds_sum") >= 0
    assert value("docrecovery_last_recovery_run_timestamp_seconds") == pytest.approx(known.last_run)
    assert value("docrecovery_recovery_runs_total") == 1
    assert value("docrecovery_recovery_interval_seconds") == 30 * 60
    assert {c: value("docrecovery_failures_total", category=c) for c in CATEGORIES} == {
        c: known.failures.get(c, 0) for c in CATEGORIES
    }
    assert {c: value("docrecovery_breaker_open", category=c) for c in CATEGORIES} == {
        c: 1 if c == "timeout" else 0 for c in CATEGORIES
    }
    assert value("docrecovery_in_flight_runs") == 1
    assert value("docrecovery_dead_trimmed_total") == 1


def test_a_scrape_reads_redis_each_time(redis_url: str, exporter: ExporterFactory) -> None:
    # Given an exporter that was scraped on an empty tracker
    served = exporter()
    before = served.scrape()
    tracker = Tracker(redis_url, config())

    # When a failure is recorded between two scrapes
    try:
        tracker.store.record_failure(failure("/docs/new", tracker.connection.server_time()))
    finally:
        tracker.close()
    after = served.scrape()

    # Then the second scrape counts it and the first did not
    scheduled = ("docrecovery_documents", (("state", "scheduled"),))
    assert (before[scheduled], after[scheduled]) == (0, 1)
    assert ("docrecovery_last_recovery_run_timestamp_seconds", ()) not in after


def test_an_unreachable_tracker_is_reported_down_and_the_scrape_still_answers(
    exporter: ExporterFactory,
) -> None:
    # Given an exporter whose Redis does not listen
    served = exporter(f"redis://127.0.0.1:{free_port()}/0")

    # When it is scraped
    scraped = served.scrape()

    # Then it answers, saying only that the tracker is down
    assert scraped == {("docrecovery_tracker_up", ()): 0}


def test_a_stats_counter_that_is_not_a_number_leaves_out_only_its_metrics_and_is_logged_once(
    redis_url: str, redis_client: redis.Redis, exporter: ExporterFactory
) -> None:
    # Given the data set, and two counters of its stats hash set by hand to words
    # (before: every scrape answered 500 and logged int()'s traceback)
    build_data_set(redis_url)
    redis_client.hset(Keys().stats, mapping={"recovery_attempts": "abc", "failures:timeout": "x"})
    served = exporter()

    # When Prometheus scrapes it twice
    scraped = served.scrape()
    served.scrape()

    # Then only the metrics read from those fields have no sample; the rest holds
    assert ("docrecovery_recovery_attempts_total", ()) not in scraped
    assert ("docrecovery_failures_total", (("category", "timeout"),)) not in scraped
    assert scraped[("docrecovery_tracker_up", ())] == 1
    assert scraped[("docrecovery_successful_recoveries_total", ())] == 1
    assert scraped[("docrecovery_failures_total", (("category", "other"),))] == 8
    assert scraped[("docrecovery_breaker_open", (("category", "timeout"),))] == 1
    # And each field is logged once, in one line that says how to repair it
    lines = [line for line in served.log.read_text().splitlines() if "left out" in line]
    assert len(lines) == 2
    assert any(
        "stats field 'recovery_attempts' of '{docrecovery}:stats' holds 'abc', not a number;"
        " repair it with HDEL {docrecovery}:stats recovery_attempts" in line
        for line in lines
    )
    assert "Traceback" not in served.log.read_text()


def test_basic_auth_refuses_a_scrape_without_the_credentials(exporter: ExporterFactory) -> None:
    served = exporter(**{VARIABLES.user: USER, VARIABLES.password: PASSWORD})

    assert served.get()[0] == 401
    assert served.get(auth=(USER, "wrong"))[0] == 401
    assert served.get(auth=("someone", PASSWORD))[0] == 401
    assert served.scrape(auth=(USER, PASSWORD))[("docrecovery_tracker_up", ())] == 1
    # the container's health check needs no credentials, and reads no Redis
    assert served.get("/healthcheck") == (200, "OK")


def test_a_non_loopback_bind_needs_credentials(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        make(redis_url, config(), "0.0.0.0", free_port(), environ={})

    server, collector = make(
        redis_url,
        config(),
        "0.0.0.0",
        free_port(),
        environ={VARIABLES.user: USER, VARIABLES.password: "x"},
    )
    server.server_close()
    collector.close()


def test_the_collector_names_every_family_without_reading_redis() -> None:
    # Given a collector whose Redis does not listen
    collector = DocRecoveryCollector.connect(f"redis://127.0.0.1:{free_port()}/0", config())

    # Then it still describes every family it exports (a registry checks names so)
    try:
        names = {family.name for family in collector.describe()}
    finally:
        collector.close()
    assert names == FAMILIES


def test_a_redis_url_that_is_not_one_fails_before_serving() -> None:
    with pytest.raises(ValueError, match="scheme"):
        make("http://not-redis/", config(), "127.0.0.1", free_port(), environ={})


def test_the_collector_counts_failures_only_under_known_categories(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # Given failures under every category and a stats field no category owns
    tracker = Tracker(redis_url, config())
    try:
        for category in CATEGORIES:
            tracker.store.record_failure(failure(f"/docs/{category}", 1e9, category))
        redis_client.hset(tracker.keys.stats, "failures:not-a-category", 5)
        collector = DocRecoveryCollector(tracker)

        # When collected
        families = {family.name: family for family in collector.collect()}
    finally:
        tracker.close()

    # Then each category has its one sample, and nothing else does
    labels = [s.labels["category"] for s in families["docrecovery_failures"].samples]
    assert labels == list(CATEGORIES)
    assert {s.value for s in families["docrecovery_failures"].samples} == {1}


# -- the alert rules -----------------------------------------------------------------

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Samples each family type exposes (prometheus_client's suffixes).
SUFFIXES = {"counter": ("_total",), "summary": ("_sum", "_count"), "gauge": ("",)}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_samples() -> set[str]:
    collector = DocRecoveryCollector.connect(f"redis://127.0.0.1:{free_port()}/0", config())
    try:
        families = list(collector.describe())
    finally:
        collector.close()
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


def test_the_alert_rules_cover_what_the_issue_asks_for() -> None:
    names = {rule["alert"] for rule in alert_rules()}

    assert {
        "DocRecoveryTrackerDown",
        "DocRecoveryRunsStopped",
        "DocRecoverySuccessRatioLow",
        "DocRecoveryBreakerOpen",
        "DocRecoveryDeadSetGrowing",
    } <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_names_only_metrics_and_states_the_exporter_serves(
    rule: dict[str, Any],
) -> None:
    expr = rule["expr"]
    used = set(re.findall(r"\b(docrecovery_\w+)", expr))
    states = set(re.findall(r'state="(\w+)"', expr))

    assert used or re.search(r'\bup\{job="docrecovery"\}', expr), "watches nothing of ours"
    assert used <= exported_samples()
    assert states <= set(STATES)
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"]


@pytest.mark.parametrize(
    "command",
    [
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        # the rules' own unit tests: each alert fires on the series it is about
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_rules_their_tests_and_the_scrape_config(
    command: tuple[str, ...],
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")

    done = subprocess.run(
        [promtool, *command], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stdout + done.stderr
