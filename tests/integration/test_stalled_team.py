"""An active team whose ready tasks no worker could ever take says so (status_reason and a
team.stalled event, once), and stops saying so when a worker can take them."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from db.engine import session_scope
from db.models import TaskEvent, Team
from orchestration import orchestrator, teams
from orchestration.orchestrator import NO_WORKERS
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.integration.test_pipeline import new_task


def reason_and_events(team_id: uuid.UUID) -> tuple[str | None, int]:
    with session_scope() as s:
        team = s.get(Team, team_id)
        assert team is not None
        stalled = s.scalar(
            select(func.count())
            .select_from(TaskEvent)
            .where(TaskEvent.team_id == team_id, TaskEvent.kind == "team.stalled")
        )
        return team.status_reason, int(stalled or 0)


def test_a_team_without_a_worker_that_could_take_its_tasks_says_so() -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    away = WorkerFactory(team=team, max_concurrent_tasks=1)
    team_id = uuid.UUID(str(team.id))
    teams.update_member(team_id, away.id, status="offline")
    task = new_task(team_id, "waits")
    for _ in range(2):
        assert orchestrator.run_pass(team_id).assigned == []
    assert reason_and_events(team_id) == (NO_WORKERS, 1)  # said once

    teams.update_member(team_id, away.id, status="idle")
    assert [a.task_id for a in orchestrator.run_pass(team_id).assigned] == [task]
    assert reason_and_events(team_id) == (None, 1)


def test_busy_workers_are_no_reason_to_say_anything() -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    WorkerFactory(team=team, max_concurrent_tasks=1)
    team_id = uuid.UUID(str(team.id))
    new_task(team_id, "first")
    new_task(team_id, "second")
    orchestrator.run_pass(team_id)
    assert orchestrator.run_pass(team_id).assigned == []  # the only worker is busy
    assert reason_and_events(team_id) == (None, 0)
