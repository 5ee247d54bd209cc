"""How a resubmission names itself and its original (recovery/lineage.py), against the
session's real Redis result backend. Flower and a real worker showing it: test_flower.py."""

from __future__ import annotations

import ast

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

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


def test_a_task_without_a_stored_result_gets_none(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    assert link(celery_app, [Replacement("t-gone", "t-new", 1, manual=True)]) == 0

    assert redis_client.exists(celery_app.backend.get_key_for_task("t-gone")) == 0


def test_an_app_without_a_result_backend_is_left_alone(redis_url: str) -> None:
    app = Celery("no-backend", broker=redis_url, set_as_current=False)

    assert link(app, [Replacement("t-old", "t-new", 1, manual=False)]) == 0
