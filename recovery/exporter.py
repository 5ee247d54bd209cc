"""Prometheus metrics of the failed-document tracker, read from Redis at each scrape.

Workers, beat and recovery runs keep their counters in Redis (the scripts update them
in the same call as the change they count), so the one truth is there: a custom
collector reads it when Prometheus scrapes, with one report script call — O(1) in the
number of tracked documents — and nothing is kept in this process between scrapes::

    docrecovery metrics --host 127.0.0.1 --port 9808        # serve(redis_url, config)
    curl -s localhost:9808/metrics | grep ^docrecovery_

Counts that depend on settings (what is due now, what is past ``max_retry_count``,
which circuit breaker is open) are computed under the ``config`` given here, as
``docrecovery status`` computes them: give the exporter the recovery settings beat
runs with (the same ``DOCRECOVERY_*`` variables). Labels are bounded: ``state`` and
``category`` are closed sets; workers and queries are never labels.

When Redis cannot be reached the scrape still answers, with ``docrecovery_tracker_up
0`` and no other sample, so an alert can tell "tracker down" from "exporter down". A
counter of the stats hash that is not a number (set by hand) leaves only the metrics
read from it without a sample, logged once in a line that says how to repair it: the
rest still holds, and a 500 would blind every alert, and blame the exporter.

Any process can carry the metrics: :func:`register` adds the collector to
prometheus_client's default registry, which is how ``flowerconfig.py`` puts them on
Flower's own ``/metrics``.

Basic auth: set both ``DOCRECOVERY_METRICS_USER`` and ``DOCRECOVERY_METRICS_PASSWORD``
(or neither). Without them the server binds only to a loopback address: the counts are
not secret, but an open port on every interface is a choice to make explicitly.
``/healthcheck`` answers without credentials and without touching Redis (for a
container's health check).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from recovery import policy
from recovery.access import Credentials, Variables, require_private
from recovery.categories import CATEGORIES
from recovery.config import RecoveryConfig
from recovery.errors import CannotListen, CorruptCounter, TrackerError
from recovery.store import Tracker
from recovery.store.reports import CATEGORY_FAILURES, Snapshot

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9808
#: DOCRECOVERY_METRICS_USER and DOCRECOVERY_METRICS_PASSWORD: basic auth.
VARIABLES = Variables.of("metrics")
HEALTHCHECK = "/healthcheck"

#: ``docrecovery_documents{state}``: each tracked document is in exactly one state,
#: so their sum is every tracked document (corrupt records included). The value is
#: the key of that count in ``Reports.status()``.
STATES: Mapping[str, str] = {
    "due": "eligible_for_recovery",  # eligible now: the next run takes it
    "scheduled": "scheduled",  # eligible once its backoff has passed
    "exhausted": "exhausted",  # past this config's max_retry_count
    "in_recovery": "in_recovery",  # claimed, sent or running
    "waiting": "waiting",  # held back: its file is missing or unreadable
    "dead": "dead",  # permanent errors, never retried
    "corrupt": "corrupt",  # unreadable records, kept visible and removable
}

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class DocRecoveryCollector(Collector):
    """Reads the tracker's counters when collected; see the module docstring."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._up: bool | None = None
        self._corrupt: frozenset[str] = frozenset()

    @classmethod
    def connect(
        cls, redis_url: str | None = None, config: RecoveryConfig | None = None
    ) -> DocRecoveryCollector:
        """A collector with a tracker of its own (``REDIS_URL`` and ``DOCRECOVERY_*``
        when not given). Nothing is read from Redis before the first collection."""
        return cls(Tracker(redis_url, config))

    def close(self) -> None:
        self.tracker.close()

    def describe(self) -> Iterable[Metric]:
        """The families without samples: a registry learns the names without a
        round trip to Redis."""
        return [_up(None), *_families(None, self.tracker.config)]

    def collect(self) -> Iterable[Metric]:
        try:
            snapshot = self.tracker.reports.snapshot()
        except TrackerError as exc:
            self._note(up=False, reason=str(exc))
            return [_up(False)]
        self._note(up=True)
        self._note_corrupt(snapshot.corrupt)
        return [_up(True), *_families(snapshot, self.tracker.config)]

    def _note_corrupt(self, corrupt: tuple[CorruptCounter, ...]) -> None:
        """Log a stats field that is not a number when a scrape first meets it, not at
        every scrape."""
        for exc in corrupt:
            if exc.field not in self._corrupt:
                log.warning("docrecovery metrics: left out until repaired: %s", exc)
        self._corrupt = frozenset(exc.field for exc in corrupt)

    def _note(self, *, up: bool, reason: str = "") -> None:
        """Log when the tracker goes down or comes back, not at every scrape."""
        if up == self._up:
            return
        if up:
            log.info("docrecovery metrics: reading the tracker at %s", self.tracker.url)
        else:
            log.warning("docrecovery metrics: tracker unreachable, reporting it down: %s", reason)
        self._up = up


def _up(up: bool | None) -> Metric:
    family = GaugeMetricFamily(
        "docrecovery_tracker_up",
        "1 when the tracker's Redis answered this scrape, 0 when it could not be read.",
    )
    if up is not None:
        family.add_metric([], 1.0 if up else 0.0)
    return family


def _families(snapshot: Snapshot | None, config: RecoveryConfig) -> list[Metric]:
    """Every family but tracker_up; without samples when ``snapshot`` is None."""
    status = snapshot.status if snapshot else {}
    metrics: dict[str, Any] = status.get("recovery_metrics", {})
    stats = snapshot.stats if snapshot else {}
    # stats fields that are not numbers: what is read from them has no sample
    bad = {exc.field for exc in snapshot.corrupt} if snapshot else set()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        if snapshot is not None and value is not None:
            family.add_metric(list(labels.values()), value)
        return family

    def counter(name: str, doc: str, key: str) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc)
        if snapshot is not None and key not in bad:
            family.add_metric([], float(metrics.get(key, 0)))
        return family

    documents = GaugeMetricFamily(
        "docrecovery_documents",
        "Tracked documents by state, under the exporter's recovery settings; "
        "each document is in one state.",
        labels=["state"],
    )
    failures = CounterMetricFamily(
        "docrecovery_failures",
        "Failures of tracked tasks recorded, by error category.",
        labels=["category"],
    )
    breakers = GaugeMetricFamily(
        "docrecovery_breaker_open",
        "1 when the category's circuit breaker is open (its recent recoveries mostly "
        "failed; a run sends only a canary), else 0.",
        labels=["category"],
    )
    duration = SummaryMetricFamily(
        "docrecovery_recovery_duration_seconds",
        "Time from a recovery claim to the resubmitted task's success.",
    )
    if snapshot is not None:
        for state, key in STATES.items():
            documents.add_metric([state], float(status[key]))
        counted = snapshot.failures_by_category()
        for category in CATEGORIES:
            if CATEGORY_FAILURES + category not in bad:
                failures.add_metric([category], float(counted.get(category, 0)))
            window = snapshot.breakers.get(category, "")
            open_ = policy.breaker_state(window, config) == "open"
            breakers.add_metric([category], 1.0 if open_ else 0.0)
        if not bad & {"recovery_time_count", "recovery_time_total"}:
            duration.add_metric(
                [],
                count_value=int(stats.get("recovery_time_count", 0)),
                sum_value=float(stats.get("recovery_time_total", 0)),
            )
    last_run = metrics.get("last_recovery_run")
    interval = config.recovery_interval_minutes * 60 if config.enable_periodic_recovery else None
    return [
        documents,
        gauge(
            "docrecovery_eligible_documents",
            "Documents a recovery run with the exporter's settings would take now "
            '(docrecovery_documents{state="due"}).',
            status.get("eligible_for_recovery"),
        ),
        counter(
            "docrecovery_recovery_attempts",
            "Resubmissions sent by recovery runs and manual retries.",
            "recovery_attempts",
        ),
        counter(
            "docrecovery_successful_recoveries",
            "Resubmitted runs that succeeded.",
            "successful_recoveries",
        ),
        counter(
            "docrecovery_failed_recoveries",
            "Resubmitted runs that failed again.",
            "failed_recoveries",
        ),
        gauge(
            "docrecovery_recovery_success_ratio",
            "Successful over finished recoveries since the tracker began (0 before any); "
            "for a recent ratio use the rates of the two counters.",
            None
            if bad & {"successful_recoveries", "failed_recoveries"}
            else metrics.get("recovery_success_rate"),
        ),
        duration,
        gauge(
            "docrecovery_last_recovery_run_timestamp_seconds",
            "When the last recovery run settled (Redis's clock); no sample before the first.",
            last_run,
        ),
        counter(
            "docrecovery_recovery_runs",
            "Recovery runs and manual retries settled.",
            "recovery_runs",
        ),
        gauge(
            "docrecovery_recovery_interval_seconds",
            "The periodic recovery interval of the exporter's settings; no sample when "
            "periodic recovery is off.",
            interval,
        ),
        failures,
        breakers,
        gauge(
            "docrecovery_in_flight_runs",
            "Tracked task runs checked in and not yet reported (a run whose worker died "
            "stays here until a recovery run's sweep records it).",
            snapshot.in_flight if snapshot else None,
        ),
        counter(
            "docrecovery_dead_trimmed",
            "Dead documents removed because the dead set was over dead_max.",
            "dead_trimmed",
        ),
    ]


def register(
    registry: CollectorRegistry = REGISTRY,
    redis_url: str | None = None,
    config: RecoveryConfig | None = None,
) -> DocRecoveryCollector:
    """Add the docrecovery metrics to ``registry`` (prometheus_client's default one,
    which Flower and ``start_http_server`` serve); ``REDIS_URL`` and ``DOCRECOVERY_*``
    when not given."""
    collector = DocRecoveryCollector.connect(redis_url, config)
    registry.register(collector)
    return collector


# --- the HTTP server ---------------------------------------------------------------


def app(registry: CollectorRegistry, credentials: Credentials) -> WSGIApp:
    """The WSGI app: ``/healthcheck`` open, metrics at any other path, behind basic
    auth when ``credentials`` are given."""
    metrics = make_wsgi_app(registry)

    def serve_request(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTHCHECK:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"OK"]
        if credentials.required and not credentials.who(environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain"),
                    ("WWW-Authenticate", credentials.challenge("docrecovery metrics")),
                ],
            )
            return [b"authentication required\n"]
        served: Iterable[bytes] = metrics(environ, start_response)
        return served

    return serve_request


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape: a slow Redis read never queues the health check."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        # IPv4 or IPv6, as the host resolves
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, handler)


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make(
    redis_url: str,
    config: RecoveryConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    environ: Mapping[str, str] | None = None,
) -> tuple[WSGIServer, DocRecoveryCollector]:
    """The server :func:`serve` runs, bound and not yet serving, and its collector
    (close it after the server). Raises ConfigError for credentials set by half, or
    a non-loopback ``host`` without credentials; CannotListen when it cannot bind."""
    credentials = Credentials.from_env(VARIABLES, environ)
    require_private(host, credentials, VARIABLES, "opening them everywhere is a decision")
    registry = CollectorRegistry(auto_describe=True)
    collector = register(registry, redis_url, config)
    try:
        server = make_server(
            host,
            port,
            app(registry, credentials),
            server_class=_Server,
            handler_class=_Handler,
        )
    except OSError as exc:
        collector.close()
        raise CannotListen(host, port, exc) from exc
    return server, collector


def serve(
    redis_url: str, config: RecoveryConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve ``/metrics`` on ``host:port`` until interrupted (blocking); see the module
    docstring for auth and the bind rule."""
    server, collector = make(redis_url, config, host, port)
    log.info(
        "docrecovery metrics on http://%s:%d/metrics (%s)",
        host,
        server.server_port,
        "basic auth" if Credentials.from_env(VARIABLES).required else "no auth, loopback only",
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        collector.close()


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "STATES",
    "VARIABLES",
    "DocRecoveryCollector",
    "app",
    "make",
    "register",
    "serve",
]
