"""The failed-document record: its id, its bounded message, its lossless Redis encoding."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import zstandard

from recovery.api import FailedDocumentsTracker
from recovery.codec import decode_body, encode_body
from recovery.config import RecoveryConfig
from recovery.errors import CorruptRecord
from recovery.records import FailedDocumentRecord, bound_message, document_id
from recovery.signatures import signature

T0 = 1_714_000_000.123456


@pytest.fixture
def tracker(redis_url: str) -> Iterator[FailedDocumentsTracker]:
    config = RecoveryConfig(retry_jitter=0.0, min_retry_interval_hours=1.0)
    made = FailedDocumentsTracker(redis_url, config)
    yield made
    made.close()


def stored(tracker: FailedDocumentsTracker, record: FailedDocumentRecord) -> FailedDocumentRecord:
    """Write ``record`` with the tracker and read it back."""
    tracker.store.record_failure(record)
    read = tracker.reports.get_record(record.doc_id)
    assert read is not None
    return read


def expected_after_first_failure(record: FailedDocumentRecord) -> dict[str, Any]:
    """The record as the tracker keeps it: the fields the script owns are its own."""
    return {
        **dataclasses.asdict(record),
        "retry_count": 0,
        "failure_count": 1,
        "state": "failed",
        "state_reason": "",
        "first_failure_timestamp": record.failure_timestamp,
        "next_retry_at": record.failure_timestamp + 3600.0,
        "signature": signature(record.error_type, record.error_message),
        # its history: this failure, as record_failure.lua notes it
        "history": "\t".join(
            [
                "failed",
                repr(record.failure_timestamp),
                record.task_id,
                record.worker_id or "",
                record.error_category,
                f"{record.time_limit:g}" if record.time_limit else "",
            ]
        ),
    }


def test_document_id_is_stable_and_pinned() -> None:
    # These ids key existing records: changing the hash is a data migration.
    assert document_id("/docs/report.pdf", "revenue 2023") == "816e63c349de4636ebf1"
    assert document_id("/docs/report.pdf") == "be93cac55989fce71591"


def test_document_id_tells_queries_apart_but_not_none_from_empty() -> None:
    path = "/docs/report.pdf"

    assert document_id(path, "a") != document_id(path, "b")
    assert document_id(path, None) == document_id(path, "")
    assert document_id(path, "x") != document_id(path + "x")
    assert len(document_id(path)) == 20


def test_a_record_round_trips_through_redis_losslessly(
    tracker: FailedDocumentsTracker,
) -> None:
    # Given a record that uses every field, with non-ASCII text everywhere
    path = "/docs/Geschäftsbericht 2023 – 报告.pdf"
    record = FailedDocumentRecord(
        document_path=path,
        task_id="0b5d7c1e-6f8a-4a63-9b54-4e0f3c2a1d9e",
        error_message="ValueError: page 3 — ungültige Kodierung ✗\nline 2",
        failure_timestamp=T0,
        recovery_attempts=2,
        query="Umsatz & Gewinn?",
        worker_id="celery@wörker-1",
        metadata={
            "source": "s3://bücher",
            "pages": 12,
            "ratio": 0.25,
            "tags": ["a", "ü"],
            "nested": {"none": None, "flag": True},
        },
        task_name="tasks.process_document",
        args=[path, "Umsatz & Gewinn?", {"source": "s3://bücher"}],
        kwargs={"priority": 3, "options": {"ocr": False}},
        error_type="ValueError",
        error_category="other",
        fingerprint="0123456789abcdef",
        time_limit=300,
    )

    # When the tracker stores it and reads it back
    read = stored(tracker, record)

    # Then every field is what was written, the script's own fields as it set them
    assert dataclasses.asdict(read) == expected_after_first_failure(record)
    assert read.doc_id == record.doc_id
    assert type(read.failure_timestamp) is float
    assert read.metadata["nested"] == {"none": None, "flag": True}


def test_a_missing_query_reads_back_as_none_and_a_given_one_as_itself(
    tracker: FailedDocumentsTracker,
) -> None:
    without = FailedDocumentRecord("/docs/a.txt", "t1", "boom", failure_timestamp=T0)
    with_query = FailedDocumentRecord("/docs/a.txt", "t2", "boom", failure_timestamp=T0, query="q")

    assert stored(tracker, without).query is None
    assert stored(tracker, with_query).query == "q"
    assert without.doc_id != with_query.doc_id


def test_a_path_that_is_not_utf8_round_trips_byte_for_byte(
    tracker: FailedDocumentsTracker, redis_url: str
) -> None:
    # Given a Latin-1 file name as Python sees it on a UTF-8 system (surrogateescape)
    raw_path = b"/docs/caf\xe9-\xff.txt"
    path = os.fsdecode(raw_path)
    assert "\udce9" in path
    record = FailedDocumentRecord(
        path, "t1", "boom", failure_timestamp=T0, args=[path], query=os.fsdecode(b"r\xe9sum\xe9")
    )

    # When it is stored and read back
    read = stored(tracker, record)

    # Then the path is the same string, and Redis holds the original bytes (the query,
    # its own field, byte for byte; the path inside the compressed body)
    assert dataclasses.asdict(read) == expected_after_first_failure(record)
    assert os.fsencode(read.document_path) == raw_path
    binary = redis.Redis.from_url(redis_url)
    try:
        key = tracker.keys.record(record.doc_id)
        assert binary.hget(key, "query") == b"r\xe9sum\xe9"
        raw_body = binary.hget(key, "body")
        assert isinstance(raw_body, bytes)
        body = decode_body(raw_body)
        assert os.fsencode(body["path"]) == raw_path
    finally:
        binary.close()


def test_to_redis_writes_strings_and_a_compressed_body_omitting_empty_values() -> None:
    record = FailedDocumentRecord("/docs/a.txt", "t1", "boom", failure_timestamp=T0)

    fields = record.to_redis()

    body = fields.pop("body")
    assert isinstance(body, bytes)
    assert decode_body(body) == {
        "path": "/docs/a.txt",
        "task": record.task_name,
        "msg": "boom",
    }
    assert all(isinstance(value, str) for value in fields.values())
    # empty or zero optional fields cost memory per record and are left out
    for absent in ("query", "worker", "tlimit", "attempts", "fp", "reason", "rec_at", "sig"):
        assert absent not in fields
    assert fields["last"] == repr(T0)
    assert (fields["state"], fields["retries"], fields["failures"]) == ("failed", "0", "1")
    assert FailedDocumentRecord.from_redis("k", {**fields, "body": body}) == record


def test_a_bulky_traceback_costs_a_fraction_of_its_size() -> None:
    frames = "".join(
        f'  File "/app/pipeline/step_{n}.py", line {n * 7}, in run\n' for n in range(40)
    )
    record = FailedDocumentRecord("/docs/a.txt", "t1", frames + "ValueError: bad page")

    assert len(record.body()) < len(record.error_message) / 3


def test_from_redis_of_to_redis_is_the_same_record() -> None:
    record = FailedDocumentRecord(
        "/docs/a.txt",
        "t1",
        "boom",
        failure_timestamp=T0,
        query="q",
        metadata={"k": [1, 2]},
        args=["/docs/a.txt"],
        last_recovery_at=T0 + 1,
        time_limit=30,
        signature="0123456789ab",
    )

    assert FailedDocumentRecord.from_redis("k", record.to_redis()) == record


def test_an_empty_optional_number_reads_as_none() -> None:
    fields = FailedDocumentRecord("/a", "t", "m", failure_timestamp=T0).to_redis()

    read = FailedDocumentRecord.from_redis("k", {**fields, "rec_at": "", "tlimit": ""})

    assert (read.last_recovery_at, read.time_limit) == (None, None)


def test_from_redis_names_every_missing_required_field() -> None:
    with pytest.raises(CorruptRecord) as caught:
        FailedDocumentRecord.from_redis("{docrecovery}:doc:x", {"path": "/a", "state": "failed"})

    assert caught.value.key == "{docrecovery}:doc:x"
    for name in ("task_id", "cat", "last", "retries", "failures", "body"):
        assert name in caught.value.reason
    assert "state" not in caught.value.reason
    assert "{docrecovery}:doc:x" in str(caught.value)


@pytest.mark.parametrize(
    "compress",
    [zlib.compress, zstandard.ZstdCompressor(level=3).compress],
    ids=["zlib", "zstd"],
)
def test_a_body_written_by_an_earlier_version_still_reads(
    compress: Callable[[bytes], bytes],
) -> None:
    # Given a record hash as earlier versions wrote it: zlib JSON, then zstd JSON
    record = FailedDocumentRecord("/docs/old.txt", "t1", "boom", failure_timestamp=T0)
    fields = record.to_redis()
    legacy = {"path": "/docs/old.txt", "task": record.task_name, "msg": "boom"}
    fields["body"] = compress(json.dumps(legacy).encode("ascii"))

    # Then it decodes to the same record
    read = FailedDocumentRecord.from_redis("k", fields)
    assert (read.document_path, read.error_message) == ("/docs/old.txt", "boom")


@pytest.mark.parametrize(
    ("field", "raw", "named"),
    [
        ("retries", "three", "'retries'"),
        ("retries", "02", "'retries'"),
        ("failures", " 2", "'failures'"),
        ("attempts", "1_0", "'attempts'"),
        ("last", "yesterday", "'last'"),
        ("body", "not lz4", "'body' cannot be read"),
        ("body", "\x04\x22\x4d\x18 cut short", "'body' cannot be read"),
        ("state", "sleeping", "unknown state 'sleeping'"),
    ],
)
def test_from_redis_rejects_an_undecodable_field_naming_it(
    field: str, raw: str, named: str
) -> None:
    fields = FailedDocumentRecord("/a", "t", "m", failure_timestamp=T0).to_redis()

    with pytest.raises(CorruptRecord, match=named):
        FailedDocumentRecord.from_redis("k", {**fields, field: raw})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"args": 5}, "'args' is not a list"),
        ({"args": ""}, "'args' is not a list"),
        ({"kwargs": "x"}, "'kwargs' is not a dict"),
        ({"meta": [1]}, "'meta' is not a dict"),
        ({"nargs": "2"}, "'nargs' is '2'"),
        ({"nargs": 9}, "'nargs' is '9'"),
    ],
)
def test_from_redis_rejects_a_readable_body_holding_a_field_of_another_type(
    body: dict[str, Any], named: str
) -> None:
    fields = FailedDocumentRecord("/a", "t", "m", failure_timestamp=T0).to_redis()
    raw = encode_body({"path": "/a", "task": "t", **body})

    with pytest.raises(CorruptRecord, match=named):
        FailedDocumentRecord.from_redis("k", {**fields, "body": raw})


def test_a_short_message_is_kept_whole() -> None:
    assert bound_message("short", 200) == "short"
    assert bound_message("x" * 200, 200) == "x" * 200


def test_a_ten_megabyte_message_keeps_its_head_and_tail_within_the_bound() -> None:
    # Given a 10 MB traceback: the type at the top, the cause at the bottom
    head = "Traceback (most recent call last):\n"
    tail = "MemoryError: could not allocate page buffer"
    message = head + "  frame\n" * (10 * 2**20 // 8) + tail

    bounded = bound_message(message, 4000)

    assert len(bounded) == 4000
    assert bounded.startswith(head)
    assert bounded.endswith(tail)
    assert f"[{len(message) - 4000} characters cut]" in bounded


def test_the_tracker_stores_a_huge_message_bounded(tracker: FailedDocumentsTracker) -> None:
    message = "HEAD " + "x" * (10 * 2**20) + " TAIL"
    record = FailedDocumentRecord("/docs/big.txt", "t1", message, failure_timestamp=T0)

    read = stored(tracker, record)

    assert len(read.error_message) == tracker.config.max_error_chars
    assert read.error_message.startswith("HEAD ")
    assert read.error_message.endswith(" TAIL")


def test_failure_age_is_the_age_of_the_failure_timestamp_in_hours_as_the_seed_says() -> None:
    # the seed: "get_failure_age_hours()" of a record whose failure_timestamp it set
    record = FailedDocumentRecord(
        "/a", "t", "m", failure_timestamp=T0, first_failure_timestamp=T0 - 7200
    )

    assert record.get_failure_age_hours(now=T0) == 0.0
    assert record.get_failure_age_hours(now=T0 + 1800) == pytest.approx(0.5)
    assert record.get_failure_age_hours(now=T0 - 99_999) == 0.0


def test_the_first_failure_defaults_to_the_failure_time_and_age_to_the_clock() -> None:
    record = FailedDocumentRecord("/a", "t", "m", failure_timestamp=time.time() - 3600)

    assert record.first_failure_timestamp == record.failure_timestamp
    assert record.get_failure_age_hours() == pytest.approx(1.0, abs=0.01)
