"""The dashboard over HTTP (Starlette's TestClient) against the session's redis-server:
every page and JSON endpoint, every action, credentials, CSRF and bad input."""

from __future__ import annotations

import base64
import html
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from recovery.access import Credentials
from recovery.config import RecoveryConfig
from recovery.dashboard import create_app, serve
from recovery.errors import ConfigError
from recovery.manager import RecoveryManager
from recovery.records import FailedDocumentRecord
from recovery.signatures import signature
from recovery.store import Tracker

CONFIG = RecoveryConfig.from_mapping({"retry_jitter": 0.0, "min_retry_interval_hours": 0.0})
TIMEOUT = "TimeoutError: conversion took longer than 300 s"
MISSING = "FileNotFoundError: [Errno 2] No such file or directory"
BROKEN = "ValueError: unsupported document format"


def failure(path: str, message: str, category: str, worker: str, **kw: Any) -> FailedDocumentRecord:
    return FailedDocumentRecord(
        document_path=path,
        task_id=f"task-{path}",
        error_message=message,
        error_type=message.split(":")[0],
        error_category=category,
        worker_id=worker,
        failure_timestamp=time.time() - 60,
        traceback=f'Traceback (most recent call last):\n  File "x.py", line 1\n{message}',
        **kw,
    )


#: The known data set: 3 timeouts (w1, query q1), 2 missing files (w2), 2 dead (w1).
DATA = [
    failure("/docs/t1.pdf", TIMEOUT, "timeout", "w1", query="q1"),
    failure("/docs/t2.pdf", TIMEOUT, "timeout", "w1", query="q1"),
    failure("/docs/t3.pdf", TIMEOUT, "timeout", "w1", query="q1"),
    failure("/docs/m1.txt", MISSING, "file_not_found", "w2"),
    failure("/docs/m2.txt", MISSING, "file_not_found", "w2"),
    failure("/docs/d1.bin", BROKEN, "permanent", "w1"),
    failure("/docs/d2.bin", BROKEN, "permanent", "w1"),
]
TIMEOUT_GROUP = signature("TimeoutError", TIMEOUT)


@pytest.fixture
def tracker(redis_url: str) -> Iterator[Tracker]:
    tracker = Tracker(redis_url, CONFIG)
    for record in DATA:
        tracker.store.record_failure(record)
    yield tracker
    tracker.close()


ClientFactory = Callable[..., TestClient]


#: Where the clients reach the dashboard: a browser on this machine, by its address.
BASE_URL = "http://127.0.0.1:5580"


@pytest.fixture
def make_client(tracker: Tracker) -> Iterator[ClientFactory]:
    """Factory of clients of a dashboard over the data set's Redis, reached at
    ``base_url`` (by default as a browser on this machine reaches it)."""
    managers: list[RecoveryManager] = []

    def create(
        credentials: Credentials | None = None,
        flower_url: str | None = None,
        base_url: str = BASE_URL,
        **hosts: Any,
    ) -> TestClient:
        manager = RecoveryManager(tracker.url, CONFIG)
        managers.append(manager)
        app = create_app(
            tracker.url,
            CONFIG,
            credentials=credentials or Credentials(),
            flower_url=flower_url,
            manager=manager,
            **hosts,
        )
        return TestClient(app, base_url=base_url)

    yield create
    for manager in managers:
        manager.close()


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


def csrf(client: TestClient) -> dict[str, str]:
    """The header an API client sends, with the cookie the client now holds."""
    return {"X-CSRF-Token": client.get("/api/csrf").json()["csrf_token"]}


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries no CSRF field"
    return found.group(1)


def doc(path: str) -> str:
    """The id of a document of the data set, by its path."""
    return next(r.doc_id for r in DATA if r.document_path == path)


# --- reads --------------------------------------------------------------------------


def test_the_overview_api_counts_the_known_data_set(client: TestClient) -> None:
    data = client.get("/api/overview").json()

    status = data["status"]
    assert (status["total_failed_documents"], status["dead"], status["eligible_for_recovery"]) == (
        7,
        2,
        5,
    )
    assert data["analysis"]["error_categories"] == {
        "timeout": 3,
        "file_not_found": 2,
        "permanent": 2,
    }
    assert data["analysis"]["workers"]["w1"]["tracked"] == 5
    assert data["recoveries_over_time"] == []


def test_the_overview_page_shows_totals_and_charts(client: TestClient) -> None:
    html = client.get("/").text

    assert 'id="total-tracked">7<' in html
    assert 'id="total-dead">2<' in html
    assert 'id="total-due">5<' in html
    assert re.search(r'<th title="timeout">timeout</th>.*?<td class="num">3</td>', html, re.S)
    assert "no recovery run yet" in html


def test_error_groups_one_row_per_signature(client: TestClient) -> None:
    groups = client.get("/api/groups").json()["groups"]

    assert (groups[0]["category"], groups[0]["count"]) == ("timeout", 3)
    assert sorted((g["category"], g["count"]) for g in groups[1:]) == [
        ("file_not_found", 2),
        ("permanent", 2),
    ]
    assert groups[0]["signature"] == TIMEOUT_GROUP
    assert groups[0]["example"] == TIMEOUT
    page = client.get("/groups").text
    assert f'data-signature="{TIMEOUT_GROUP}"' in page
    assert "retry group" in page


def test_document_tabs_and_filters(client: TestClient) -> None:
    def paths(**params: str) -> list[str]:
        reply = client.get("/api/documents", params=params)
        assert reply.status_code == 200, reply.text
        return sorted(d["path"] for d in reply.json()["documents"])

    assert len(paths()) == 5
    assert paths(tab="dead") == ["/docs/d1.bin", "/docs/d2.bin"]
    assert paths(tab="waiting") == []
    assert paths(category="timeout") == ["/docs/t1.pdf", "/docs/t2.pdf", "/docs/t3.pdf"]
    assert paths(worker="w2") == ["/docs/m1.txt", "/docs/m2.txt"]
    assert paths(query="q1", signature=TIMEOUT_GROUP) == paths(category="timeout")
    assert paths(older_than="1") == []
    assert paths(category="") == paths()  # a blank form field means any


def test_documents_page_through_with_the_cursor(client: TestClient) -> None:
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        page = client.get("/api/documents", params=params).json()
        seen += [d["doc_id"] for d in page["documents"]]
        if page["next"] is None:
            break
        params["after"] = page["next"]

    assert len(seen) == len(set(seen)) == 5
    html = client.get("/documents", params={"limit": "2"}).text
    assert 'id="next-page"' in html


def test_a_document_page_shows_every_field_the_traceback_and_flower(
    make_client: ClientFactory,
) -> None:
    client = make_client(flower_url="http://flower.example:5555/")
    doc_id = doc("/docs/t1.pdf")

    data = client.get(f"/api/documents/{doc_id}").json()
    html = client.get(f"/documents/{doc_id}").text

    assert data["record"]["document_path"] == "/docs/t1.pdf"
    assert data["record"]["traceback"].startswith("Traceback")
    assert data["flower"] == "http://flower.example:5555/task/task-/docs/t1.pdf"
    assert [(e["event"], e["task_id"]) for e in data["history"]] == [
        ("failed", "task-/docs/t1.pdf")
    ]
    assert 'id="history"' in html
    assert "Traceback (most recent call last)" in html
    assert 'id="flower"' in html
    assert "worker_id" in html


def test_the_dry_run_preview_changes_nothing(client: TestClient, tracker: Tracker) -> None:
    plan = client.get("/api/preview").json()
    page = client.get("/preview").text

    # the missing files would be held back: their probe fails
    assert len(plan["would_resubmit"]) == 3
    assert sorted(p["why"] for p in plan["would_wait"])[0].startswith("file")
    assert 'id="would-resubmit-count">3<' in page
    assert 'id="would-wait-count">2<' in page
    assert tracker.reports.status()["eligible_for_recovery"] == 5


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tab": "retries"}, "tab 'retries': expected one of failed, waiting, dead"),
        ({"older_than": "-1"}, "older_than '-1': expected a number of hours >= 0"),
        ({"older_than": "soon"}, "older_than 'soon'"),
        ({"older_than": "nan"}, "older_than 'nan'"),
        ({"limit": "0"}, "limit '0': expected a whole number from 1 to 500"),
        ({"limit": "501"}, "limit '501'"),
        # digits to str.isdigit() that int() refuses, and more digits than int() reads
        ({"limit": "\u00b2"}, "limit '\u00b2': expected a whole number"),
        ({"tab": "dead", "limit": "\u2460"}, "limit '\u2460': expected a whole number"),
        ({"limit": "9" * 5000}, "expected a whole number from 1 to 500"),
        ({"after": "yesterday"}, "bad cursor 'yesterday'"),
        ({"signature": "timeout"}, "signature 'timeout': expected 12 hex digits"),
        ({"categry": "timeout"}, "unknown parameter(s) categry"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    reply = client.get("/api/documents", params=params)
    page = client.get("/documents", params=params)

    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert page.status_code == 400
    assert "error-message" in page.text


def test_unknown_and_malformed_document_ids(client: TestClient) -> None:
    unknown = client.get("/api/documents/" + "0" * 20)
    malformed = client.get("/api/documents/not-an-id")
    page = client.get("/documents/" + "0" * 20)

    assert unknown.status_code == 404
    assert "no tracked document '00000000000000000000'" in unknown.json()["error"]
    assert malformed.status_code == 400
    assert "expected 20 hex digits" in malformed.json()["error"]
    assert page.status_code == 404


def test_unknown_parameters_of_other_endpoints_are_refused(client: TestClient) -> None:
    for path in ("/api/overview", "/api/groups", "/api/preview"):
        reply = client.get(path, params={"x": "1"})
        assert reply.status_code == 400, path
        assert "unknown parameter(s) x" in reply.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/retry", "[1]", "the body must be a JSON object"),
        ("/api/retry", "{", "the body must be a JSON object"),
        ("/api/retry", '{"ids": ["abc"]}', "not a document id: 'abc'"),
        ("/api/retry", '{"ids": []}', "no document ids given"),
        ("/api/retry", '{"ids": "x"}', '"ids" must be a list'),
        ("/api/retry", '{"ids": [], "signature": "x"}', "give exactly one of"),
        ("/api/delete", '{"signature": "zz"}', "signature 'zz': expected 12 hex digits"),
        ("/api/delete", '{"filter": {"tab": "waiting"}}', "choose the failed or dead tab"),
        ("/api/delete", '{"filter": {"age": "1"}}', "unknown parameter(s) age"),
        ("/api/purge", '{"all": true}', "purge takes no parameters"),
    ],
)
def test_bad_action_bodies_are_refused(
    client: TestClient, tracker: Tracker, path: str, body: str, message: str
) -> None:
    reply = client.post(path, content=body, headers=csrf(client))

    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert tracker.reports.status()["total_failed_documents"] == 7


def test_an_unknown_action_is_not_found(client: TestClient) -> None:
    reply = client.post("/api/explode", content="{}", headers=csrf(client))

    assert reply.status_code == 404
    assert "no action 'explode'" in reply.json()["error"]


# --- CSRF -------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, tracker: Tracker) -> None:
    client.get("/")  # the browser has its cookie, the attacker's form has no token
    ids = {"ids": [doc("/docs/d1.bin")]}

    api = client.post("/api/delete", json=ids)
    form = client.post("/actions/delete", data={**ids, "confirm": "yes"})

    assert api.status_code == 403
    assert "missing CSRF token" in api.json()["error"]
    assert form.status_code == 403
    assert "missing CSRF token" in form.text
    assert tracker.reports.status()["dead"] == 2


def test_a_csrf_token_from_another_browser_is_refused(
    make_client: ClientFactory, tracker: Tracker
) -> None:
    theirs, mine = make_client(), make_client()
    token = form_token(theirs.get("/").text)
    mine.get("/")

    reply = mine.post(
        "/actions/delete",
        data={"csrf_token": token, "ids": doc("/docs/d1.bin"), "confirm": "yes"},
    )

    assert reply.status_code == 403
    assert "does not match this browser&#39;s dashboard cookie" in reply.text
    assert tracker.reports.status()["dead"] == 2


# --- actions ----------------------------------------------------------------------------


def test_a_page_action_asks_for_confirmation_then_acts_and_logs_who(
    client: TestClient, tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    token = form_token(client.get("/documents?tab=dead").text)
    fields = {"csrf_token": token, "ids": doc("/docs/d1.bin"), "back": "/documents?tab=dead"}

    asked = client.post("/actions/retry", data=fields)
    assert asked.status_code == 200
    assert 'id="confirm"' in asked.text
    assert "/docs/d1.bin" in asked.text
    assert tracker.reports.get_record(doc("/docs/d1.bin")).state == "dead"  # type: ignore[union-attr]

    with caplog.at_level(logging.INFO, logger="recovery.dashboard"):
        done = client.post("/actions/retry", data={**fields, "confirm": "yes"})

    assert 'id="result"' in done.text
    assert "1 resubmitted, 0 skipped" in done.text
    assert tracker.reports.get_record(doc("/docs/d1.bin")).state == "sent"  # type: ignore[union-attr]
    assert "retry of 1 chosen document(s) by anonymous@testclient" in caplog.text


@pytest.mark.parametrize(
    ("back", "link"),
    [
        ("/documents?tab=dead", "/documents?tab=dead"),
        ("javascript:alert(document.cookie)", "/"),
        ("//attacker.example/", "/"),
        ("/\\attacker.example/", "/"),
        ("/\t/attacker.example/", "/"),
    ],
)
def test_cancel_and_back_links_lead_only_to_a_page_of_the_dashboard(
    client: TestClient, back: str, link: str
) -> None:
    # Given a form posted with a "back" field its poster chose
    token = form_token(client.get("/").text)
    fields = {"csrf_token": token, "ids": "f" * 20, "back": back}

    # When the dashboard asks for confirmation, then acts
    asked = client.post("/actions/delete", data=fields).text
    done = client.post("/actions/delete", data={**fields, "confirm": "yes"}).text

    # Then Cancel and Back lead to that page when it is the dashboard's, else home
    assert f'<a href="{html.escape(link)}" id="cancel">' in asked
    assert f'<a href="{html.escape(link)}" id="back">' in done


def test_retry_by_ids_resubmits_to_the_queue(client: TestClient, redis_client: redis.Redis) -> None:
    ids = [doc("/docs/t1.pdf"), doc("/docs/d2.bin"), "f" * 20]

    reply = client.post("/api/retry", json={"ids": ids}, headers=csrf(client)).json()

    assert sorted(i["doc_id"] for i in reply["resubmitted"]) == sorted(ids[:2])
    assert reply["skipped"] == ["f" * 20]
    assert redis_client.llen("documents") == 2
    again = client.post("/api/retry", json={"ids": ids[:1]}, headers=csrf(client)).json()
    assert again["skipped"] == ids[:1]  # never enqueued twice


def test_retry_a_whole_error_group(client: TestClient, redis_client: redis.Redis) -> None:
    reply = client.post("/api/retry", json={"signature": TIMEOUT_GROUP}, headers=csrf(client))

    body = reply.json()
    assert body["target"] == f"error group {TIMEOUT_GROUP}: 3 document(s)"
    assert sorted(i["path"] for i in body["resubmitted"]) == [
        "/docs/t1.pdf",
        "/docs/t2.pdf",
        "/docs/t3.pdf",
    ]
    assert redis_client.llen("documents") == 3


def test_delete_by_filter_and_by_group(client: TestClient, tracker: Tracker) -> None:
    headers = csrf(client)
    by_filter = client.post(
        "/api/delete", json={"filter": {"tab": "failed", "worker": "w2"}}, headers=headers
    )
    by_group = client.post("/api/delete", json={"signature": TIMEOUT_GROUP}, headers=headers)

    assert by_filter.json()["deleted"] == 2
    assert by_group.json()["deleted"] == 3
    assert tracker.reports.status()["total_failed_documents"] == 2


def test_purge_dead_and_run_recovery_now(client: TestClient, tracker: Tracker) -> None:
    headers = csrf(client)

    purged = client.post("/api/purge", headers=headers).json()
    ran = client.post("/api/run", headers=headers).json()

    assert purged["purged"] == 2
    assert len(ran["resubmitted"]) == 3
    assert len(ran["waiting"]) == 2  # their files are missing
    status = tracker.reports.status()
    assert (status["dead"], status["in_recovery"], status["waiting"]) == (0, 3, 2)
    overview = client.get("/api/overview").json()
    assert [b["resubmitted"] for b in overview["recoveries_over_time"]] == [3]
    assert sum(overview["waiting_reasons"].values()) == 2


def test_a_run_while_another_holds_the_lock_is_skipped(
    client: TestClient, tracker: Tracker
) -> None:
    with tracker.exclusive(30) as acquired:
        assert acquired
        ran = client.post("/api/run", headers=csrf(client)).json()

    assert ran["skipped"] == "another recovery run holds the lock"
    assert tracker.reports.status()["in_recovery"] == 0


# --- credentials --------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_refuses_a_request_without_credentials(make_client: ClientFactory) -> None:
    client = make_client(Credentials(user="ops", password="s3cret"))

    for path in ("/", "/api/overview", "/static/dashboard.css"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == 'Basic realm="docrecovery"'
    assert client.get("/", headers=basic("ops", "wrong")).status_code == 401
    ok = client.get("/", headers=basic("ops", "s3cret"))
    assert ok.status_code == 200
    assert 'id="who">ops<' in ok.text


def test_a_bearer_token_needs_no_csrf_token(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(Credentials(token="t0ken"))
    auth = {"Authorization": "Bearer t0ken"}

    assert client.get("/api/overview").status_code == 401
    assert client.get("/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
    with caplog.at_level(logging.INFO, logger="recovery.dashboard"):
        reply = client.post("/api/purge", headers=auth)

    assert reply.json()["purged"] == 2
    assert "purge of every dead document by token: 2 purged" in caplog.text


def test_serve_refuses_a_public_address_without_credentials(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("USER", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"DOCRECOVERY_DASHBOARD_{name}", raising=False)

    with pytest.raises(ConfigError, match=r"'host': got '0\.0\.0\.0'; allowed: a loopback"):
        serve(redis_url, CONFIG, host="0.0.0.0", port=1)


# --- DNS rebinding and other origins ---------------------------------------------------


def test_a_name_rebound_to_loopback_gets_neither_a_page_nor_a_purge_without_credentials(
    client: TestClient, tracker: Tracker
) -> None:
    # Given attacker.example made to resolve to 127.0.0.1: its page's requests reach
    # the dashboard under its name, and the browser holds them same-origin to it
    rebound = {"Host": "attacker.example:5580"}
    token = form_token(client.get("/").text)

    # When its script reads the overview for the CSRF token and posts a confirmed purge
    page = client.get("/", headers=rebound)
    purge = client.post(
        "/actions/purge",
        data={"csrf_token": token, "confirm": "yes"},
        headers={**rebound, "Origin": "http://attacker.example:5580"},
    )

    # Then neither is answered, and nothing is purged
    assert page.status_code == 400
    assert "csrf_token" not in page.text
    assert purge.status_code == 400
    assert tracker.reports.status()["dead"] == 2


@pytest.mark.parametrize(
    ("base_url", "hosts"),
    [
        ("http://localhost:5580", {}),
        ("http://[::1]:5580", {}),
        ("http://127.0.0.1", {}),
        ("http://127.0.0.2:5580", {"host": "127.0.0.2"}),
        ("http://[::1]:5580", {"host": "::1"}),
        ("http://dash.internal:5580", {"allowed_hosts": ["Dash.Internal"]}),
        ("http://ops.corp.example", {"allowed_hosts": ["*.corp.example"]}),
        ("http://[fe80::1]", {"allowed_hosts": ["fe80::1"]}),
    ],
)
def test_the_names_of_this_machine_its_address_and_the_allowed_hosts_are_answered(
    make_client: ClientFactory, base_url: str, hosts: dict[str, Any]
) -> None:
    client = make_client(base_url=base_url, **hosts)

    assert client.get("/").status_code == 200
    assert client.post("/api/purge", headers=csrf(client)).json()["purged"] == 2


def test_allowed_hosts_are_the_only_other_names_answered(make_client: ClientFactory) -> None:
    client = make_client(host="127.0.0.1", allowed_hosts=["dash.internal", "*.corp.example"])

    for name in ("dash.internal.evil", "corp.example.evil", "0.0.0.0", "127.0.0.2", "evil"):
        assert client.get("/", headers={"Host": f"{name}:5580"}).status_code == 400, name


def test_a_bad_allowed_host_is_refused_by_name(tracker: Tracker) -> None:
    with pytest.raises(ConfigError, match=r"'allowed host': got 'dash internal'"):
        create_app(tracker.url, CONFIG, credentials=Credentials(), allowed_hosts=["dash internal"])


@pytest.mark.parametrize(
    ("credentials", "auth"),
    [
        (Credentials(token="t0ken"), {"Authorization": "Bearer t0ken"}),
        (Credentials(user="ops", password="s3cret"), basic("ops", "s3cret")),
    ],
)
def test_with_credentials_too_only_its_own_names_and_the_allowed_hosts_are_answered(
    make_client: ClientFactory, credentials: Credentials, auth: dict[str, str]
) -> None:
    # Given a dashboard with credentials on every address, told no name
    client = make_client(credentials, host="0.0.0.0")

    # When a page rebound to it sends the right credentials (guessed, from inside the
    # network) under its own name, and a browser on this machine under localhost
    rebound = client.get("/api/overview", headers={**auth, "Host": "attacker.example:5580"})
    local = client.get("/api/overview", headers={**auth, "Host": "localhost:5580"})

    # Then the rebound request is refused before its credentials count (before: with
    # credentials and no allowed host, any name was answered), the local one answered
    assert rebound.status_code == 400
    assert "total_failed_documents" not in rebound.text
    assert local.is_success
    # And told the name it is reached by, it answers that name too
    named = make_client(credentials, host="0.0.0.0", allowed_hosts=["dash.example.com"])
    assert named.get("/api/overview", headers={**auth, "Host": "dash.example.com"}).is_success


@pytest.mark.parametrize(
    "header",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "http://127.0.0.1:5581"},  # another port: another origin
        {"Origin": "https://127.0.0.1:5580x"},
        {"Origin": "null"},  # an opaque origin: a sandboxed frame, a data: URL
        {"Referer": "http://attacker.example/page.html"},
    ],
)
def test_a_post_whose_origin_or_referer_names_another_site_is_refused(
    client: TestClient, tracker: Tracker, header: dict[str, str]
) -> None:
    # Given a browser holding the dashboard's cookie and token
    token = form_token(client.get("/").text)

    # When another site's page posts with it (no rebinding: the Host is the dashboard's)
    form = client.post(
        "/actions/purge", data={"csrf_token": token, "confirm": "yes"}, headers=header
    )
    api = client.post("/api/purge", headers={**csrf(client), **header})

    # Then both are refused, naming where they came from, and nothing is purged
    assert form.status_code == 403
    assert "cross-origin request refused" in form.text
    assert api.status_code == 403
    assert "cross-origin request refused" in api.json()["error"]
    assert tracker.reports.status()["dead"] == 2


@pytest.mark.parametrize(
    "header",
    [
        {"Origin": BASE_URL},
        {"Origin": BASE_URL.upper()},
        {"Referer": f"{BASE_URL}/documents?tab=dead"},
        {},  # a script sends neither
    ],
)
def test_a_post_from_the_dashboards_own_page_is_taken(
    client: TestClient, tracker: Tracker, header: dict[str, str]
) -> None:
    token = form_token(client.get("/").text)

    done = client.post(
        "/actions/purge", data={"csrf_token": token, "confirm": "yes"}, headers=header
    )

    assert done.status_code == 200
    assert tracker.reports.status()["dead"] == 0
