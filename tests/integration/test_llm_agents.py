"""The LLM planner, executor and reviewer against a real local chat-completions server."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest

from orchestration.agents import get_executor, get_planner, get_reviewer
from orchestration.agents.base import (
    AgentProfile,
    DependencyOutput,
    ExecutionFailed,
    TaskContext,
)
from orchestration.agents.llm import LLMExecutor, LLMPlanner, LLMReviewer
from orchestration.agents.llm_client import ChatClient, parse_retry_after
from orchestration.errors import AgentError
from orchestration.plans import PlanSchema, iter_nodes, plan_cycle
from tests.fakes.chat_server import (  # noqa: F401
    FakeChatServer,
    RecordedRequest,
    Reply,
    agents_on,
    chat_server_fixture,
    completion,
)

API_KEY = "sk-test-0123456789-secret"
PROMPT_PRICE = Decimal("0.15")
COMPLETION_PRICE = Decimal("0.6")
TEAM = [
    AgentProfile(uuid.uuid4(), "manager-1", "manager", None),
    AgentProfile(uuid.uuid4(), "dev-1", "worker", "Technical Executor", {"rust": 0.8}),
    AgentProfile(uuid.uuid4(), "writer-1", "worker", "Content Creator"),
]
PLAN: dict[str, Any] = {
    "key": "root",
    "title": "Launch the e-bike comparison site",
    "subtasks": [
        {
            "key": "research",
            "title": "Research e-bike prices",
            "required_skills": ["research"],
            "acceptance_criteria": ["Prices from at least five shops"],
        },
        {
            "key": "build",
            "title": "Build the comparison site",
            "required_skills": ["coding"],
            "depends_on": ["research"],
            "subtasks": [
                {"key": "backend", "title": "Write the backend", "required_skills": ["coding"]},
                {
                    "key": "frontend",
                    "title": "Write the frontend",
                    "required_skills": ["coding"],
                    "depends_on": ["backend"],
                    "subtasks": [
                        {"key": "charts", "title": "Draw the price charts"},
                    ],
                },
            ],
        },
        {
            "key": "announce",
            "title": "Announce the launch",
            "required_skills": ["writing"],
            "depends_on": ["frontend"],
        },
    ],
}


@pytest.fixture
def llm_env(
    monkeypatch: pytest.MonkeyPatch, chat_server: FakeChatServer
) -> Iterator[FakeChatServer]:
    with agents_on(
        chat_server,
        monkeypatch,
        prices=(PROMPT_PRICE, COMPLETION_PRICE),
        roles=("planner", "executor", "reviewer"),
        api_key=API_KEY,
    ) as server:
        yield server


def price(prompt: int, completion: int) -> Decimal:
    return (PROMPT_PRICE * prompt + COMPLETION_PRICE * completion) / Decimal(1_000_000)


def ctx(**changes: Any) -> TaskContext:
    base = TaskContext(
        task_id=uuid.uuid4(),
        team_id=uuid.uuid4(),
        title="Write the launch announcement",
        description="A short post for the blog.",
        acceptance_criteria=["Mentions the launch date", "Under 200 words"],
        required_skills=["writing"],
        input_data={"launch_date": "2026-03-01", "simulate": {"duration": 9}},
        agent=TEAM[2],
        dependency_outputs=[
            DependencyOutput(
                uuid.UUID(int=5), "Research e-bike prices", {"result": "CHEAPEST-BIKE-IS-999-EUR"}
            ),
            DependencyOutput(uuid.UUID(int=6), "Pick the launch date", {"date": "2026-03-01"}),
        ],
    )
    return dataclasses.replace(base, **changes)


# -- planner ----------------------------------------------------------------------------------


def test_planner_valid_answer(llm_env: FakeChatServer) -> None:
    llm_env.answer(PLAN, prompt_tokens=300, completion_tokens=200)
    planner = get_planner()
    assert isinstance(planner, LLMPlanner)
    plan = planner.plan("Launch an e-bike price comparison site", TEAM, 3)
    assert plan == PlanSchema().load(PLAN)
    (request,) = llm_env.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.json
    assert body["model"] == "fake-model"
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Launch an e-bike price comparison site" in request.prompt
    assert "Maximum depth: 3" in request.prompt
    assert "dev-1 (worker, Technical Executor)" in request.prompt
    assert "rust" in request.prompt and "coding" in request.prompt


def test_planner_reasks_after_malformed_json(llm_env: FakeChatServer) -> None:
    llm_env.answer("Sure! Here is the plan: {title: oops")
    llm_env.answer(PLAN)
    plan, usage, cost = LLMPlanner(ChatClient.from_settings()).plan_with_usage("Goal", TEAM, 3)
    assert plan["title"] == PLAN["title"]
    assert len(llm_env.requests) == 2
    retry = llm_env.requests[1].messages
    assert retry[-2] == {"role": "assistant", "content": "Sure! Here is the plan: {title: oops"}
    assert "not valid JSON" in retry[-1]["content"] or "not JSON" in retry[-1]["content"]
    assert usage.total_tokens == 60
    assert cost == price(20, 40)


def test_planner_reasks_after_schema_errors(llm_env: FakeChatServer) -> None:
    invalid = copy.deepcopy(PLAN)
    invalid["subtasks"][0]["priority"] = 42
    invalid["subtasks"][1]["depends_on"] = ["nowhere"]
    del invalid["subtasks"][2]["title"]
    llm_env.answer(invalid)
    cyclic = copy.deepcopy(PLAN)
    cyclic["subtasks"][0]["depends_on"] = ["announce"]
    llm_env.answer(cyclic)
    llm_env.answer(PLAN)
    plan = get_planner().plan("Goal", TEAM, 3)
    assert plan["title"] == PLAN["title"]
    first_problem = llm_env.requests[1].messages[-1]["content"]
    assert "TaskNode schema" in first_problem
    assert "title" in first_problem and "priority" in first_problem
    second_problem = llm_env.requests[2].messages[-1]["content"]
    assert "cycle" in second_problem and "announce" in second_problem


def test_planner_gives_up_after_bounded_attempts(llm_env: FakeChatServer) -> None:
    for _ in range(5):
        llm_env.answer({"subtasks": []})
    with pytest.raises(AgentError, match="no valid plan in 3 attempts"):
        get_planner().plan("Goal", TEAM, 3)
    assert len(llm_env.requests) == 3


def test_planner_prunes_below_max_depth(llm_env: FakeChatServer) -> None:
    llm_env.answer(PLAN)
    plan = get_planner().plan("Goal", TEAM, 1)
    nodes = list(iter_nodes(plan))
    assert max(depth for _, depth, _ in nodes) == 1
    assert plan_cycle(plan) is None
    PlanSchema().load(plan)
    by_key = {node["key"]: node for node, _, _ in nodes}
    assert set(by_key) == {"root", "research", "build", "announce"}
    build = by_key["build"]
    assert "Write the backend" in build["description"]
    assert "Draw the price charts" in build["description"]
    # a dependency on a folded node moves to the node that now stands for it
    assert by_key["announce"]["depends_on"] == ["build"]
    assert "Maximum depth: 1" in llm_env.requests[0].prompt


def test_planner_accepts_fenced_json_and_servers_without_json_mode(
    llm_env: FakeChatServer,
) -> None:
    llm_env.error(400, "unknown field: response_format")
    llm_env.answer("```json\n" + json.dumps(PLAN) + "\n```")
    llm_env.answer(PLAN)
    planner = get_planner()
    assert planner.plan("Goal", TEAM, 3)["title"] == PLAN["title"]
    first, second = llm_env.requests
    assert "response_format" in first.json and "response_format" not in second.json
    planner.plan("Goal", TEAM, 3)  # not asked again for this client
    assert "response_format" not in llm_env.requests[2].json


def test_planner_keys_every_node(llm_env: FakeChatServer) -> None:
    llm_env.answer({"title": "Goal", "subtasks": [{"title": "A"}, {"title": "B"}]})
    plan = get_planner().plan("Goal", TEAM, 3)
    keys = [node["key"] for node, _, _ in iter_nodes(plan)]
    assert len(set(keys)) == 3 and all(keys)


# -- executor ---------------------------------------------------------------------------------


def test_executor_tokens_cost_and_prompt(llm_env: FakeChatServer) -> None:
    llm_env.answer("Launching on 2026-03-01!", prompt_tokens=1234, completion_tokens=567)
    executor = get_executor()
    assert isinstance(executor, LLMExecutor)
    task = ctx(revision=2, feedback="TOO-LONG: cut it below 200 words")
    result = executor.execute(task)
    assert result.output["result"] == "Launching on 2026-03-01!"
    assert result.output["agent"] == "writer-1"
    assert result.tokens == 1234 + 567
    assert result.cost == price(1234, 567)
    (request,) = llm_env.requests
    system, user = request.messages
    assert "writer and editor" in system["content"]  # the Content Creator prompt
    assert "CHEAPEST-BIKE-IS-999-EUR" in user["content"]
    assert "Pick the launch date" in user["content"]
    assert "TOO-LONG: cut it below 200 words" in user["content"]
    assert "revision 2" in user["content"]
    assert "Mentions the launch date" in user["content"]
    assert "2026-03-01" in user["content"] and "simulate" not in user["content"]
    assert "response_format" not in request.json


def test_executor_prompts_per_specialization(llm_env: FakeChatServer) -> None:
    for agent, phrase in [
        (TEAM[1], "software engineer"),
        (AgentProfile(None, "r", "worker", "Researcher/Analyzer"), "research analyst"),
        (AgentProfile(None, "g", "worker", None), "generalist"),
    ]:
        llm_env.answer("ok")
        get_executor().execute(ctx(agent=agent, revision=0, feedback=None))
        assert phrase in llm_env.requests[-1].messages[0]["content"]
    assert "Reviewer feedback" not in llm_env.requests[-1].prompt


def test_retry_after_is_honoured(llm_env: FakeChatServer, caplog: pytest.LogCaptureFixture) -> None:
    llm_env.error(429, "slow down", retry_after="1")
    llm_env.answer("done")
    with caplog.at_level(logging.DEBUG):
        result = get_executor().execute(ctx())
    assert result.output["result"] == "done"
    first, second = llm_env.requests
    assert second.received_at - first.received_at >= 1.0
    assert "429" in caplog.text
    assert API_KEY not in caplog.text


def test_server_errors_are_retried(llm_env: FakeChatServer) -> None:
    llm_env.error(500, "boom")
    llm_env.error(503, "busy")
    llm_env.answer("done", prompt_tokens=5, completion_tokens=5)
    result = LLMExecutor(ChatClient.from_settings(backoff=0.05)).execute(ctx())
    assert result.output["result"] == "done" and result.tokens == 10
    assert len(llm_env.requests) == 3


def test_a_cancelled_task_stops_retrying_at_once(llm_env: FakeChatServer) -> None:
    llm_env.error(429, "slow down", retry_after="30")
    llm_env.answer("too late")
    task = ctx()
    threading.Timer(0.3, task.cancelled.set).start()  # cancelled during the 30 s wait
    started = time.monotonic()
    with pytest.raises(ExecutionFailed, match="stopped: the task was cancelled"):
        LLMExecutor(ChatClient.from_settings()).execute(task)
    assert time.monotonic() - started < 5
    assert len(llm_env.requests) == 1


def test_timeouts_then_failure(llm_env: FakeChatServer) -> None:
    for _ in range(2):
        llm_env.answer("too late", delay=3.0)
    client = ChatClient.from_settings(timeout=0.3, max_attempts=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ExecutionFailed, match=r"failed after 2 attempts: no answer within 0\.3s"):
        LLMExecutor(client).execute(ctx())
    assert time.monotonic() - started < 2.5
    assert len(llm_env.requests) == 2


def test_errors_are_clear_and_never_show_the_key(llm_env: FakeChatServer) -> None:
    llm_env.error(401, f"invalid api key {API_KEY}")
    with pytest.raises(ExecutionFailed) as failure:
        get_executor().execute(ctx())
    message = str(failure.value)
    assert "401" in message and "LLM_API_KEY" in message
    assert API_KEY not in message
    assert len(llm_env.requests) == 1  # not retried
    llm_env.raw(200, b"<html>not an api</html>", {"Content-Type": "text/html"})
    with pytest.raises(ExecutionFailed, match="chat-completions format"):
        get_executor().execute(ctx())
    assert API_KEY not in repr(ChatClient.from_settings())


def test_unreachable_server(llm_env: FakeChatServer) -> None:
    port = llm_env.port
    llm_env.stop()
    client = ChatClient.from_settings(max_attempts=2, backoff=0.01)
    with pytest.raises(AgentError, match=f"127.0.0.1:{port}.*cannot connect"):
        client.chat([{"role": "user", "content": "hi"}])


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- reviewer ---------------------------------------------------------------------------------


def test_reviewer_accepts_and_rejects(llm_env: FakeChatServer) -> None:
    reviewer = get_reviewer()
    assert isinstance(reviewer, LLMReviewer)
    llm_env.answer({"accepted": True, "feedback": "All good."}, prompt_tokens=50)
    verdict = reviewer.review(ctx(), {"result": "Launch on 2026-03-01, 80 words."})
    assert verdict.accepted and verdict.feedback == "All good."
    assert verdict.tokens == 70 and verdict.cost == price(50, 20)
    request = llm_env.requests[-1]
    assert "Launch on 2026-03-01, 80 words." in request.prompt
    assert "1. Mentions the launch date" in request.prompt
    assert request.json["response_format"] == {"type": "json_object"}

    llm_env.answer({"accepted": False, "feedback": "Criterion 2 unmet: 350 words."})
    verdict = reviewer.review(ctx(), {"result": "long text"})
    assert not verdict.accepted and "Criterion 2" in verdict.feedback


def test_reviewer_reasks_invalid_verdicts(llm_env: FakeChatServer) -> None:
    llm_env.answer("looks fine to me")
    llm_env.answer({"accepted": "maybe"})
    llm_env.answer({"accepted": False})
    llm_env.answer({"accepted": False, "feedback": "Missing the date."})
    reviewer = LLMReviewer(ChatClient.from_settings(), attempts=4)
    verdict = reviewer.review(ctx(), {"result": "text"})
    assert not verdict.accepted and verdict.feedback == "Missing the date."
    assert verdict.tokens == 4 * 30
    problems = [r.messages[-1]["content"] for r in llm_env.requests[1:]]
    assert "not JSON" in problems[0]
    assert '"accepted" must be true or false' in problems[1]
    assert '"feedback" must name the unmet criteria' in problems[2]
    for _ in range(3):
        llm_env.answer("nope")
    with pytest.raises(AgentError, match="no valid verdict in 3 attempts"):
        get_reviewer().review(ctx(), {"result": "text"})


def test_reviewer_without_criteria_accepts_without_asking(llm_env: FakeChatServer) -> None:
    verdict = get_reviewer().review(ctx(acceptance_criteria=[]), {"result": "x"})
    assert verdict.accepted and verdict.tokens == 0
    assert llm_env.requests == []


# -- what a failure was billed ------------------------------------------------------------------


def test_planner_and_reviewer_errors_carry_what_was_spent(llm_env: FakeChatServer) -> None:
    for _ in range(3):
        llm_env.answer("not json", prompt_tokens=100, completion_tokens=10)
    with pytest.raises(AgentError) as planned:
        get_planner().plan("Goal", TEAM, 3)
    assert (planned.value.tokens, planned.value.cost) == (330, price(300, 30))
    for _ in range(3):
        llm_env.answer("nope")
    with pytest.raises(AgentError) as reviewed:
        get_reviewer().review(ctx(), {"result": "text"})
    assert (reviewed.value.tokens, reviewed.value.cost) == (90, price(30, 60))
    # A server error after a paid answer: the answer still counts.
    llm_env.answer("not json")
    llm_env.error(403, "forbidden")
    with pytest.raises(AgentError, match="HTTP 403") as refused:
        get_reviewer().review(ctx(), {"result": "text"})
    assert (refused.value.tokens, refused.value.cost) == (30, price(10, 20))


# -- models that refuse a temperature -----------------------------------------------------------


JSON_HEADERS = {"Content-Type": "application/json"}


def refuses_temperature(request: RecordedRequest) -> Reply:
    """As OpenAI's reasoning models answer a temperature other than 1."""
    body = request.json
    if "temperature" in body and body["temperature"] != 1:
        error = {
            "error": {
                "message": f"Unsupported value: 'temperature' does not support "
                f"{body['temperature']} with this model. Only the default (1) value is supported.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        }
        return Reply(400, json.dumps(error).encode(), JSON_HEADERS)
    content = json.dumps(PLAN) if "TaskNode" in request.prompt else "done"
    return Reply(200, json.dumps(completion(content)).encode(), JSON_HEADERS)


def test_a_refused_temperature_is_left_out_from_then_on(llm_env: FakeChatServer) -> None:
    llm_env.respond(refuses_temperature)
    planner = get_planner()
    assert planner.plan("Goal", TEAM, 3)["title"] == PLAN["title"]
    planner.plan("Goal", TEAM, 3)
    sent = [(r.json.get("temperature"), "response_format" in r.json) for r in llm_env.requests]
    # Refused once; asked again at once without it, keeping response_format; never sent again.
    assert sent == [(0.2, True), (None, True), (None, True)]
    executor = get_executor()
    assert executor.execute(ctx()).output["result"] == "done"
    assert [r.json.get("temperature") for r in llm_env.requests[3:]] == [0.3, None]


def test_temperature_and_response_format_both_refused(llm_env: FakeChatServer) -> None:
    llm_env.error(400, "Unsupported parameter: 'response_format'")
    llm_env.error(400, "Unsupported parameter: 'temperature'")
    llm_env.answer(PLAN)
    assert get_planner().plan("Goal", TEAM, 3)["title"] == PLAN["title"]
    sent = [(r.json.get("temperature"), "response_format" in r.json) for r in llm_env.requests]
    assert sent == [(0.2, True), (0.2, False), (None, False)]


def test_other_refusals_are_not_retried(llm_env: FakeChatServer) -> None:
    llm_env.error(400, "context_length_exceeded: too many tokens")
    with pytest.raises(AgentError, match="refused the request"):
        get_planner().plan("Goal", TEAM, 3)
    assert len(llm_env.requests) == 1


def test_an_executor_request_the_server_refuses_is_not_retried(llm_env: FakeChatServer) -> None:
    """A 400 such as a context too long comes back for every attempt, each one paid for."""
    llm_env.error(400, "context_length_exceeded: too many tokens")
    with pytest.raises(ExecutionFailed) as refused:
        get_executor().execute(ctx())
    assert "refused the request" in str(refused.value) and not refused.value.retryable
    for _ in range(4):  # the client's own retries, spent
        llm_env.error(503, "overloaded")
    with pytest.raises(ExecutionFailed) as overloaded:
        get_executor().execute(ctx())
    assert overloaded.value.retryable  # the engine's next attempt may find it back


# -- answers cut off at the token limit ---------------------------------------------------------


def test_an_executor_answer_cut_off_is_a_failed_attempt(llm_env: FakeChatServer) -> None:
    llm_env.answer("The first half of the announce", finish_reason="length")
    with pytest.raises(ExecutionFailed) as failed:
        get_executor().execute(ctx())
    assert str(failed.value) == "the model's answer was cut off (finish_reason=length)"
    assert (failed.value.tokens, failed.value.cost) == (30, price(10, 20))


def test_a_plan_or_verdict_cut_off_is_asked_again(llm_env: FakeChatServer) -> None:
    # Cut off where what came is still valid JSON: it is not the whole answer all the same.
    llm_env.answer({"title": "Launch"}, finish_reason="length")
    llm_env.answer(PLAN)
    assert get_planner().plan("Goal", TEAM, 3)["title"] == PLAN["title"]
    assert "cut off (finish_reason=length)" in llm_env.requests[1].messages[-1]["content"]
    llm_env.answer({"accepted": True, "feedback": "Fine"}, finish_reason="length")
    llm_env.answer({"accepted": False, "feedback": "Criterion 2 unmet."})
    verdict = get_reviewer().review(ctx(), {"result": "text"})
    assert not verdict.accepted
    assert "cut off (finish_reason=length)" in llm_env.requests[3].messages[-1]["content"]
