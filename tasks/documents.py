"""``tasks.process_document``: read a document, extract its text, rank it, store it.

::

    result = process_document.delay("/data/docs/guide.pdf", query="visibility timeout")
    result.get()["top_chunks"][0]["preview"]

The steps live in their own modules (``tasks.paths`` → ``tasks.extract`` →
``tasks.scoring``); this one runs them and stores the result as JSON at
``Keys(key_prefix).result(doc_id)``, under the prefix of the recovery config installed
on the app, with a TTL (``DOCRECOVERY_RESULT_TTL`` seconds, default 7 days). The id is
``recovery.records.document_id(document_path, query)``, the same one the recovery
system files a failure under, so re-running a document overwrites its result instead
of adding one.

Nothing is retried here (no ``autoretry_for``, no ``self.retry``): every failure
propagates with its own type, and the recovery system installed on the app decides
from that type whether and when to try again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Any

import redis
from celery import Task

from recovery import TrackedTask, installed
from recovery.keys import Keys
from recovery.records import document_id
from tasks.app import app
from tasks.extract import extract
from tasks.paths import int_setting, read_document
from tasks.scoring import chunk_text, top_chunks

RESULT_TTL_ENV = "DOCRECOVERY_RESULT_TTL"
DEFAULT_RESULT_TTL = 7 * 24 * 3600


@functools.cache
def redis_client(url: str) -> redis.Redis:
    """One client, and so one connection pool, per URL for every task of the process."""
    return redis.Redis.from_url(url)


@app.task(name="tasks.process_document", bind=True, base=TrackedTask)  # type: ignore[untyped-decorator]
def process_document(
    self: Task,
    document_path: str,
    query: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Process one document and return (and store) its JSON-ready result."""
    started = time.perf_counter()
    document = read_document(document_path)
    extraction = extract(document.path.name, document.data)
    chunks = chunk_text(extraction.text)
    doc_id = document_id(document_path, query)
    result: dict[str, Any] = {
        "doc_id": doc_id,
        "path": str(document.path),
        "type": extraction.type,
        "size": len(document.data),
        "sha256": hashlib.sha256(document.data).hexdigest(),
        "characters": len(extraction.text),
        "encoding": extraction.encoding,
        "chunk_count": len(chunks),
        "query": query,
        "top_chunks": [chunk.as_dict() for chunk in top_chunks(chunks, query)],
        "metadata": metadata or {},
    }
    result["processing_time"] = round(time.perf_counter() - started, 6)
    ttl = int_setting(RESULT_TTL_ENV, DEFAULT_RESULT_TTL)
    key = Keys(installed(self.app).config.key_prefix).result(doc_id)
    redis_client(self.app.conf.broker_url).set(key, json.dumps(result), ex=ttl)
    return result
