"""A dependency goes only on a task that has not started; a summary task has started once any
task below it is in flight or finished (DESIGN.md, Hierarchy: its dependencies hold back all
its descendants, and depending on it means depending on its whole subtree). Without the
refusal, a subtask already assigned ran anyway, the summary completed before its new
dependency, and its dependents started early."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import get_engine, session_scope
from db.models import TaskStatus
from orchestration import lifecycle, orchestrator
from orchestration.decomposition import create_task
from orchestration.dependencies import add_dependencies, add_dependency
from orchestration.errors import InvalidTransition
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.support.invariants import check_invariants
from tests.support.services import wait_for_a_lock_wait


def active_team(workers: int = 1, capacity: int = 1) -> uuid.UUID:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    for _ in range(workers):
        WorkerFactory(team=team, max_concurrent_tasks=capacity)
    return uuid.UUID(str(team.id))


def new_task(team_id: uuid.UUID, title: str, **data: Any) -> uuid.UUID:
    return create_task(team_id, {"title": title, **data}).id


def one_edge(team_id: uuid.UUID, task: uuid.UUID, dep: uuid.UUID) -> bool:
    return add_dependency(team_id, task, dep)[1]


def batch_of_one(team_id: uuid.UUID, task: uuid.UUID, dep: uuid.UUID) -> bool:
    return add_dependencies(team_id, [(task, dep)])[0] == 1


EDGE_ROUTES = pytest.mark.parametrize("add", [one_edge, batch_of_one], ids=["one", "batch"])
Add = Callable[[uuid.UUID, uuid.UUID, uuid.UUID], bool]


def state(task_id: uuid.UUID) -> tuple[str, int]:
    with get_engine().connect() as conn:
        row = conn.execute(
            text("SELECT status, unmet_dependencies FROM tasks WHERE id = :id"), {"id": task_id}
        ).one()
    return str(row.status), int(row.unmet_dependencies)


def edges_on(task_id: uuid.UUID) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM task_dependencies WHERE task_id = :id"), {"id": task_id}
            ).scalar_one()
        )


def run(task_id: uuid.UUID, worker_id: uuid.UUID) -> None:
    claimed = lifecycle.claim(task_id, worker_id, "token")
    assert claimed is not None
    assert lifecycle.complete(task_id, "token", claimed.status, {"ok": True})


@EDGE_ROUTES
@pytest.mark.parametrize("depth", [1, 3])
def test_a_summary_whose_subtask_is_assigned_takes_no_new_dependency(add: Add, depth: int) -> None:
    """The summary still shows pending (its subtask is assigned, not yet claimed), yet it has
    started: the edge is refused, nothing of it is written, and the summary completes with its
    subtask, freeing its dependents, as it would have without the attempt."""
    team_id = active_team()
    summary = parent = new_task(team_id, "S")
    for level in range(depth - 1):
        parent = new_task(team_id, f"M{level}", parent_task_id=parent)
    leaf = new_task(team_id, "A", parent_task_id=parent, priority=9)
    dep = new_task(team_id, "D", priority=1)
    dependent = new_task(team_id, "E", depends_on=[summary])
    assigned = orchestrator.run_pass(team_id).assigned
    assert [a.task_id for a in assigned] == [leaf]
    assert state(summary) == ("pending", 0)

    with pytest.raises(InvalidTransition, match=f"{leaf} below it is assigned"):
        add(team_id, summary, dep)

    assert edges_on(summary) == 0
    assert state(summary) == ("pending", 0)
    run(leaf, assigned[0].worker_id)
    assert state(summary) == ("completed", 0)
    assert state(dependent) == ("pending", 0)
    assert state(dep) == ("pending", 0)
    check_invariants(team_id, all_done=False)


@EDGE_ROUTES
def test_a_retried_summary_with_completed_work_takes_no_new_dependency(add: Add) -> None:
    """Retrying a failed summary reopens it as pending, its completed subtask kept: it has
    started all the same."""
    team_id = active_team(capacity=2)
    summary = new_task(team_id, "S")
    done = new_task(team_id, "A1", parent_task_id=summary)
    failing = new_task(team_id, "A2", parent_task_id=summary)
    assigned = orchestrator.run_pass(team_id).assigned
    assert {a.task_id for a in assigned} == {done, failing}
    run(done, assigned[0].worker_id)
    assert lifecycle.fail(failing, None, "gave up")
    assert state(summary)[0] == "failed"
    lifecycle.retry_task(team_id, summary)
    assert state(summary) == ("pending", 0)
    dep = new_task(team_id, "D")

    with pytest.raises(InvalidTransition, match=f"{done} below it is completed"):
        add(team_id, summary, dep)

    # (No check_invariants: a retry keeps the worker's count of the failure it undid.)
    assert edges_on(summary) == 0
    assert state(summary) == ("pending", 0)


@EDGE_ROUTES
def test_a_summary_nothing_below_has_started_takes_the_dependency_for_its_subtree(
    add: Add,
) -> None:
    team_id = active_team()
    dep = new_task(team_id, "D")
    summary = new_task(team_id, "S")
    middle = new_task(team_id, "M", parent_task_id=summary)
    leaf = new_task(team_id, "A", parent_task_id=middle, priority=9)
    assert add(team_id, summary, dep)
    assert [state(t)[0] for t in (summary, middle, leaf)] == ["blocked"] * 3
    assigned = orchestrator.run_pass(team_id).assigned
    assert [a.task_id for a in assigned] == [dep]
    run(dep, assigned[0].worker_id)
    assert [state(t)[0] for t in (summary, middle, leaf)] == ["pending"] * 3
    assigned = orchestrator.run_pass(team_id).assigned
    assert [a.task_id for a in assigned] == [leaf]
    run(leaf, assigned[0].worker_id)
    assert state(summary) == ("completed", 0)
    check_invariants(team_id, all_done=True)


@EDGE_ROUTES
def test_an_edge_on_a_summary_waits_for_an_assignment_below_it_and_is_refused(add: Add) -> None:
    """A pass assigning the subtask while the edge is checked: the check waits for the
    assignment's row and reads it as committed, rather than taking the edge and leaving the
    assigned subtask unblocked."""
    team_id = active_team()
    summary = new_task(team_id, "S")
    leaf = new_task(team_id, "A", parent_task_id=summary)
    dep = new_task(team_id, "D")
    outcome: dict[str, Any] = {}

    def adding() -> None:
        try:
            outcome["added"] = add(team_id, summary, dep)
        except Exception as exc:  # read below
            outcome["error"] = exc

    adder = threading.Thread(target=adding)
    with session_scope() as assignment:
        # The pass's assign statement, holding the subtask's row until it commits.
        assignment.execute(
            text("UPDATE tasks SET status = 'assigned' WHERE id = :id AND status = 'pending'"),
            {"id": leaf},
        )
        adder.start()
        wait_for_a_lock_wait("the edge never waited for the subtask's row")
    adder.join(timeout=20)
    assert isinstance(outcome.get("error"), InvalidTransition), outcome
    assert f"{leaf} below it is assigned" in str(outcome["error"])
    assert edges_on(summary) == 0
    assert state(leaf) == ("assigned", 0)


def test_a_summary_waiting_for_a_dependency_never_completes_early() -> None:
    """Defence in depth: should a summary wait for a dependency while work below it ran (as a
    dependency accepted under the old rule left it), the subtask's completion does not
    complete it, and what depends on it stays blocked."""
    team_id = active_team()
    summary = new_task(team_id, "S")
    leaf = new_task(team_id, "A", parent_task_id=summary)
    dependent = new_task(team_id, "E", depends_on=[summary])
    assigned = orchestrator.run_pass(team_id).assigned
    assert [a.task_id for a in assigned] == [leaf]
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE tasks SET status = 'blocked', unmet_dependencies = 1 WHERE id = :id"),
            {"id": summary},
        )
    run(leaf, assigned[0].worker_id)
    assert state(leaf)[0] == TaskStatus.COMPLETED.value
    assert state(summary) == ("blocked", 1)
    assert state(dependent) == ("blocked", 1)
