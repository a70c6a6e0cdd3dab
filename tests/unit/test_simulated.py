"""The simulated executor, the rule-based reviewer, the Python-callable executor and the
settings-driven factories."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from orchestration.agents import (
    AgentConfigError,
    get_executor,
    get_reviewer,
    reset_agents,
)
from orchestration.agents.base import (
    AgentProfile,
    DependencyOutput,
    ExecutionFailed,
    ExecutionResult,
    TaskContext,
)
from orchestration.agents.pricing import PriceTable
from orchestration.agents.pycallable import CallableExecutor, load_callable
from orchestration.agents.rules import RulesReviewer, criterion_met
from orchestration.agents.simulated import SimulatedExecutor, estimate_tokens
from orchestration.config import reload_settings

WORKER = AgentProfile(uuid.uuid4(), "worker-1", "worker", "Technical Executor")
CRITERIA = [
    "The price comparison dashboard is implemented and works as described",
    "The code is runnable and comes with short usage notes",
    "Response times stay under one second",
]


def make_ctx(
    *,
    task_id: uuid.UUID | None = None,
    simulate: dict[str, Any] | None = None,
    criteria: list[str] | None = None,
    attempt: int = 1,
    revision: int = 0,
    feedback: str | None = None,
) -> TaskContext:
    input_data: dict[str, Any] = {"region": "EU"}
    if simulate is not None:
        input_data["simulate"] = simulate
    return TaskContext(
        task_id=task_id or uuid.uuid4(),
        team_id=uuid.UUID(int=1),
        title="Build a price comparison dashboard",
        description="Compare e-bike prices across shops.",
        acceptance_criteria=list(CRITERIA if criteria is None else criteria),
        required_skills=["coding"],
        input_data=input_data,
        agent=WORKER,
        attempt=attempt,
        revision=revision,
        feedback=feedback,
        dependency_outputs=[
            DependencyOutput(uuid.UUID(int=7), "Research the market", {"result": "prices: ..."})
        ],
    )


def task_ids(n: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1000) for i in range(n)]


def outcomes(executor: SimulatedExecutor, ids: list[uuid.UUID], attempt: int = 1) -> list[bool]:
    results = []
    for task_id in ids:
        try:
            executor.execute(make_ctx(task_id=task_id, attempt=attempt))
            results.append(True)
        except ExecutionFailed:
            results.append(False)
    return results


# -- simulated executor -----------------------------------------------------------------------


def test_output_addresses_every_criterion_and_the_rules_reviewer_accepts() -> None:
    ctx = make_ctx()
    result = SimulatedExecutor(duration=0).execute(ctx)
    assert set(result.output["criteria"]) == set(CRITERIA)
    assert result.output["agent"] == "worker-1"
    assert "Build a price comparison dashboard" in result.output["result"]
    json.dumps(result.output)  # storable as JSON
    verdict = RulesReviewer().review(ctx, result.output)
    assert verdict.accepted, verdict.feedback


def test_seeded_runs_are_reproducible() -> None:
    ids = task_ids(300)
    first = outcomes(SimulatedExecutor(duration=0, failure_rate=0.5, seed=42), ids)
    again = outcomes(SimulatedExecutor(duration=0, failure_rate=0.5, seed=42), ids)
    other = outcomes(SimulatedExecutor(duration=0, failure_rate=0.5, seed=43), ids)
    next_attempt = outcomes(SimulatedExecutor(duration=0, failure_rate=0.5, seed=42), ids, 2)
    assert first == again
    assert first != other
    assert first != next_attempt  # a retry draws again
    ctx = make_ctx(task_id=ids[0])
    a = SimulatedExecutor(duration=0, seed=1).execute(ctx)
    b = SimulatedExecutor(duration=0, seed=1).execute(ctx)
    assert a == b


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_failure_rate_matches_the_setting(rate: float) -> None:
    results = outcomes(SimulatedExecutor(duration=0, failure_rate=rate, seed=7), task_ids(2000))
    failed = results.count(False) / len(results)
    assert abs(failed - rate) < 0.05


def test_unseeded_failures_are_random() -> None:
    results = outcomes(SimulatedExecutor(duration=0, failure_rate=0.5, seed=None), task_ids(200))
    assert 40 < results.count(False) < 160


def test_no_failures_at_rate_zero_and_all_at_rate_one() -> None:
    assert all(outcomes(SimulatedExecutor(duration=0, failure_rate=0.0, seed=1), task_ids(200)))
    assert not any(outcomes(SimulatedExecutor(duration=0, failure_rate=1.0), task_ids(50)))


def test_duration_from_settings_and_from_the_task() -> None:
    slept: list[float] = []
    executor = SimulatedExecutor(duration=0.25, sleep=slept.append)
    executor.execute(make_ctx())
    executor.execute(make_ctx(simulate={"duration": 0.01}))
    executor.execute(make_ctx(simulate={"duration": 0}))
    assert slept == [0.25, 0.01]
    started = time.monotonic()
    SimulatedExecutor(duration=0).execute(make_ctx(simulate={"duration": 0.05}))
    assert time.monotonic() - started >= 0.05


def test_simulate_fail_overrides() -> None:
    executor = SimulatedExecutor(duration=0, failure_rate=1.0, seed=3)
    with pytest.raises(ExecutionFailed, match=r"simulate\.fail is true"):
        SimulatedExecutor(duration=0).execute(make_ctx(simulate={"fail": True}))
    # false (or 0) means never, whatever the rate
    assert executor.execute(make_ctx(simulate={"fail": False})).output
    assert executor.execute(make_ctx(simulate={"fail": 0})).output
    # a per-task rate
    assert SimulatedExecutor(duration=0, failure_rate=1.0).execute(
        make_ctx(simulate={"failure_rate": 0})
    )
    with pytest.raises(ExecutionFailed, match="random failure"):
        SimulatedExecutor(duration=0).execute(make_ctx(simulate={"failure_rate": 1}))


def test_fail_the_first_n_attempts() -> None:
    executor = SimulatedExecutor(duration=0)
    task_id = uuid.uuid4()
    for attempt in (1, 2):
        with pytest.raises(ExecutionFailed, match=f"attempt {attempt}") as failure:
            executor.execute(make_ctx(task_id=task_id, simulate={"fail": 2}, attempt=attempt))
        assert failure.value.tokens > 0
    result = executor.execute(make_ctx(task_id=task_id, simulate={"fail": 2}, attempt=3))
    assert result.output["attempt"] == 3


@pytest.mark.parametrize("rejections", [0, 1, 2])
def test_reject_n_drives_the_review_loop(rejections: int) -> None:
    executor = SimulatedExecutor(duration=0)
    reviewer = RulesReviewer()
    ctx = make_ctx(simulate={"reject": rejections})
    verdicts = []
    for _ in range(10):
        result = executor.execute(ctx)
        verdict = reviewer.review(ctx, result.output)
        verdicts.append(verdict.accepted)
        if verdict.accepted:
            break
        assert CRITERIA[-1] in verdict.feedback
        assert CRITERIA[0] not in verdict.feedback
        ctx = dataclasses.replace(ctx, revision=ctx.revision + 1, feedback=verdict.feedback)
    assert verdicts == [False] * rejections + [True]
    if rejections:
        assert "addresses the feedback" in result.output["result"]


def test_tokens_are_deterministic_and_priced() -> None:
    ctx = make_ctx()
    free = SimulatedExecutor(duration=0).execute(ctx)
    assert free.tokens > 0 and free.cost == 0
    prices = PriceTable.parse('{"simulated": {"prompt": 2, "completion": 8}}')
    priced = SimulatedExecutor(duration=0, prices=prices).execute(ctx)
    assert priced.tokens == free.tokens
    completion = estimate_tokens(json.dumps(priced.output, sort_keys=True))
    prompt = priced.tokens - completion
    assert prompt > 0
    assert priced.cost == (Decimal(2) * prompt + Decimal(8) * completion) / Decimal(1_000_000)
    longer = dataclasses.replace(ctx, description="Compare e-bike prices. " * 50)
    assert SimulatedExecutor(duration=0).execute(longer).tokens > free.tokens


# -- rule-based reviewer ----------------------------------------------------------------------


def test_rules_reviewer() -> None:
    reviewer = RulesReviewer()
    assert reviewer.review(make_ctx(criteria=[]), {}).accepted
    ctx = make_ctx(criteria=["Prices from at least three shops", "A chart of prices by month"])
    text = {"result": "We compared prices from three shops and drew a monthly chart."}
    verdict = reviewer.review(ctx, text)
    assert not verdict.accepted  # "at least" and "month" are missing
    assert "2 of 2 acceptance criteria not met" in verdict.feedback
    assert "- Prices from at least three shops" in verdict.feedback
    good = {"result": "Prices from at least three shops; a chart of prices by month attached."}
    assert reviewer.review(ctx, good).accepted
    declared = {
        "result": "see criteria",
        "criteria": {
            "Prices from at least three shops": "table 1",
            "A chart of prices by month": "not addressed",
        },
    }
    verdict = reviewer.review(ctx, declared)
    assert not verdict.accepted
    assert "A chart of prices by month" in verdict.feedback
    assert "Prices from at least three shops" not in verdict.feedback
    assert criterion_met("Deploy it", {"result": "deployed"})


# -- Python-callable executor -----------------------------------------------------------------


def test_callable_by_dotted_path() -> None:
    ctx = make_ctx()
    echo = CallableExecutor.from_spec("tests.fakes.callables:echo").execute(ctx)
    assert echo == ExecutionResult(
        output={"title": ctx.title, "agent": "worker-1", "attempt": 1}, tokens=0, cost=Decimal(0)
    )
    shout = CallableExecutor.from_spec("tests.fakes.callables.shout").execute(ctx)
    assert shout.output == {"result": "BUILD A PRICE COMPARISON DASHBOARD"}
    priced = CallableExecutor.from_spec("tests.fakes.callables:priced").execute(ctx)
    assert priced.tokens == 42 and priced.cost == Decimal("0.0125")
    worker = CallableExecutor.from_spec("tests.fakes.callables:Worker").execute(ctx)
    assert worker.output == {"result": f"worked on {ctx.title}"}
    odd = CallableExecutor.from_spec("tests.fakes.callables:odd_values").execute(ctx)
    assert odd.output == {"1": "1.5", "tags": ["a", "b"], "nan": "nan"}
    with pytest.raises(ExecutionFailed, match="ValueError: cannot do 'Build a price"):
        CallableExecutor.from_spec("tests.fakes.callables:broken").execute(ctx)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.fakes.callables:missing", "no attribute"),
        ("tests.fakes.no_such_module:run", "no module"),
        ("tests.fakes.callables:NOT_CALLABLE", "not a callable"),
        ("nonsense", "not a dotted path"),
        (":run", "not a dotted path"),
    ],
)
def test_bad_callable_paths_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        load_callable(spec)


# -- factories --------------------------------------------------------------------------------


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    reset_agents()
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()
    reset_agents()


def test_get_executor_follows_settings(agent_env: pytest.MonkeyPatch) -> None:
    agent_env.setenv("ORCH_EXECUTOR", "simulated")
    agent_env.setenv("ORCH_SIM_DURATION", "0")
    agent_env.setenv("ORCH_SIM_FAILURE_RATE", "0.25")
    agent_env.setenv("ORCH_SIM_SEED", "11")
    reload_settings()
    executor = get_executor()
    assert isinstance(executor, SimulatedExecutor)
    assert (executor.duration, executor.failure_rate, executor.seed) == (0.0, 0.25, 11)
    assert get_executor() is executor  # cached while the settings stay
    agent_env.setenv("ORCH_SIM_SEED", "12")
    reload_settings()
    rebuilt = get_executor()
    assert rebuilt is not executor and isinstance(rebuilt, SimulatedExecutor)
    assert rebuilt.seed == 12

    agent_env.setenv("ORCH_EXECUTOR", "tests.fakes.callables:echo")
    reload_settings()
    callable_executor = get_executor()
    assert isinstance(callable_executor, CallableExecutor)
    assert callable_executor.execute(make_ctx()).output["agent"] == "worker-1"

    agent_env.setenv("ORCH_EXECUTOR", "magic")
    reload_settings()
    with pytest.raises(AgentConfigError, match="unknown ORCH_EXECUTOR 'magic'"):
        get_executor()
    agent_env.setenv("ORCH_EXECUTOR", "llm")
    agent_env.delenv("LLM_BASE_URL", raising=False)
    agent_env.delenv("LLM_MODEL", raising=False)
    reload_settings()
    with pytest.raises(AgentConfigError, match="LLM_BASE_URL and LLM_MODEL"):
        get_executor()


def test_get_reviewer_follows_settings(agent_env: pytest.MonkeyPatch) -> None:
    agent_env.setenv("ORCH_REVIEWER", "rules")
    reload_settings()
    assert isinstance(get_reviewer(), RulesReviewer)
    agent_env.setenv("ORCH_REVIEWER", "strict")
    reload_settings()
    with pytest.raises(AgentConfigError, match="ORCH_REVIEWER"):
        get_reviewer()


def test_bad_price_table_is_a_clear_error(agent_env: pytest.MonkeyPatch) -> None:
    agent_env.setenv("ORCH_EXECUTOR", "simulated")
    agent_env.setenv("LLM_PRICES", "{not json")
    reload_settings()
    with pytest.raises(AgentConfigError, match="LLM_PRICES"):
        get_executor()
    for bad in ('{"m": {"prompt": -1}}', '{"m": {"input": 1}}', '{"m": 3}', "[1]"):
        with pytest.raises(AgentConfigError, match="LLM_PRICES"):
            PriceTable.parse(bad)
    table = PriceTable.parse('{"m": {"prompt": 0.15, "completion": 0.6}, "*": {"prompt": 1}}')
    assert table.cost("m", 1_000_000, 1_000_000) == Decimal("0.75")
    assert table.cost("other", 2_000_000, 5) == Decimal(2)


def test_a_run_stops_early_when_its_task_is_cancelled() -> None:
    ctx = make_ctx(simulate={"duration": 30})
    threading.Timer(0.05, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(ExecutionFailed, match="cancelled while it ran"):
        SimulatedExecutor().execute(ctx)
    assert time.monotonic() - started < 5


def test_a_callable_may_return_its_context_and_copies_share_its_cancellation() -> None:
    ctx = make_ctx()
    result = CallableExecutor(lambda c: c).execute(ctx)
    assert result.output["result"]["title"] == ctx.title
    assert "cancelled" not in result.output["result"]  # a signal, not data
    assert dataclasses.asdict(ctx)["cancelled"] is ctx.cancelled
