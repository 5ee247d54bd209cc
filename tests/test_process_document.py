"""``tasks.process_document`` through a real in-thread worker, a real Redis and real files."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from recovery import installed
from recovery.keys import Keys, shard_keys, shard_of
from recovery.records import document_id
from tasks import process_document
from tasks.documents import DEFAULT_RESULT_TTL, result_key
from tasks.errors import (
    CorruptedDocument,
    DocumentOutsideRoots,
    DocumentTooLarge,
    UnsupportedDocumentType,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TIMEOUT = 30

pytestmark = pytest.mark.usefixtures("redis_url", "celery_worker")


@pytest.fixture
def keys(celery_app: Celery) -> Keys:
    """Key names under the prefix of the recovery config installed on the app."""
    return Keys(installed(celery_app).config.key_prefix)


def copy_sample(name: str, root: Path) -> str:
    return str(shutil.copy(SAMPLES / name, root / name))


def run(
    path: str, query: str | None = None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = process_document.delay(path, query, metadata).get(timeout=TIMEOUT)
    return result


def failure(path: str) -> BaseException:
    async_result: AsyncResult = process_document.delay(path)
    exc = async_result.get(timeout=TIMEOUT, propagate=False)
    assert async_result.state == "FAILURE"
    assert isinstance(exc, BaseException)
    return exc


def test_task_is_registered_under_its_explicit_name(celery_app: Celery) -> None:
    assert celery_app.tasks["tasks.process_document"] == process_document


def test_worker_returns_the_result_and_stores_it_under_the_documents_key(
    doc_root: Path, redis_client: redis.Redis, keys: Keys
) -> None:
    path = copy_sample("visibility-timeout.pdf", doc_root)

    result = run(path, "visibility timeout", metadata={"source": "upload", "batch": 7})

    assert result["doc_id"] == document_id(path, "visibility timeout")
    assert result["path"] == str(Path(path).resolve())
    assert result["type"] == "pdf"
    assert result["size"] == (SAMPLES / "visibility-timeout.pdf").stat().st_size
    assert len(result["sha256"]) == 64
    assert result["characters"] > 300
    assert result["encoding"] is None
    assert result["chunk_count"] == 1
    assert result["top_chunks"][0]["index"] == 0
    assert result["top_chunks"][0]["score"] > 0
    assert result["top_chunks"][0]["preview"].startswith("Visibility timeout and late")
    assert result["metadata"] == {"source": "upload", "batch": 7}
    assert result["processing_time"] >= 0
    key = result_key(keys, result["doc_id"])
    assert json.loads(redis_client.get(key) or "null") == result
    assert 0 < redis_client.ttl(key) <= DEFAULT_RESULT_TTL


def test_result_ttl_follows_the_environment(
    doc_root: Path, redis_client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRECOVERY_RESULT_TTL", "60")

    result = run(copy_sample("celery-retries.txt", doc_root), "retry")

    assert 0 < redis_client.ttl(result_key(keys, result["doc_id"])) <= 60


def test_reprocessing_a_document_overwrites_its_one_result(
    doc_root: Path, redis_client: redis.Redis, keys: Keys
) -> None:
    path = copy_sample("redis-persistence.md", doc_root)

    first = run(path, "eviction")
    Path(path).write_text("# Eviction\n\nRewritten: noeviction keeps records.\n")
    second = run(path, "eviction")

    assert first["doc_id"] == second["doc_id"]
    assert first["sha256"] != second["sha256"]
    assert redis_client.keys(result_key(keys, "*")) == [result_key(keys, second["doc_id"])]
    assert json.loads(redis_client.get(result_key(keys, second["doc_id"])) or "null") == second


def test_document_without_a_query_is_counted_but_not_ranked(doc_root: Path) -> None:
    result = run(copy_sample("legacy-cp1252.txt", doc_root))

    assert result["chunk_count"] == 1
    assert result["top_chunks"] == []
    assert result["encoding"] == "cp1252"
    assert result["metadata"] == {}


def test_failed_document_keeps_its_type_and_the_same_worker_processes_the_next(
    doc_root: Path, redis_client: redis.Redis, keys: Keys
) -> None:
    # Given a document that does not exist
    missing = str(doc_root / "not-uploaded-yet.txt")

    # When it is processed, then the task fails with the original exception type
    assert type(failure(missing)) is FileNotFoundError
    assert redis_client.get(result_key(keys, document_id(missing, None))) is None

    # And the same worker goes on to process the next document
    assert run(copy_sample("worker-lost.txt", doc_root), "lease")["type"] == "text"


def test_every_bad_input_fails_with_its_own_type_and_the_worker_lives_on(
    doc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRECOVERY_MAX_BYTES", str(40 * 1024))
    (doc_root / "folder").mkdir()
    (doc_root / "big.txt").write_bytes(b"word " * 10_000)
    (doc_root / "garbage.txt").write_bytes(bytes(range(256)) * 4)
    (doc_root / "archive.zip").write_bytes(b"PK\x03\x04")
    (doc_root / "broken.pdf").write_bytes(b"%PDF-1.4\nnothing else")
    (tmp_path / "outside.txt").write_text("secret")
    expected = {
        str(doc_root / "folder"): IsADirectoryError,
        str(tmp_path / "outside.txt"): DocumentOutsideRoots,
        f"{doc_root}/../outside.txt": DocumentOutsideRoots,
        str(doc_root / "big.txt"): DocumentTooLarge,
        str(doc_root / "garbage.txt"): UnsupportedDocumentType,
        str(doc_root / "archive.zip"): UnsupportedDocumentType,
        str(doc_root / "broken.pdf"): CorruptedDocument,
    }

    failures = {path: type(failure(path)) for path in expected}

    assert failures == expected
    assert run(copy_sample("task-states.json", doc_root), "FAILURE")["type"] == "json"


def test_missing_extra_fails_with_module_not_found_and_succeeds_once_installed(
    doc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_sample("document-pipeline.docx", doc_root)

    # Given python-docx is not importable, the task fails with the real import error
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "docx", None)
        assert type(failure(path)) is ModuleNotFoundError

    # When it is importable again, the same document goes through
    assert run(path, "BM25")["type"] == "docx"


@pytest.fixture
def custom_prefix(celery_app: Celery) -> Iterator[str]:
    """Recovery reconfigured with another key prefix for one test, then restored."""
    recovery = installed(celery_app)
    original = recovery.config
    recovery.configure(original.replace(key_prefix="otherapp"))
    yield "otherapp"
    recovery.configure(original)


def test_result_key_follows_the_configured_key_prefix(
    doc_root: Path, redis_client: redis.Redis, custom_prefix: str
) -> None:
    result = run(copy_sample("worker-failures.csv", doc_root), "MemoryError")

    assert redis_client.exists(result_key(Keys(custom_prefix), result["doc_id"])) == 1
    assert redis_client.exists(result_key(Keys(), result["doc_id"])) == 0


@pytest.fixture
def three_shards(celery_app: Celery) -> Iterator[int]:
    """Recovery reconfigured with three shards for one test, then restored."""
    recovery = installed(celery_app)
    original = recovery.config
    recovery.configure(original.replace(key_prefix="sharded", shards=3))
    yield 3
    recovery.configure(original)


def test_a_result_is_kept_in_its_documents_shard(
    doc_root: Path, redis_client: redis.Redis, three_shards: int
) -> None:
    # Given a document filed in a shard other than the first (where the run lock lives)
    sample = (SAMPLES / "worker-failures.csv").read_bytes()
    path = next(
        p
        for p in (doc_root / f"doc-{n}.csv" for n in range(100))
        if shard_of(document_id(str(p), "MemoryError"), three_shards) != 0
    )
    path.write_bytes(sample)

    # When it is processed
    doc_id = run(str(path), "MemoryError")["doc_id"]

    # Then its result is in its own shard's keys, and only there
    shards = shard_keys("sharded", three_shards)
    mine = shards[shard_of(doc_id, three_shards)]
    assert redis_client.exists(result_key(mine, doc_id)) == 1
    assert [redis_client.exists(result_key(k, doc_id)) for k in shards].count(1) == 1
