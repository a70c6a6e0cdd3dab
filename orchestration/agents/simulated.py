"""The offline executor: waits a while, sometimes fails, and returns an output that addresses
every acceptance criterion (so the rule-based reviewer accepts it).

Knobs: ORCH_SIM_DURATION (seconds), ORCH_SIM_FAILURE_RATE (0..1), ORCH_SIM_SEED (an integer
makes failures reproducible: the draw depends on the seed, the task id and the attempt). A task's
``input_data.simulate`` overrides them for that task:

- ``duration``: seconds to wait
- ``fail``: true = always fail; false/0 = never fail; an integer N = fail the first N attempts
- ``failure_rate``: this task's failure probability
- ``reject``: an integer N = the first N reviews reject (revisions 0..N-1 leave the last
  criterion unaddressed)
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from orchestration.agents.base import ExecutionFailed, ExecutionResult, TaskContext
from orchestration.agents.pricing import PriceTable
from orchestration.config import Settings, get_settings

SIMULATED_MODEL = "simulated"
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A deterministic token count for text (about four characters a token)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _number(value: Any, default: float) -> float:
    if value is None or isinstance(value, bool):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _count(value: Any) -> int:
    """An integer count (N in "fail the first N attempts"), 0 when value is none."""
    if isinstance(value, bool) or value is None:
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _prompt_text(ctx: TaskContext) -> str:
    parts = [ctx.title, ctx.description or "", *ctx.acceptance_criteria]
    data = {k: v for k, v in (ctx.input_data or {}).items() if k != "simulate"}
    if data:
        parts.append(json.dumps(data, sort_keys=True, default=str))
    for dep in ctx.dependency_outputs:
        parts.append(dep.title)
        parts.append(json.dumps(dep.output, sort_keys=True, default=str))
    if ctx.feedback:
        parts.append(ctx.feedback)
    return "\n".join(parts)


class SimulatedExecutor:
    def __init__(
        self,
        duration: float = 0.2,
        failure_rate: float = 0.0,
        seed: int | None = None,
        prices: PriceTable | None = None,
        *,
        model: str = SIMULATED_MODEL,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.duration = max(0.0, float(duration))
        self.failure_rate = min(1.0, max(0.0, float(failure_rate)))
        self.seed = seed
        self.prices = prices or PriceTable()
        self.model = model
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SimulatedExecutor:
        s = settings or get_settings()
        return cls(
            duration=s.sim_duration,
            failure_rate=s.sim_failure_rate,
            seed=s.sim_seed,
            prices=PriceTable.parse(s.llm_prices),
        )

    def draw(self, ctx: TaskContext) -> float:
        """The random number that decides a random failure: reproducible under a seed."""
        if self.seed is None:
            return random.random()
        key = f"{self.seed}:{ctx.task_id}:{ctx.attempt}"
        if ctx.revision:
            key += f":{ctx.revision}"
        return random.Random(key).random()

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        raw = (ctx.input_data or {}).get("simulate")
        sim: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        duration = max(0.0, _number(sim.get("duration"), self.duration))
        if duration > 0:
            if self._sleep is None:
                ctx.cancelled.wait(duration)  # the run ends early when the task is cancelled
            else:
                self._sleep(duration)
        prompt_tokens = estimate_tokens(_prompt_text(ctx))
        prompt_cost = self.prices.cost(self.model, prompt_tokens, 0)
        if ctx.cancelled.is_set():
            raise ExecutionFailed("stopped: the task was cancelled while it ran")

        fail = sim.get("fail")
        if fail is True:
            raise ExecutionFailed(
                "simulated failure (input_data.simulate.fail is true)",
                tokens=prompt_tokens,
                cost=prompt_cost,
            )
        if fail is None:
            rate = min(1.0, max(0.0, _number(sim.get("failure_rate"), self.failure_rate)))
            if rate > 0 and self.draw(ctx) < rate:
                raise ExecutionFailed(
                    f"simulated random failure (failure rate {rate:g}, attempt {ctx.attempt})",
                    tokens=prompt_tokens,
                    cost=prompt_cost,
                )
        elif ctx.attempt <= _count(fail):
            raise ExecutionFailed(
                f"simulated failure on attempt {ctx.attempt} "
                f"(input_data.simulate.fail = {_count(fail)}: the first {_count(fail)} fail)",
                tokens=prompt_tokens,
                cost=prompt_cost,
            )

        output = self.output(ctx, withhold=ctx.revision < _count(sim.get("reject")))
        completion_tokens = estimate_tokens(json.dumps(output, sort_keys=True))
        return ExecutionResult(
            output=output,
            tokens=prompt_tokens + completion_tokens,
            cost=self.prices.cost(self.model, prompt_tokens, completion_tokens),
        )

    def output(self, ctx: TaskContext, withhold: bool = False) -> dict[str, Any]:
        """The simulated deliverable. With withhold (and criteria), the last criterion is left
        out, so the rule-based reviewer rejects it."""
        agent = ctx.agent
        criteria = [c for c in ctx.acceptance_criteria if c and c.strip()]
        addressed = criteria[:-1] if withhold and criteria else criteria
        header = f"{agent.agent_id} ({agent.specialization or 'Generalist'})"
        if withhold and criteria:
            result = (
                f"Draft {ctx.revision + 1} by {header}: incomplete, "
                f"{len(addressed)} of {len(criteria)} points done so far."
            )
        else:
            lines = [f"{header} completed “{ctx.title}” (simulated work)."]
            if ctx.description:
                lines.append(f"Brief: {ctx.description.strip()}")
            if ctx.dependency_outputs:
                lines.append("Built on: " + "; ".join(d.title for d in ctx.dependency_outputs))
            if ctx.feedback:
                lines.append(f"Revision {ctx.revision} addresses the feedback: {ctx.feedback}")
            if addressed:
                done = "\n".join(f"- {c}: done" for c in addressed)
                lines.append(f"Acceptance criteria:\n{done}")
            result = "\n\n".join(lines)
        return {
            "result": result,
            "agent": agent.agent_id,
            "criteria": {c: f"Addressed by {agent.agent_id}: {c}" for c in addressed},
            "simulated": True,
            "attempt": ctx.attempt,
            "revision": ctx.revision,
        }
