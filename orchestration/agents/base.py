"""The plug-in interfaces: a planner turns a goal into a TaskNode tree, an executor runs one
task as one agent, a reviewer judges an output against acceptance criteria."""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from orchestration.errors import AgentError
from orchestration.text import made_storable


@dataclass(frozen=True)
class AgentProfile:
    """A team member as an agent sees it."""

    member_id: uuid.UUID | None
    agent_id: str
    role: str
    specialization: str | None
    skills: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DependencyOutput:
    task_id: uuid.UUID
    title: str
    output: dict[str, Any] | None


class Cancellation(threading.Event):
    """Set when a run stops being its run's. One signal per run: a copy of its context (as
    dataclasses.asdict or copy.deepcopy make) shares it rather than copying a lock."""

    def __deepcopy__(self, memo: dict[int, object]) -> Cancellation:
        return self


@dataclass(frozen=True)
class TaskContext:
    """Everything an executor or reviewer may use about one task."""

    task_id: uuid.UUID
    team_id: uuid.UUID
    title: str
    description: str | None
    acceptance_criteria: list[str]
    required_skills: list[str]
    input_data: dict[str, Any]
    agent: AgentProfile
    attempt: int = 1
    revision: int = 0
    feedback: str | None = None
    dependency_outputs: list[DependencyOutput] = field(default_factory=list)
    # Set while the run is under way when it stops being this run's: the task was cancelled,
    # or another run took it over. An executor may watch it and stop early (what it returns or
    # raises then is discarded); the worker's agent thread and its capacity come back sooner.
    cancelled: Cancellation = field(default_factory=Cancellation, compare=False, repr=False)


@dataclass(frozen=True)
class ExecutionResult:
    output: dict[str, Any]
    tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class ReviewVerdict:
    accepted: bool
    feedback: str
    tokens: int = 0
    cost: Decimal = Decimal(0)


class ExecutionFailed(Exception):
    """The agent could not do the task this time; the engine retries with backoff, then fails
    the task with this message."""

    def __init__(
        self,
        message: str,
        tokens: int = 0,
        cost: Decimal = Decimal(0),
        *,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.cost = cost
        # False: another attempt would end the same way (the model server refuses the request
        # itself), so the task fails at once instead of paying for the same refusal again.
        self.retryable = retryable


class Planner(Protocol):
    def plan(self, goal: str, team: list[AgentProfile], max_depth: int) -> dict[str, Any]:
        """A TaskNode tree (a dict valid under orchestration.plans.PlanSchema)."""
        ...


class Executor(Protocol):
    def execute(self, ctx: TaskContext) -> ExecutionResult:
        """Run the task; raise ExecutionFailed (or any exception) when it fails."""
        ...


class Reviewer(Protocol):
    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict: ...


class AgentConfigError(AgentError):
    """The agent settings name an unknown planner, executor or reviewer, or miss what the chosen
    one needs (LLM_BASE_URL, LLM_MODEL, an importable callable, valid LLM_PRICES)."""


def jsonable(value: Any) -> Any:
    """What an agent returned, as plain JSON data PostgreSQL can store: mappings with string
    keys, lists, strings, finite numbers. NUL characters (which neither text nor jsonb
    accepts) and unpaired surrogates in strings become U+FFFD."""
    if isinstance(value, str):
        return made_storable(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {jsonable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return [jsonable(v) for v in sorted(value, key=repr)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # The fields it shows (a TaskContext's cancellation signal is not data).
        return {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    return jsonable(str(value))
