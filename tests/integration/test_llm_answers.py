"""POST /decompose {goal} with the LLM planner against a real local chat-completions server: the
answers models really give (strings PostgreSQL cannot store, nulls, 5.0, plans deeper than
asked) are asked again or accepted, never a 5xx or a confusing 409; what the model was paid for
counts on the manager even when no plan comes of it. And the plan and goal checks of the API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from orchestration.config import reload_settings
from orchestration.plans import MAX_PLAN_NESTING
from tests.fakes.chat_server import (  # noqa: F401
    FakeChatServer,
    agents_on,
    chat_server_fixture,
)
from webapp.testing import V1, ApiClient, assert_error

# Per million tokens.
PROMPT_PRICE = Decimal("1.5")
COMPLETION_PRICE = Decimal("4")
GOOD = {"title": "Ship it", "subtasks": [{"title": "Build"}, {"title": "Test"}]}


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, chat_server: FakeChatServer) -> Iterator[FakeChatServer]:
    """The LLM planner, on the fake server."""
    with agents_on(chat_server, monkeypatch, prices=(PROMPT_PRICE, COMPLETION_PRICE)) as server:
        yield server


@pytest.fixture
def team_id(api: ApiClient, team: dict[str, Any]) -> str:
    api.add_member(team["id"], "manager")
    return str(team["id"])


def decompose(api: ApiClient, team_id: str, **body: Any) -> Any:
    return api.post(f"{V1}/teams/{team_id}/decompose", body)


def manager_usage(api: ApiClient, team_id: str) -> tuple[int, Decimal]:
    (manager,) = [
        m for m in api.get(f"{V1}/teams/{team_id}/members").get_json() if m["role"] == "manager"
    ]
    return manager["total_tokens_used"], Decimal(str(manager["total_cost"]))


def price(calls: int, prompt: int = 10, completion: int = 20) -> Decimal:
    return calls * (PROMPT_PRICE * prompt + COMPLETION_PRICE * completion) / Decimal(1_000_000)


def reask(server: FakeChatServer, index: int) -> str:
    """What the planner told the model about its answer before request `index`."""
    return str(server.requests[index].messages[-1]["content"])


# --- #1 strings PostgreSQL cannot store ------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (json.dumps({"title": "R", "subtasks": [{"title": "A\u0000B"}]}), "NUL"),
        (json.dumps({"title": "R", "description": "x\u0000y"}), "NUL"),
        (json.dumps({"title": "R", "acceptance_criteria": ["ok\u0000"]}), "NUL"),
        (json.dumps({"title": "R", "subtasks": [{"key": "k\u0000", "title": "A"}]}), "NUL"),
        ('{"title": "R \\ud800"}', "unpaired surrogates"),
    ],
    ids=["title", "description", "criterion", "key", "lone-surrogate"],
)
def test_unstorable_strings_in_a_models_plan_are_asked_again(
    api: ApiClient, team_id: str, model: FakeChatServer, answer: str, problem: str
) -> None:
    model.answer(answer)
    model.answer(GOOD)
    response = decompose(api, team_id, goal="ship it")
    assert response.status_code == 201, response.get_json()
    assert [t["title"] for t in response.get_json()] == ["Ship it", "Build", "Test"]
    assert len(model.requests) == 2
    assert problem in reask(model, 1)
    assert manager_usage(api, team_id) == (60, price(2))


def test_unstorable_strings_in_every_answer_end_in_the_planners_error_not_a_500(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    for _ in range(3):
        model.answer({"title": "R\u0000"})
    body = assert_error(decompose(api, team_id, goal="ship it"), 502)
    assert "title: must not contain NUL characters" in body["message"]


# --- #3 usage of a failed decomposition --------------------------------------------------------


def test_planner_usage_counts_when_no_valid_plan_comes(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    for _ in range(3):
        model.answer("not json at all")
    assert_error(decompose(api, team_id, goal="ship it"), 502)
    assert len(model.requests) == 3
    assert manager_usage(api, team_id) == (90, price(3))


def test_planner_usage_counts_when_the_server_fails_after_a_paid_answer(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    model.answer("not json at all")
    model.error(401, "invalid api key")  # the re-ask is refused: no plan, one answer paid
    body = assert_error(decompose(api, team_id, goal="ship it"), 502)
    assert "HTTP 401" in body["message"]
    assert manager_usage(api, team_id) == (30, price(1))


def test_a_planner_that_keeps_the_caller_waiting_answers_504_at_the_deadline(
    api: ApiClient, team_id: str, model: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller waits on an HTTP request: a model server asking for 3 s between retries,
    three times, no longer holds it for 9 s and more."""
    monkeypatch.setenv("ORCH_DECOMPOSE_TIMEOUT", "1")
    reload_settings()
    for _ in range(4):
        model.error(503, "overloaded", retry_after="3")
    started = time.monotonic()
    body = assert_error(decompose(api, team_id, goal="ship it"), 504)
    assert time.monotonic() - started < 2.9  # the first retry's wait ended at the deadline
    assert body["message"] == "the planner gave no plan within 1 s (ORCH_DECOMPOSE_TIMEOUT)"
    assert len(model.requests) == 1


# --- #4 a plan deeper than max_depth that folds into a cycle -----------------------------------

# a1 -> b -> a2, with a1 and a2 under a: cut at depth 1, a -> b -> a.
FOLDS_INTO_A_CYCLE = {
    "key": "r",
    "title": "R",
    "subtasks": [
        {
            "key": "a",
            "title": "A",
            "subtasks": [
                {"key": "a1", "title": "A1", "depends_on": ["b"]},
                {"key": "a2", "title": "A2"},
            ],
        },
        {"key": "b", "title": "B", "depends_on": ["a2"]},
    ],
}


def test_a_plan_that_folds_into_a_cycle_is_asked_again(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    model.answer(FOLDS_INTO_A_CYCLE)
    model.answer(GOOD)
    response = decompose(api, team_id, goal="ship it", max_depth=1)
    assert response.status_code == 201, response.get_json()
    assert len(model.requests) == 2
    problem = reask(model, 1)
    assert "maximum depth 1" in problem
    assert "cycle: a -> b -> a" in problem or "cycle: b -> a -> b" in problem


def test_a_plan_that_always_folds_into_a_cycle_is_the_planners_failure(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    for _ in range(3):
        model.answer(FOLDS_INTO_A_CYCLE)
    body = assert_error(decompose(api, team_id, goal="ship it", max_depth=1), 502)
    assert "no valid plan in 3 attempts" in body["message"]
    assert "maximum depth 1" in body["message"]
    assert "adding this dependency" not in body["message"]


# --- #6 ordinary model answers ------------------------------------------------------------------


def test_nulls_whole_floats_and_real_skill_names_are_accepted_at_once(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    model.answer(
        {
            "key": None,
            "title": "R",
            "description": None,
            "priority": 7.0,
            "estimated_tokens": 1200.0,
            "subtasks": [
                {
                    "title": "A",
                    "subtasks": None,
                    "depends_on": None,
                    "required_skills": ["C++", "UI/UX", "C#", ".NET"],
                    "acceptance_criteria": None,
                    "estimated_tokens": None,
                }
            ],
        }
    )
    response = decompose(api, team_id, goal="ship it")
    assert response.status_code == 201, response.get_json()
    assert len(model.requests) == 1
    root, child = response.get_json()
    assert root["priority"] == 7 and root["estimated_tokens"] == 1200
    assert child["required_skills"] == ["C++", "UI/UX", "C#", ".NET"]
    assert child["acceptance_criteria"] is None and child["description"] is None


def test_the_reask_names_the_field_and_why(
    api: ApiClient, team_id: str, model: FakeChatServer
) -> None:
    model.answer({"title": "R", "subtasks": [{"title": "A", "priority": 2.5}]})
    model.answer({"title": "R", "subtasks": [{"title": "A", "required_skills": ["two\nlines"]}]})
    model.answer(GOOD)
    assert decompose(api, team_id, goal="ship it").status_code == 201
    assert "subtasks[0].priority: Not a valid integer." in reask(model, 1)
    skills = reask(model, 2)
    assert "subtasks[0].required_skills[0]: 'two\\nlines' is not a skill name" in skills
    assert "such as coding, C++ or UI/UX" in skills
    # The rule is in the instructions from the start.
    assert "such as coding, C++ or UI/UX" in model.requests[0].messages[0]["content"]


# --- #9 blank titles and goals, deep plans --------------------------------------------------------


def test_blank_titles_and_goals_are_422(api: ApiClient, team_id: str) -> None:
    body = assert_error(decompose(api, team_id, plan={"title": "   "}), 422, errors=True)
    assert body["errors"] == {"plan": {"title": ["must not be blank"]}}
    nested = {"title": "R", "subtasks": [{"title": "\t\n "}]}
    assert_error(decompose(api, team_id, plan=nested), 422, errors=True)
    body = assert_error(decompose(api, team_id, goal=" \n "), 422, errors=True)
    assert body["errors"] == {"goal": ["must not be blank"]}
    response = api.post(f"{V1}/teams/{team_id}/tasks", {"title": "   "})
    body = assert_error(response, 422, errors=True)
    assert body["errors"] == {"title": ["must not be blank"]}


def nested_plan(levels: int) -> bytes:
    """{"plan": ...} with a node `levels` below the root, that node with its list fields."""
    leaf = '{"title": "x", "acceptance_criteria": ["done"], "required_skills": ["coding"]}'
    return (
        '{"plan": ' + '{"title": "x", "subtasks": [' * levels + leaf + "]}" * levels + "}"
    ).encode()


@pytest.mark.parametrize("levels", [MAX_PLAN_NESTING + 1, 2 * MAX_PLAN_NESTING])
def test_a_plan_nested_too_deep_gets_the_schemas_422(
    api: ApiClient, team_id: str, levels: int
) -> None:
    response = api.request(
        "POST",
        f"{V1}/teams/{team_id}/decompose",
        data=nested_plan(levels),
        headers={"Content-Type": "application/json"},
    )
    body = assert_error(response, 422, errors=True)
    assert f"a plan nests at most {MAX_PLAN_NESTING} levels" in json.dumps(body["errors"])


def test_a_plan_nested_as_deep_as_allowed_is_created(api: ApiClient, team_id: str) -> None:
    response = api.request(
        "POST",
        f"{V1}/teams/{team_id}/decompose",
        data=nested_plan(MAX_PLAN_NESTING),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.get_json()
