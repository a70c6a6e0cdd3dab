"""Dependency edits meeting the ends of the tasks they join: an edge committed while its
dependency completes, an edge onto a task that already failed or was cancelled, an edge removed
from a task that has finished, and a worker's capacity lowered under its assigned work. In each
case the counts stay exact and no task waits for ever."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import text

from db.engine import get_engine, session_scope
from db.models import TaskStatus
from orchestration import lifecycle, orchestrator, teams
from orchestration.dependencies import remove_dependency
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.integration.test_summary_dependencies import (
    EDGE_ROUTES,
    Add,
    batch_of_one,
    new_task,
    one_edge,
    state,
)
from tests.support.invariants import check_invariants
from tests.support.services import wait_for_a_lock_wait


def active_team(workers: int = 1, capacity: int = 1) -> tuple[uuid.UUID, list[uuid.UUID]]:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    members = [WorkerFactory(team=team, max_concurrent_tasks=capacity) for _ in range(workers)]
    return uuid.UUID(str(team.id)), [uuid.UUID(str(m.id)) for m in members]


def run(task_id: uuid.UUID, worker_id: uuid.UUID, token: str = "token") -> None:
    claimed = lifecycle.claim(task_id, worker_id, token)
    assert claimed is not None
    assert lifecycle.complete(task_id, token, claimed.status, {"ok": True})


class Call(threading.Thread):
    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__()
        self.call = target
        self.outcome: object = None

    def run(self) -> None:
        try:
            self.outcome = self.call()
        except Exception as exc:  # read by the test
            self.outcome = exc


@EDGE_ROUTES
def test_an_edge_committed_while_its_dependency_completes_is_counted_down(add: Add) -> None:
    """The completion's statement waits for the dependency's row, which the edge's transaction
    holds; it reads which tasks depend on it afresh once that has committed. Before, it used
    its own older snapshot, missed the new edge, and the task waited for ever."""
    team_id, [worker] = active_team()
    waiting = new_task(team_id, "X")  # a summary: adding its edge share-locks what is below
    below = new_task(team_id, "C", parent_task_id=waiting, priority=1)
    dep = new_task(team_id, "D", priority=9)
    assert [a.task_id for a in orchestrator.run_pass(team_id).assigned] == [dep]
    assert lifecycle.claim(dep, worker, "token") is not None
    adder = Call(lambda: add(team_id, waiting, dep))
    completer = Call(lambda: lifecycle.complete(dep, "token", TaskStatus.IN_PROGRESS, {}))
    with session_scope() as holder:
        holder.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": below})
        adder.start()  # locks X and D, then waits for C
        wait_for_a_lock_wait("the edge never waited for the subtask")
        completer.start()  # waits for D
        wait_for_a_lock_wait("the completion never waited for the edge", sessions=2)
    adder.join(timeout=20)
    completer.join(timeout=20)
    assert adder.outcome is True and completer.outcome is True, (adder.outcome, completer.outcome)
    assert state(waiting) == ("pending", 0)
    assert state(below) == ("pending", 0)
    check_invariants(team_id, all_done=False)


def new_edge(team_id: uuid.UUID, task: uuid.UUID | None, dep: uuid.UUID, route: str) -> uuid.UUID:
    if route == "create":
        return new_task(team_id, "X", depends_on=[dep])
    assert task is not None
    (one_edge if route == "one" else batch_of_one)(team_id, task, dep)
    return task


@pytest.mark.parametrize("route", ["one", "batch", "create"])
@pytest.mark.parametrize("ending", ["failed", "cancelled"])
def test_an_edge_onto_a_task_that_failed_or_was_cancelled_ends_its_task_the_same_way(
    route: str, ending: str
) -> None:
    """As its dependents of before did (stop_dependents); a retry of the dependency resumes it
    too. Before, the task waited for ever, blocked, and so did its summary."""
    team_id, [worker] = active_team()
    dep = new_task(team_id, "D", priority=9)
    summary = new_task(team_id, "P")
    task = None if route == "create" else new_task(team_id, "X", parent_task_id=summary)
    if ending == "failed":
        assert [a.task_id for a in orchestrator.run_pass(team_id).assigned] == [dep]
        assert lifecycle.claim(dep, worker, "token") is not None
        assert lifecycle.fail(dep, "token", "no luck")
    else:
        lifecycle.cancel_task(team_id, dep)
    task = new_edge(team_id, task, dep, route)
    assert state(task)[0] == ending
    with get_engine().connect() as conn:
        row = conn.execute(
            text("SELECT error_message, stopped_by FROM tasks WHERE id = :id"), {"id": task}
        ).one()
    verb = "failed" if ending == "failed" else "was cancelled"
    assert (row.error_message, row.stopped_by) == (f"dependency {dep} {verb}", dep)
    if route != "create":
        assert state(summary)[0] == ending  # its only subtask ended

    lifecycle.retry_task(team_id, dep)
    assert state(task) == ("blocked", 1)
    assert [a.task_id for a in orchestrator.run_pass(team_id).assigned] == [dep]
    run(dep, worker, "again")
    assert state(task) == ("pending", 0)
    check_invariants(team_id, all_done=False)


def test_a_finished_task_keeps_an_exact_count_when_a_dependency_is_removed() -> None:
    """A retry resumes a task from its count; a removal skipped on a finished task left one
    too many, and the retried task waited for a dependency it no longer had."""
    team_id, [worker] = active_team(capacity=5)
    lifecycle.pause_team(team_id)
    first = new_task(team_id, "H")
    second = new_task(team_id, "D")
    task = new_task(team_id, "X", depends_on=[first, second])
    lifecycle.cancel_task(team_id, task)
    remove_dependency(team_id, task, second)
    lifecycle.retry_task(team_id, task)
    assert state(task) == ("blocked", 1)
    lifecycle.resume_team(team_id)
    orchestrator.run_pass(team_id)
    run(first, worker)
    assert state(task) == ("pending", 0)
    check_invariants(team_id, all_done=False)


def test_lowering_a_workers_capacity_gives_back_what_it_has_not_started() -> None:
    """Its lowest-priority assigned tasks go to other workers, as many as its load exceeds the
    new limit by; what it has started stays. Before, all stayed, to run beyond the limit."""
    team_id, [worker, other] = active_team(workers=2, capacity=3)
    teams.update_member(team_id, other, status="offline")
    tasks = [new_task(team_id, f"t{p}", priority=p) for p in (9, 5, 1)]
    orchestrator.run_pass(team_id)
    run_first = lifecycle.claim(tasks[0], worker, "token")
    assert run_first is not None
    teams.update_member(team_id, worker, max_concurrent_tasks=2)
    assert state(tasks[2])[0] == "pending"  # the lowest priority went back
    assert state(tasks[1])[0] == "assigned"
    teams.update_member(team_id, worker, max_concurrent_tasks=1)
    assert state(tasks[1])[0] == "pending"
    assert state(tasks[0])[0] == "in_progress"  # started: it finishes here
    teams.update_member(team_id, other, status="idle")
    orchestrator.run_pass(team_id)
    with get_engine().connect() as conn:
        loads: dict[uuid.UUID, int] = dict(
            conn.execute(
                text("SELECT id, current_workload FROM team_members WHERE id IN (:a, :b)"),
                {"a": worker, "b": other},
            ).all()
        )
    assert (loads[worker], loads[other]) == (1, 2)
    check_invariants(team_id, all_done=False)
