"""What agents hand back that PostgreSQL cannot take as is, and agents that fail while judging:
each task ends on its own merits, once, and never takes other tasks' outcomes down with it."""

# ruff: noqa: F811

from __future__ import annotations

import contextlib
import threading
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from db.engine import session_scope
from db.models import MemberRole, Task, TaskEvent, TaskStatus, TeamMember
from orchestration.agents.base import ExecutionFailed, ExecutionResult, ReviewVerdict, TaskContext
from orchestration.consumer import AgentConsumer
from orchestration.errors import AgentError
from tests.integration.test_pipeline import (  # noqa: F401 (fixtures)
    active_team,
    fast_settings,
    new_task,
    run_until,
)
from tests.support.invariants import check_invariants

# What no text or jsonb column takes: NUL characters and an unpaired surrogate.
DIRTY = {"text": "a\x00b\ud800c", "key\x00": ["\x00"], "nested": {"ok": "é"}}


class TogetherExecutor:
    """Every run waits for the others (so their outcomes commit in one batch), then returns
    input_data["output"] (DIRTY when it is "dirty") and input_data["tokens"]."""

    def __init__(self, runs: int) -> None:
        self.barrier = threading.Barrier(runs, timeout=10)
        self.lock = threading.Lock()
        self.runs: list[uuid.UUID] = []

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        with self.lock:
            self.runs.append(ctx.task_id)
        with contextlib.suppress(threading.BrokenBarrierError):  # a run again, alone
            self.barrier.wait()
        output = ctx.input_data["output"]
        return ExecutionResult(
            DIRTY if output == "dirty" else dict(output), tokens=ctx.input_data["tokens"]
        )


def rows(ids: list[uuid.UUID]) -> dict[uuid.UUID, Task]:
    with session_scope() as s:
        found = s.execute(select(Task).where(Task.id.in_(ids))).scalars().all()
        s.expunge_all()
        return {t.id: t for t in found}


def settled(ids: list[uuid.UUID]) -> Any:
    final = (TaskStatus.COMPLETED, TaskStatus.FAILED)
    return lambda: all(t.status in final for t in rows(ids).values())


def drive(team_id: uuid.UUID, consumer: AgentConsumer, ids: list[uuid.UUID]) -> None:
    consumer.start()
    try:
        run_until(team_id, settled(ids))
    finally:
        consumer.stop()


def test_an_output_with_nul_characters_or_lone_surrogates_is_stored_cleaned_once(
    fast_settings: None,
) -> None:
    team_id = active_team(workers=2, capacity=1)
    clean = {"text": "fine"}
    poison = new_task(team_id, "poison", input_data={"output": "dirty", "tokens": 30})
    other = new_task(team_id, "other", input_data={"output": clean, "tokens": 30})
    executor = TogetherExecutor(2)
    drive(team_id, AgentConsumer(concurrency=2, executor=executor), [poison, other])
    assert sorted(map(str, executor.runs)) == sorted([str(poison), str(other)])  # once each
    found = rows([poison, other])
    assert found[poison].status is TaskStatus.COMPLETED
    assert found[poison].output_data == {
        "text": "a\ufffdb\ufffdc",
        "key\ufffd": ["\ufffd"],
        "nested": {"ok": "é"},
    }
    assert (found[other].status, found[other].output_data) == (TaskStatus.COMPLETED, clean)
    check_invariants(team_id, all_done=True)


def test_a_result_the_database_refuses_fails_its_own_task_only_and_runs_once(
    fast_settings: None,
) -> None:
    team_id = active_team(workers=2, capacity=1)
    # More tokens than a task's actual_tokens column holds (a server reporting nonsense).
    huge = new_task(team_id, "huge", input_data={"output": {"r": 1}, "tokens": 3_000_000_000})
    other = new_task(team_id, "other", input_data={"output": {"r": 2}, "tokens": 30})
    executor = TogetherExecutor(2)
    drive(team_id, AgentConsumer(concurrency=2, executor=executor), [huge, other])
    assert sorted(map(str, executor.runs)) == sorted([str(huge), str(other)])  # once each
    found = rows([huge, other])
    assert found[huge].status is TaskStatus.FAILED
    assert "its result could not be stored" in (found[huge].error_message or "")
    assert found[huge].attempts == 1
    assert (found[other].status, found[other].output_data) == (TaskStatus.COMPLETED, {"r": 2})
    check_invariants(team_id, all_done=True)


class OverloadedReviewer:
    """Fails its first `failures` reviews of each task the way a busy model server does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reviews: dict[uuid.UUID, int] = {}

    def review(self, ctx: TaskContext, output: dict[str, Any]) -> ReviewVerdict:
        self.reviews[ctx.task_id] = self.reviews.get(ctx.task_id, 0) + 1
        if self.reviews[ctx.task_id] <= self.failures:
            # What the calls before it cost: paid, so counted on the manager all the same.
            raise AgentError("HTTP 503: overloaded", tokens=7, cost=Decimal("0.002"))
        return ReviewVerdict(True, "meets every criterion", tokens=3, cost=Decimal("0.001"))


def judged(failures: int) -> tuple[uuid.UUID, Task, int]:
    """A task with acceptance criteria run to its end under an OverloadedReviewer: its team,
    its row and how many reviews it had."""
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "judged", acceptance_criteria="is done", input_data=_plain())
    reviewer = OverloadedReviewer(failures)
    consumer = AgentConsumer(concurrency=1, executor=TogetherExecutor(1), reviewer=reviewer)
    drive(team_id, consumer, [task])
    check_invariants(team_id, all_done=True)
    return team_id, rows([task])[task], reviewer.reviews[task]


def test_a_review_that_errors_is_retried_with_backoff_like_a_failed_run(
    fast_settings: None,
) -> None:
    team_id, found, reviews = judged(failures=1)
    assert (found.status, found.attempts, reviews) == (TaskStatus.COMPLETED, 2, 2)
    with session_scope() as s:
        retried = s.scalars(
            select(TaskEvent.data).where(
                TaskEvent.task_id == found.id, TaskEvent.kind == "task.retrying"
            )
        ).all()
    assert [d["error"] for d in retried] == ["review failed: HTTP 503: overloaded"]
    assert manager_usage(team_id) == (7 + 3, Decimal("0.003"))  # the failed review and the good


def test_a_review_that_keeps_erroring_fails_the_task_saying_so(fast_settings: None) -> None:
    _, found, reviews = judged(failures=99)
    assert (found.status, reviews) == (TaskStatus.FAILED, 3)
    assert found.error_message == "failed after 3 attempt(s): review failed: HTTP 503: overloaded"


def manager_usage(team_id: uuid.UUID) -> tuple[int, Decimal]:
    with session_scope() as s:
        row = s.execute(
            select(TeamMember.total_tokens_used, TeamMember.total_cost).where(
                TeamMember.team_id == team_id, TeamMember.role == MemberRole.MANAGER
            )
        ).one()
        return int(row[0]), Decimal(row[1])


def _plain() -> dict[str, Any]:
    return {"output": {"r": "done"}, "tokens": 10}


class RefusedExecutor:
    """Fails every run as a model server refusing the request itself does."""

    def __init__(self) -> None:
        self.runs = 0

    def execute(self, ctx: TaskContext) -> ExecutionResult:
        self.runs += 1
        raise ExecutionFailed("HTTP 400: context too long", tokens=5, retryable=False)


def test_a_failure_no_attempt_can_fix_fails_the_task_at_once(fast_settings: None) -> None:
    team_id = active_team(workers=1, capacity=1)
    task = new_task(team_id, "too long")
    executor = RefusedExecutor()
    drive(team_id, AgentConsumer(concurrency=1, executor=executor), [task])
    found = rows([task])[task]
    assert (found.status, executor.runs) == (TaskStatus.FAILED, 1)
    assert found.error_message == (
        "failed after 1 attempt(s), not retried: HTTP 400: context too long"
    )
    check_invariants(team_id, all_done=True)
