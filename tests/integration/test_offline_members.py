"""A member set offline keeps the work it has started and gives back what it has not: its
assigned tasks are pending again and the next pass gives them to another worker."""

from __future__ import annotations

import uuid

import redis
from sqlalchemy import select

from db.engine import session_scope
from db.models import Task, TaskEvent, TaskStatus, TeamMember
from orchestration import keys, lifecycle, orchestrator, streams, teams
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.integration.test_pipeline import new_task
from tests.support.invariants import check_invariants


def assigned_to(team_id: uuid.UUID) -> dict[uuid.UUID, tuple[TaskStatus, uuid.UUID | None]]:
    with session_scope() as s:
        return {
            t.id: (t.status, t.assigned_to)
            for t in s.scalars(select(Task).where(Task.team_id == team_id))
        }


def test_an_offline_members_unstarted_tasks_go_to_another_worker(
    redis_client: redis.Redis,
) -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    leaving = WorkerFactory(team=team, max_concurrent_tasks=3)
    team_id = uuid.UUID(str(team.id))
    started, waiting = new_task(team_id, "started"), new_task(team_id, "not started")
    orchestrator.run_pass(team_id)
    entries = {
        e.task_id: e
        for e in (
            streams.Entry.parse(team_id, i, f)
            for i, f in redis_client.xrange(keys.task_stream(team_id))
        )
    }
    [claimed] = lifecycle.claim_many(
        [lifecycle.ClaimRequest(started, leaving.id, "run/1", entries[started].assignment)]
    )
    assert claimed is not None
    staying = WorkerFactory(team=team, max_concurrent_tasks=3)

    teams.update_member(team_id, leaving.id, status="offline")

    got = assigned_to(team_id)
    assert got[started] == (TaskStatus.IN_PROGRESS, leaving.id)
    assert got[waiting] == (TaskStatus.PENDING, None)
    with session_scope() as s:
        assert s.get(TeamMember, leaving.id).current_workload == 1  # type: ignore[union-attr]
        kinds = s.scalars(select(TaskEvent.kind).where(TaskEvent.task_id == waiting)).all()
    assert "task.unassigned" in kinds
    # Its old entry claims nothing now; the next pass gives the task to the other worker.
    stale = lifecycle.ClaimRequest(waiting, leaving.id, "run/2", entries[waiting].assignment)
    assert lifecycle.claim_many([stale]) == [None]
    orchestrator.run_pass(team_id)
    assert assigned_to(team_id)[waiting] == (TaskStatus.ASSIGNED, staying.id)
    check_invariants(team_id, all_done=False)
