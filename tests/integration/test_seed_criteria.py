"""Seed behaviours no other test pinned down: completed entries acknowledged, offline workers left
out of the pass, oldest first among equal priorities, workers least loaded first, reconcile
trimming what was acknowledged, the assignment score as the API shows it after a real pass, the
default decomposition depth, paused_at, and a consumer group that starts at 0."""

# ruff: noqa: F811

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update

from db.engine import get_engine, session_scope
from db.models import MemberStatus, Task, TaskStatus, Team
from orchestration import keys, lifecycle, orchestrator, streams
from orchestration.config import reload_settings
from orchestration.consumer import AgentConsumer
from orchestration.redis_client import get_redis
from orchestration.scoring import AssignmentScorer
from tests.factories import ManagerFactory, TeamFactory, WorkerFactory
from tests.integration.test_pipeline import (  # noqa: F401 (fixtures)
    PickyReviewer,
    RecordingExecutor,
    active_team,
    all_final,
    executor,
    fast_settings,
    new_task,
)
from tests.support.invariants import check_invariants, unacknowledged
from webapp.testing import V1, ApiClient


@pytest.fixture
def patient_consumer(
    fast_settings: None, executor: RecordingExecutor, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentConsumer]:
    """A consumer whose visibility timeout outlasts every test here: an entry left pending is
    not reclaimed (found stale and acknowledged then) before the test looks at it."""
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT", "60")
    reload_settings()
    c = AgentConsumer(concurrency=4, executor=executor, reviewer=PickyReviewer())
    c.start()
    yield c
    c.stop()


def pass_until_final(team_id: uuid.UUID, timeout: float = 20.0) -> None:
    """Passes only (no reconcile, so no trim) until every task is final."""
    done = all_final(team_id)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "tasks not final in time"
        orchestrator.run_pass(team_id)
        time.sleep(0.1)


def assigned_to(task_id: uuid.UUID) -> tuple[TaskStatus, uuid.UUID | None]:
    with session_scope() as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task.status, task.assigned_to


# -- 1. completed entries are acknowledged -----------------------------------------------------


def three_run() -> uuid.UUID:
    """A team whose three tasks ran to completion, each entry delivered once, none trimmed
    and every one acknowledged."""
    team_id = active_team(workers=2, capacity=2)
    for i in range(3):
        new_task(team_id, f"t{i}")
    pass_until_final(team_id)
    assert get_redis().xlen(keys.task_stream(team_id)) == 3
    assert unacknowledged(team_id) == []
    return team_id


def test_completed_tasks_leave_no_entry_pending_in_the_team_stream(
    patient_consumer: AgentConsumer, redis_client: redis.Redis
) -> None:
    team_id = three_run()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    assert redis_client.xpending(stream, group)["pending"] == 0
    assert check_invariants(team_id) == {"completed": 3}


# -- 2. offline workers are left out of the pass -----------------------------------------------


def test_an_offline_specialist_is_passed_over_for_an_idle_worker() -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    # The best score for a coding task, were it online.
    WorkerFactory(team=team, specialization="Technical Executor", status=MemberStatus.OFFLINE)
    idle = WorkerFactory(team=team, specialization="Content Creator", status=MemberStatus.IDLE)
    task = new_task(team.id, "code it", required_skills=["coding"])

    result = orchestrator.run_pass(team.id)

    assert [(a.task_id, a.worker_id) for a in result.assigned] == [(task, idle.id)]
    assert assigned_to(task) == (TaskStatus.ASSIGNED, idle.id)
    assert result.workers == 1
    check_invariants(team.id, all_done=False)


# -- 3. oldest first among equal priorities ----------------------------------------------------


def test_with_room_for_one_the_older_of_equal_priority_tasks_goes_first() -> None:
    team_id = active_team(workers=1, capacity=1)
    older = new_task(team_id, "older", priority=5)
    newer = new_task(team_id, "newer", priority=5)
    with get_engine().begin() as conn:  # a clear gap, whatever the clock's resolution
        conn.execute(
            text("UPDATE tasks SET created_at = created_at - interval '1 minute' WHERE id = :t"),
            {"t": older},
        )

    result = orchestrator.run_pass(team_id)

    assert [a.task_id for a in result.assigned] == [older]
    assert assigned_to(older)[0] is TaskStatus.ASSIGNED
    assert assigned_to(newer) == (TaskStatus.PENDING, None)
    check_invariants(team_id, all_done=False)


def test_the_older_of_equal_priority_tasks_is_scored_first_and_gets_the_first_worker() -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    # Same skills, no load, no history: every score ties, and the first worker offered (the
    # elder) wins each tie it is free for.
    first = WorkerFactory(team=team, specialization="Content Creator", max_concurrent_tasks=1)
    second = WorkerFactory(team=team, specialization="Content Creator", max_concurrent_tasks=1)
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE team_members SET joined_at = now() - interval '1 hour' WHERE id = :m"),
            {"m": first.id},
        )
    older = new_task(team.id, "older", priority=5)
    newer = new_task(team.id, "newer", priority=5)
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE tasks SET created_at = created_at - interval '1 minute' WHERE id = :t"),
            {"t": older},
        )

    result = orchestrator.run_pass(team.id)

    assert {a.task_id: a.worker_id for a in result.assigned} == {
        older: first.id,
        newer: second.id,
    }


# -- the pass offers workers least loaded first ------------------------------------------------


def test_of_equally_scored_workers_the_less_loaded_one_gets_the_task() -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    # Both half full (workload score 0.5), same skills, no history: equal scores. The first
    # offered wins a tie, and the pass offers the one with fewer tasks first, not the elder.
    elder = WorkerFactory(
        team=team, specialization="Content Creator", current_workload=2, max_concurrent_tasks=4
    )
    lighter = WorkerFactory(
        team=team, specialization="Content Creator", current_workload=1, max_concurrent_tasks=2
    )
    with get_engine().begin() as conn:
        conn.execute(
            text("UPDATE team_members SET joined_at = now() - interval '1 hour' WHERE id = :m"),
            {"m": elder.id},
        )
    task = new_task(team.id, "write it", required_skills=["writing"])

    result = orchestrator.run_pass(team.id)

    assert [(a.task_id, a.worker_id) for a in result.assigned] == [(task, lighter.id)]


# -- 4. reconcile trims what was acknowledged --------------------------------------------------


def test_reconcile_trims_the_entries_of_completed_tasks(
    patient_consumer: AgentConsumer, redis_client: redis.Redis
) -> None:
    team_id = three_run()
    stream = keys.task_stream(team_id)

    result = orchestrator.reconcile(team_id)

    assert (result.reemitted, result.trimmed) == (0, 3)
    assert redis_client.xlen(stream) == 0


# -- 6. the assignment score, from a real pass to the API --------------------------------------


def test_a_pass_logs_the_scorers_numbers_and_the_api_returns_them(api: ApiClient) -> None:
    team = TeamFactory(active=True)
    ManagerFactory(team=team)
    worker = WorkerFactory(
        team=team,
        specialization="Technical Executor",
        max_concurrent_tasks=4,
        current_workload=1,
        tasks_completed=3,
        tasks_failed=1,
    )
    task = new_task(team.id, "code and test", required_skills=["coding", "testing"])
    expected = AssignmentScorer().breakdown(
        type("T", (), {"required_skills": ["coding", "testing"]})(), worker
    )
    # Skill (0.9 + 0.7) / 2, workload 1 - 1/4, success 3/4: 0.5*0.8 + 0.3*0.75 + 0.2*0.75.
    assert (expected.skill, expected.workload, expected.success_rate) == pytest.approx(
        (0.8, 0.75, 0.75)
    )
    assert expected.total == pytest.approx(0.775)

    assert [a.task_id for a in orchestrator.run_pass(team.id).assigned] == [task]

    response = api.get(f"{V1}/teams/{team.id}/assignments")
    assert response.status_code == 200
    [row] = response.get_json()
    assert (row["task_id"], row["worker_id"]) == (str(task), str(worker.id))
    assert row["score"] == pytest.approx(expected.total)
    assert row["breakdown"] == pytest.approx(expected.as_dict())
    assert row["explanation"].startswith(f"Assigned to {worker.agent_id} (Technical Executor)")


# -- minor: the default decomposition depth, paused_at, the group from 0 -----------------------

DEEP_PLAN: dict[str, Any] = {
    "key": "d0",
    "title": "depth 0",
    "subtasks": [
        {
            "key": "d1",
            "title": "depth 1",
            "subtasks": [
                {
                    "key": "d2",
                    "title": "depth 2",
                    "subtasks": [
                        {
                            "key": "d3",
                            "title": "depth 3",
                            "subtasks": [
                                {
                                    "key": "d4",
                                    "title": "depth 4",
                                    "subtasks": [{"key": "d5", "title": "depth 5"}],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}


def test_decompose_without_max_depth_keeps_three_levels_below_the_root(
    api: ApiClient, team: dict[str, Any]
) -> None:
    api.add_member(team["id"], "manager")
    response = api.post(f"{V1}/teams/{team['id']}/decompose", {"plan": DEEP_PLAN})
    assert response.status_code == 201
    assert [t["title"] for t in response.get_json()] == [
        "depth 0",
        "depth 1",
        "depth 2",
        "depth 3",
    ]


def test_pausing_a_team_records_when() -> None:
    team_id = active_team(workers=1)
    with get_engine().begin() as conn:
        before = conn.execute(text("SELECT now()")).scalar_one()
    lifecycle.pause_team(team_id)
    with session_scope() as s:
        team = s.get(Team, team_id)
        assert team is not None
        assert team.paused_at is not None and team.paused_at >= before
    lifecycle.resume_team(team_id)  # leaves the record of the last pause
    with session_scope() as s:
        paused_at = s.execute(select(Team.paused_at).where(Team.id == team_id)).scalar_one()
        assert paused_at is not None and paused_at >= before


def test_ensure_group_delivers_entries_added_before_the_group_existed(
    redis_client: redis.Redis,
) -> None:
    team_id = uuid.uuid4()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    early = redis_client.xadd(stream, {"task_id": str(uuid.uuid4()), "worker_id": "w"})
    streams.ensure_group(team_id)
    delivered = redis_client.xreadgroup(group, "c1", {stream: ">"})
    assert [entry_id for _s, entries in delivered for entry_id, _f in entries] == [early]


def test_emit_creates_a_group_that_delivers_entries_already_in_the_stream(
    redis_client: redis.Redis,
) -> None:
    # Redis lost the group, not the stream: what was there is still delivered after an emit.
    team_id, worker = uuid.uuid4(), uuid.uuid4()
    stream, group = keys.task_stream(team_id), keys.consumer_group(team_id)
    early = redis_client.xadd(stream, {"task_id": str(uuid.uuid4()), "worker_id": str(worker)})
    [late] = streams.emit(team_id, [streams.Assignment(uuid.uuid4(), worker, 5)])
    delivered = redis_client.xreadgroup(group, "c1", {stream: ">"})
    assert [entry_id for _s, entries in delivered for entry_id, _f in entries] == [early, late]


# -- 5. beat's pass fans out the per-team pass -------------------------------------------------


def test_the_beat_task_queues_one_pass_per_active_team(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration import tasks

    active = {active_team(workers=1), active_team(workers=1)}
    paused = active_team(workers=1)
    with get_engine().begin() as conn:
        conn.execute(update(Team).where(Team.id == paused).values(status="paused"))
    queued: list[Any] = []
    monkeypatch.setattr(
        tasks.orchestrate_team, "apply_async", lambda **kwargs: queued.append(kwargs)
    )
    assert tasks.orchestrate_active_teams() == 2
    assert {uuid.UUID(q["args"][0]) for q in queued} == active
