"""Callables for ORCH_EXECUTOR="tests.fakes.callables:..." in the executor tests."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from orchestration.agents.base import ExecutionResult, TaskContext


def echo(ctx: TaskContext) -> dict[str, Any]:
    return {"title": ctx.title, "agent": ctx.agent.agent_id, "attempt": ctx.attempt}


def shout(ctx: TaskContext) -> str:
    return ctx.title.upper()


def priced(ctx: TaskContext) -> ExecutionResult:
    return ExecutionResult(output={"result": "done"}, tokens=42, cost=Decimal("0.0125"))


def odd_values(ctx: TaskContext) -> dict[Any, Any]:
    return {1: Decimal("1.5"), "tags": {"b", "a"}, "nan": float("nan")}


def broken(ctx: TaskContext) -> None:
    raise ValueError(f"cannot do {ctx.title!r}")


class Worker:
    """A class: instantiated, then its execute method is called."""

    def execute(self, ctx: TaskContext) -> dict[str, Any]:
        return {"result": f"worked on {ctx.title}"}


NOT_CALLABLE = 42


def hangs_first_attempt(ctx: TaskContext) -> dict[str, Any]:
    """The first attempt hangs input_data["hang"] seconds, deaf to cancellation (as code in a
    call without a timeout); later attempts answer at once."""
    if ctx.attempt == 1:
        time.sleep(float(ctx.input_data.get("hang", 0)))
    return {"attempt": ctx.attempt}
