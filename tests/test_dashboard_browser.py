"""The dashboard in a real headless browser: Debian's chromium through chromium-driver
(selenium), the dashboard served by uvicorn on a free port, real Celery workers.

The data set is set up through the tracker, as a worker would have recorded it, over
real files under the workers' document root. The group-retry test screenshots the
overview; `make screenshot` (DOCRECOVERY_SCREENSHOT=docs/dashboard.png) keeps it as the
README's, an ordinary run writes it to its temporary directory so the tree stays clean.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import WorkerProcess
from faults.support import wait_for
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from recovery.access import Credentials
from recovery.config import RecoveryConfig
from recovery.dashboard import create_app
from recovery.records import FailedDocumentRecord
from recovery.signatures import signature
from recovery.store import Tracker

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Debian's chromium and chromium-driver are not installed "
        "(`make test-tools` installs them when run as root)",
    ),
    pytest.mark.slow,
]

CONFIG = RecoveryConfig.from_mapping({"retry_jitter": 0.0, "min_retry_interval_hours": 0.0})
TIMEOUT = "SoftTimeLimitExceeded: conversion took longer than 270 s"
TIMEOUT_GROUP = signature("SoftTimeLimitExceeded", TIMEOUT)
WORKER_SECONDS = 60.0
#: How long a lookup waits for an element to appear (a page still loading).
WAIT_SECONDS = 5


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(WAIT_SECONDS)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve(redis_url: str) -> Iterator[Callable[..., str]]:
    """Factory: the dashboard over the test's Redis, served by uvicorn in a thread;
    returns its base URL. Every server started is stopped afterwards."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(credentials: Credentials | None = None) -> str:
        port = free_port()
        app = create_app(redis_url, CONFIG, credentials=credentials or Credentials())
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, 10, "the dashboard to listen")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def data_set(redis_url: str, doc_root: Path) -> Iterator[dict[str, Any]]:
    """9 failed documents: 3 timeouts of one error group (worker w1, one query), 2
    missing files (w2), 2 out of memory (w3), 2 dead (permanent, w1). Every file but
    the missing ones exists and processes fine now."""
    tracker = Tracker(redis_url, CONFIG)
    ids: dict[str, list[str]] = {}
    specs = [
        ("timeout", 3, TIMEOUT, "w1", "visibility timeout"),
        ("file_not_found", 2, "FileNotFoundError: [Errno 2] No such file", "w2", None),
        ("memory", 2, "MemoryError: worker out of memory", "w3", None),
        ("permanent", 2, "ValueError: unsupported document format", "w1", None),
    ]
    for category, count, message, worker, query in specs:
        for n in range(count):
            path = doc_root / f"{category}-{n}.txt"
            if category != "file_not_found":
                path.write_text(f"A {category} document about Celery workers and recovery.\n")
            record = FailedDocumentRecord(
                document_path=str(path),
                task_id=f"task-{category}-{n}",
                error_message=message,
                error_type=message.split(":")[0],
                error_category=category,
                worker_id=worker,
                query=query,
                args=[str(path)] if query is None else [str(path), query],
                failure_timestamp=time.time() - 120 - n * 30,
            )
            tracker.store.record_failure(record)
            ids.setdefault(category, []).append(record.doc_id)
    yield {"ids": ids, "tracker": tracker}
    tracker.close()


def text(browser: WebDriver, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def present(browser: WebDriver, css: str) -> list[Any]:
    """Elements matching ``css`` now, without waiting for more to appear."""
    browser.implicitly_wait(0)
    try:
        return browser.find_elements(By.CSS_SELECTOR, css)
    finally:
        browser.implicitly_wait(WAIT_SECONDS)


def follow(browser: WebDriver, target: str | WebElement) -> None:
    """Click ``target`` (a link or button, or its id) and wait until its page has been
    replaced, so what the test reads next is the new page, not the old one unloading."""
    page = browser.find_element(By.TAG_NAME, "html")
    element = browser.find_element(By.ID, target) if isinstance(target, str) else target
    element.click()
    # mid-navigation, Chromium may answer the old page's lookup with an inspector error
    # ("Node with given id does not belong to the document") instead of "stale": polled
    # again, it is stale
    WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(page)
    )


def rows(browser: WebDriver) -> list[str]:
    """The document ids listed on the documents page (once it has loaded)."""
    browser.find_element(By.ID, "documents")
    return [str(row.get_attribute("data-doc-id")) for row in present(browser, "tr[data-doc-id]")]


@pytest.mark.usefixtures("data_set")
def test_the_overview_shows_the_numbers_of_a_known_data_set(
    browser: WebDriver, serve: Callable[..., str]
) -> None:
    browser.get(serve())

    assert text(browser, "total-tracked") == "9"
    assert text(browser, "total-due") == "7"
    assert text(browser, "total-dead") == "2"
    assert text(browser, "total-waiting") == "0"
    categories = browser.find_element(By.ID, "by-category").text
    assert "timeout 3" in categories
    assert "memory 2" in categories
    workers = browser.find_element(By.ID, "by-worker").text
    assert "w1 5" in workers


def test_a_filter_narrows_the_list(
    browser: WebDriver, serve: Callable[..., str], data_set: dict[str, Any]
) -> None:
    browser.get(f"{serve()}/documents")
    assert len(rows(browser)) == 7

    browser.find_element(By.NAME, "category").send_keys("memory")
    follow(browser, "apply-filters")

    assert sorted(rows(browser)) == sorted(data_set["ids"]["memory"])
    assert browser.find_element(By.NAME, "category").get_attribute("value") == "memory"


def test_retry_on_a_dead_document_resubmits_it_and_a_worker_processes_it(
    browser: WebDriver,
    serve: Callable[..., str],
    data_set: dict[str, Any],
    worker_process: Callable[..., WorkerProcess],
) -> None:
    worker = worker_process("w1")
    dead = data_set["ids"]["permanent"][0]
    browser.get(f"{serve()}/documents?tab=dead")
    assert dead in rows(browser)

    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-doc-id="{dead}"]')
    follow(browser, row.find_element(By.CSS_SELECTOR, "button.retry-one"))
    assert "/permanent-0.txt" in text(browser, "confirm-list")
    follow(browser, "confirm")

    assert text(browser, "result") == "1 resubmitted, 0 skipped"
    tracker: Tracker = data_set["tracker"]
    wait_for(
        lambda: tracker.reports.get_record(dead) is None,
        WORKER_SECONDS,
        "the worker to process the retried document",
        worker.log,
    )
    follow(browser, "back")
    assert dead not in rows(browser)
    assert data_set["ids"]["permanent"][1] in rows(browser)


def test_an_error_group_is_retried_as_a_whole(
    browser: WebDriver,
    serve: Callable[..., str],
    data_set: dict[str, Any],
    worker_process: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    worker = worker_process("w1")
    base = serve()
    browser.get(f"{base}/groups")
    group = browser.find_element(By.CSS_SELECTOR, f'tr[data-signature="{TIMEOUT_GROUP}"]')
    assert group.find_element(By.CSS_SELECTOR, ".count").text == "3"

    follow(browser, group.find_element(By.CSS_SELECTOR, "button.retry-group"))
    assert f"error group {TIMEOUT_GROUP}: 3 document(s)" in browser.title + browser.page_source
    follow(browser, "confirm")

    assert text(browser, "result") == "3 resubmitted, 0 skipped"
    tracker: Tracker = data_set["tracker"]
    wait_for(
        lambda: tracker.reports.status()["total_failed_documents"] == 6,
        WORKER_SECONDS,
        "the worker to process the group",
        worker.log,
    )
    browser.get(f"{base}/documents?signature={TIMEOUT_GROUP}")
    assert rows(browser) == []
    assert browser.find_element(By.ID, "no-documents").is_displayed()

    # the overview counts the three recoveries; its screenshot is the README's
    browser.get(base)
    assert text(browser, "total-tracked") == "6"
    assert text(browser, "success-ratio") == "100%"
    assert "3 recovered" in text(browser, "series-totals")
    screenshot = Path(os.environ.get("DOCRECOVERY_SCREENSHOT") or tmp_path / "dashboard.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))


@pytest.mark.usefixtures("data_set")
def test_an_unauthenticated_request_is_refused(
    browser: WebDriver, serve: Callable[..., str]
) -> None:
    # Given a dashboard that takes a bearer token (scripts) and one with basic auth
    by_token = serve(Credentials(token="t0ken"))
    by_password = serve(Credentials(user="ops", password="s3cret"))

    # Then a browser without credentials sees the refusal, not the data
    browser.get(by_token)
    assert "authentication required" in browser.page_source
    assert not present(browser, "#total-tracked")
    browser.get(by_password)
    assert not present(browser, "#total-tracked")

    # and one that gives the user and password sees the overview, signed in
    browser.get(by_password.replace("http://", "http://ops:s3cret@"))
    assert text(browser, "who") == "ops"
    assert text(browser, "total-tracked") == "9"
