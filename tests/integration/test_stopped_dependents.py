"""Tasks waiting for a task that failed for good or was cancelled can never run: they end the
same way, with their subtrees, naming the dependency that stopped them, and their summary tasks
roll up; retrying that dependency (or a summary above them) runs them all again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Task, TaskEvent
from orchestration import lifecycle, orchestrator
from orchestration.decomposition import create_task
from orchestration.errors import InvalidTransition
from tests.integration.test_pipeline import active_team
from tests.support.invariants import check_invariants


def new(team_id: uuid.UUID, title: str, **data: Any) -> uuid.UUID:
    return create_task(team_id, {"title": title, **data}).id


def states(team_id: uuid.UUID) -> dict[uuid.UUID, tuple[str, str | None]]:
    with session_scope() as s:
        return {
            t.id: (t.status.value, t.error_message)
            for t in s.scalars(select(Task).where(Task.team_id == team_id))
        }


def events_of(task_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    with session_scope() as s:
        return [
            (e.kind, dict(e.data or {}))
            for e in s.scalars(
                select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
            )
        ]


def test_what_waits_for_a_failed_task_fails_with_its_subtree_naming_it() -> None:
    team_id = active_team(workers=1, capacity=5)
    root = new(team_id, "goal")
    x = new(team_id, "x", parent_task_id=root)
    d = new(team_id, "d", parent_task_id=root, depends_on=[x])
    e = new(team_id, "e", parent_task_id=root, depends_on=[d])
    s = new(team_id, "s", parent_task_id=root, depends_on=[x])
    s1 = new(team_id, "s1", parent_task_id=s)
    y = new(team_id, "y", parent_task_id=root, depends_on=[s1])
    other = new(team_id, "unrelated")
    orchestrator.run_pass(team_id)  # x and the unrelated task are assigned
    assert lifecycle.fail(x, None, "boom")

    got = states(team_id)
    assert got[x] == ("failed", "boom")
    assert got[d] == ("failed", f"dependency {x} failed")
    assert got[e] == ("failed", f"dependency {d} failed")
    assert got[s] == ("failed", f"dependency {x} failed")
    assert got[s1] == ("failed", f"dependency {x} failed")
    assert got[y] == ("failed", f"dependency {s1} failed")
    assert got[root][0] == "failed"
    assert got[other][0] == "assigned"
    assert ("task.failed", {"error": f"dependency {x} failed", "dependency": str(x)}) in events_of(
        d
    )
    check_invariants(team_id, all_done=False)

    # What it stopped waits for it, so it cannot be retried first; the failed task can, and
    # that runs again everything its failure stopped, each waiting as before.
    with pytest.raises(InvalidTransition, match=f"task {d} waits for {x}, which failed"):
        lifecycle.retry_task(team_id, d)
    lifecycle.retry_task(team_id, x)
    got = states(team_id)
    assert got[x] == ("pending", None)
    assert {got[t] for t in (d, e, s, s1, y)} == {("blocked", None)}
    assert got[root][0] in ("pending", "in_progress")


def test_retrying_the_goal_runs_again_what_a_failure_stopped() -> None:
    team_id = active_team(workers=1, capacity=5)
    root = new(team_id, "goal")
    x = new(team_id, "x", parent_task_id=root)
    d = new(team_id, "d", parent_task_id=root, depends_on=[x])
    orchestrator.run_pass(team_id)
    assert lifecycle.fail(x, None, "boom")
    assert states(team_id)[root][0] == "failed"
    lifecycle.retry_task(team_id, root)
    got = states(team_id)
    assert (got[x], got[d]) == (("pending", None), ("blocked", None))


def test_what_still_waits_for_another_ended_task_stops_again() -> None:
    team_id = active_team(workers=1, capacity=5)
    x = new(team_id, "x")
    z = new(team_id, "z")
    both = new(team_id, "waits for both", depends_on=[x, z])
    orchestrator.run_pass(team_id)
    assert lifecycle.fail(x, None, "boom")
    lifecycle.cancel_task(team_id, z)
    assert states(team_id)[both] == ("failed", f"dependency {x} failed")
    lifecycle.retry_task(team_id, x)  # z is still cancelled: what waits for both stops again
    got = states(team_id)
    assert got[x] == ("pending", None)
    assert got[both] == ("cancelled", f"dependency {z} was cancelled")


def test_what_waits_for_a_cancelled_task_is_cancelled_too() -> None:
    team_id = active_team(workers=1, capacity=5)
    s = new(team_id, "s")
    s1 = new(team_id, "s1", parent_task_id=s)
    waits = new(team_id, "waits for s1", depends_on=[s1])
    then = new(team_id, "then", depends_on=[waits])
    free = new(team_id, "free")
    lifecycle.cancel_task(team_id, s)  # cancels s1 with it: what waits for s1 stops too
    got = states(team_id)
    assert got[s][0] == got[s1][0] == "cancelled"
    assert got[waits] == ("cancelled", f"dependency {s1} was cancelled")
    assert got[then] == ("cancelled", f"dependency {waits} was cancelled")
    assert got[free] == ("pending", None)
    check_invariants(team_id, all_done=False)


def test_a_failure_rolled_up_to_a_summary_stops_what_waits_for_the_summary() -> None:
    team_id = active_team(workers=1, capacity=5)
    s = new(team_id, "s")
    s1 = new(team_id, "s1", parent_task_id=s)
    after = new(team_id, "after s", depends_on=[s])
    orchestrator.run_pass(team_id)
    assert lifecycle.fail(s1, None, "boom")
    got = states(team_id)
    assert got[s] == ("failed", f"subtask {s1} failed")
    assert got[after] == ("failed", f"dependency {s} failed")
    check_invariants(team_id, all_done=False)
