"""Every Redis key name, pinned: changing one of these strings is a data migration."""

from __future__ import annotations

from importlib import resources

import pytest
import redis
from redis.crc import key_slot

from recovery.api import FailedDocumentsTracker
from recovery.config import RecoveryConfig
from recovery.keys import DEFAULT_PREFIX, LANE, LEVEL, Keys
from recovery.records import FailedDocumentRecord
from recovery.store import Settlement

#: The key names docrecovery uses, by the attribute that builds them.
NAMES = {
    "due": "due",
    "failed": "failed",
    "corrupt": "corrupt",
    "claimed": "claimed",
    "dead": "dead",
    "waiting": "waiting",
    "imports": "imports",
    "superseded": "superseded",
    "deleted": "deleted",
    "replayed_successes": "replayed:successes",
    "inflight": "inflight",
    "inflight_tasks": "inflight:tasks",
    "stats": "stats",
    "by_category": "agg:category",
    "by_worker": "agg:worker",
    "by_query": "agg:query",
    "worker_failures": "agg:worker_failures",
    "worker_successes": "agg:worker_successes",
    "signatures": "agg:signature",
    "signature_info": "signature:info",
    "signature_last": "signature:last",
    "query_failures": "agg:query_failures",
    "query_successes": "agg:query_successes",
    "fingerprints": "env:fingerprints",
    "generations": "env:generations",
    "breakers": "breakers",
    "run_lock": "lock:run",
    "series": "series:recoveries",
    "series_buckets": "series:buckets",
    "beat": "beat",
}


def every_name(keys: Keys) -> list[str]:
    return [getattr(keys, attr) for attr in NAMES] + [
        keys.record("abc"),
        keys.app("result", "abc"),
        keys.settled("abc"),
    ]


def test_every_key_the_module_builds_is_pinned_here() -> None:
    # A key added to recovery/keys.py without a pin here fails this test.
    properties = {name for name, value in vars(Keys).items() if isinstance(value, property)}

    assert properties == set(NAMES)


def test_the_default_prefix_is_docrecovery() -> None:
    assert DEFAULT_PREFIX == "docrecovery"
    assert Keys() == Keys("docrecovery")


def test_default_key_names_are_pinned() -> None:
    keys = Keys()

    assert keys.due == "{docrecovery}:due"
    assert keys.failed == "{docrecovery}:failed"
    assert keys.corrupt == "{docrecovery}:corrupt"
    assert keys.claimed == "{docrecovery}:claimed"
    assert keys.dead == "{docrecovery}:dead"
    assert keys.waiting == "{docrecovery}:waiting"
    assert keys.imports == "{docrecovery}:imports"
    assert keys.superseded == "{docrecovery}:superseded"
    assert keys.inflight == "{docrecovery}:inflight"
    assert keys.inflight_tasks == "{docrecovery}:inflight:tasks"
    assert keys.stats == "{docrecovery}:stats"
    assert keys.by_category == "{docrecovery}:agg:category"
    assert keys.by_worker == "{docrecovery}:agg:worker"
    assert keys.by_query == "{docrecovery}:agg:query"
    assert keys.worker_failures == "{docrecovery}:agg:worker_failures"
    assert keys.worker_successes == "{docrecovery}:agg:worker_successes"
    assert keys.signatures == "{docrecovery}:agg:signature"
    assert keys.signature_info == "{docrecovery}:signature:info"
    assert keys.signature_last == "{docrecovery}:signature:last"
    assert keys.query_failures == "{docrecovery}:agg:query_failures"
    assert keys.query_successes == "{docrecovery}:agg:query_successes"
    assert keys.fingerprints == "{docrecovery}:env:fingerprints"
    assert keys.generations == "{docrecovery}:env:generations"
    assert keys.breakers == "{docrecovery}:breakers"
    assert keys.run_lock == "{docrecovery}:lock:run"
    assert keys.beat == "{docrecovery}:beat"
    assert keys.record("816e63c349de4636ebf1") == "{docrecovery}:doc:816e63c349de4636ebf1"
    assert keys.settled("9f86d081884c7d65") == "{docrecovery}:settled:9f86d081884c7d65"
    assert (
        keys.app("result", "816e63c349de4636ebf1")
        == "{docrecovery}:app:result:816e63c349de4636ebf1"
    )


@pytest.mark.parametrize(("attr", "suffix"), sorted(NAMES.items()))
def test_a_custom_prefix_changes_only_the_hash_tag(attr: str, suffix: str) -> None:
    assert getattr(Keys("acme-prod"), attr) == "{acme-prod}:" + suffix


def test_record_keys_under_a_custom_prefix_are_pinned() -> None:
    keys = Keys("acme-prod")

    assert keys.record("abc") == "{acme-prod}:doc:abc"
    assert keys.app("result", "abc") == "{acme-prod}:app:result:abc"
    assert keys.settled("abc") == "{acme-prod}:settled:abc"


@pytest.mark.parametrize("prefix", [DEFAULT_PREFIX, "acme-prod"])
def test_every_key_shares_one_hash_tag_and_so_one_cluster_slot(prefix: str) -> None:
    names = every_name(Keys(prefix))

    assert all(name.startswith("{" + prefix + "}:") for name in names)
    assert len(set(names)) == len(names)
    assert {key_slot(name.encode()) for name in names} == {key_slot(prefix.encode())}


def test_no_key_name_has_an_empty_segment() -> None:
    # rq once shipped ``rq:job::<id>``; our names never hold a double colon.
    for name in every_name(Keys()):
        assert "::" not in name


def test_a_whole_tracking_cycle_writes_only_keys_under_the_configured_prefix(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a tracker under a custom prefix
    config = RecoveryConfig(key_prefix="acme-prod", retry_jitter=0.0, max_retry_count=1)
    tracker = FailedDocumentsTracker(redis_url, config)
    try:
        # When documents fail, are claimed, resubmitted, resolved, die and are cleaned
        for n in range(3):
            record = FailedDocumentRecord(
                f"/docs/{n}.pdf",
                f"t{n}",
                "boom",
                failure_timestamp=1000.0,
                query="q",
                worker_id="celery@w1",
            )
            tracker.store.record_failure(record)
        claim = tracker.claims.claim_due(2, now=10_000.0)
        tracker.claims.settle(
            [Settlement(r.doc_id, "sent", "new") for r in claim.records],
            token=claim.token,
            now=10_000.0,
        )
        tracker.store.resolve(claim.records[0].doc_id, worker="celery@w1", recovery_attempt=True)
        tracker.claims.release_expired(now=100_000.0)
        tracker.maintenance.cleanup(now=2000.0)
    finally:
        tracker.close()

    # Then every key in the database lives under that prefix's hash tag
    names = [str(name) for name in redis_client.keys("*")]
    assert names
    assert all(name.startswith("{acme-prod}:") for name in names), names


def test_the_scripts_score_the_due_index_with_the_strides_python_documents() -> None:
    lib = (resources.files("recovery.store") / "lua" / "_lib.lua").read_text()

    assert f"local LANE, LEVEL = {LANE:.0e}, {LEVEL:.0e}".replace("+", "") in lib
