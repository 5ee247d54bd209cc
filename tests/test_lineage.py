"""How a resubmission names itself and its original (recovery/lineage.py), against the
session's real Redis result backend. Flower and a real worker showing it: test_flower.py."""

from __future__ import annotations

import ast

import pytest
import redis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult
from faults.support import at_call, interrupted_at

from recovery.calls import HEADER, Marker
from recovery.lineage import Replacement, describe, link, send_options


def test_a_resubmission_says_which_attempt_of_which_task_it_is() -> None:
    assert describe(Marker("d1", 2), "t-old") == "recovery attempt 2 of task t-old"
    assert describe(Marker("d1", 1, manual=True), "t-old") == "manual retry of task t-old"
    # a record imported without a task id is named by its document
    assert describe(Marker("d1", 1), "") == "recovery attempt 1 of document d1"


def test_the_kwargs_shown_keep_the_real_ones_and_the_task_gets_its_own_header() -> None:
    options = send_options(Marker("d1", 2), "t-old", {"query": "q"})

    assert ast.literal_eval(options["kwargsrepr"]) == {
        "query": "q",
        HEADER: "recovery attempt 2 of task t-old",
    }
    assert options["headers"] == Marker("d1", 2).header()
    assert options["parent_id"] == "t-old"
    assert "parent_id" not in send_options(Marker("d1", 1), "", {})


@pytest.mark.usefixtures("redis_url")
def test_the_replaced_tasks_result_names_its_replacement_and_keeps_its_failure(
    celery_app: Celery,
) -> None:
    # Given a failed task's stored result
    celery_app.backend.mark_as_failure("t-old", RuntimeError("boom"))

    # When its replacement is linked
    assert link(celery_app, [Replacement("t-old", "t-new", 2, manual=False)]) == 1

    # Then its result keeps the failure and names the replacement
    result = AsyncResult("t-old", app=celery_app)
    assert result.state == "FAILURE"
    assert isinstance(result.result, RuntimeError)
    assert [child.id for child in result.children] == ["t-new"]
    assert result._get_task_meta()[HEADER] == {
        "replaced_by": "t-new",
        "attempt": 2,
        "manual": False,
    }


def test_a_batch_of_replaced_results_each_keeps_its_own_expiry(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    # Given failed results that expire at different times (linking must not restart
    # them: a result lives as long as result_expires says, from its task's end)
    backend = celery_app.backend
    for n, ttl in enumerate((300, 900, 0)):
        backend.mark_as_failure(f"t-{n}", RuntimeError("boom"))
        key = backend.get_key_for_task(f"t-{n}")
        if ttl:
            redis_client.expire(key, ttl)
        else:
            redis_client.persist(key)

    # When one run links all three
    batch = [Replacement(f"t-{n}", f"t-new-{n}", 1, manual=False) for n in range(3)]
    assert link(celery_app, batch) == 3

    # Then each names its own replacement and keeps the expiry it had
    ttls = [redis_client.ttl(backend.get_key_for_task(f"t-{n}")) for n in range(3)]
    assert 250 < ttls[0] <= 300
    assert 850 < ttls[1] <= 900
    assert ttls[2] == -1
    for n in range(3):
        children = AsyncResult(f"t-{n}", app=celery_app).children
        assert [child.id for child in children] == [f"t-new-{n}"]


def test_a_result_that_expires_as_it_is_amended_is_not_brought_back(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    # Given a failed result that expires between the run's read and its write
    celery_app.backend.mark_as_failure("t-old", RuntimeError("boom"))
    key = celery_app.backend.get_key_for_task("t-old")

    with at_call("_write", lambda: redis_client.delete(key)):
        amended = link(celery_app, [Replacement("t-old", "t-new", 1, manual=False)])

    # Then it stays gone (bug: it came back, with no expiry at all)
    assert (amended, redis_client.exists(key)) == (0, 0)


@pytest.mark.usefixtures("redis_url")
def test_a_soft_time_limit_while_linking_stops_the_run(celery_app: Celery) -> None:
    # the backend's own errors are logged and the run goes on; its task's limit is not one
    celery_app.backend.mark_as_failure("t-old", RuntimeError("boom"))

    with pytest.raises(SoftTimeLimitExceeded), interrupted_at("mget", SoftTimeLimitExceeded):
        link(celery_app, [Replacement("t-old", "t-new", 1, manual=False)])


def test_a_task_without_a_stored_result_gets_none(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    assert link(celery_app, [Replacement("t-gone", "t-new", 1, manual=True)]) == 0

    assert redis_client.exists(celery_app.backend.get_key_for_task("t-gone")) == 0


def test_an_app_without_a_result_backend_is_left_alone(redis_url: str) -> None:
    app = Celery("no-backend", broker=redis_url, set_as_current=False)

    assert link(app, [Replacement("t-old", "t-new", 1, manual=False)]) == 0
