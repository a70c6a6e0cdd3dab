"""The engine's errors. Each maps to one HTTP status (webapp/errors.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class OrchestrationError(Exception):
    """Base of every error the engine raises on purpose."""

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(OrchestrationError):
    """An unknown id, or one of another team."""


class InvalidInput(OrchestrationError):
    """A value the engine cannot accept (beyond what schemas check)."""


class Conflict(OrchestrationError):
    """The request contradicts the current state."""


class InvalidTransition(Conflict):
    """An impossible state change (start an active team, cancel a completed task, ...)."""


class DependencyCycle(Conflict):
    def __init__(self, cycle: list[Any]) -> None:
        ids = [str(x) for x in cycle]
        super().__init__(
            "adding this dependency would create a cycle: " + " -> ".join(ids),
            {"cycle": ids},
        )
        self.cycle = ids


class SelfDependency(Conflict):
    def __init__(self, task_id: Any) -> None:
        super().__init__(f"task {task_id} cannot depend on itself", {"cycle": [str(task_id)] * 2})


class NoManager(Conflict):
    """Decomposition needs a manager member."""


class AgentError(OrchestrationError):
    """A planner, executor or reviewer failed (model server down, invalid output, ...).

    tokens and cost: what the calls before the failure were billed, which the caller still
    records (answers that could not be used were paid for all the same)."""

    def __init__(
        self,
        message: str,
        errors: dict[str, Any] | None = None,
        *,
        tokens: int = 0,
        cost: Decimal = Decimal(0),
    ) -> None:
        super().__init__(message, errors)
        self.tokens = tokens
        self.cost = cost


class AgentTimeout(AgentError):
    """An agent gave no answer within the time its caller allows (ORCH_DECOMPOSE_TIMEOUT)."""


class Unavailable(OrchestrationError):
    """A backing service (PostgreSQL, Redis) does not answer."""
