"""PostgreSQL itself holds the invariants: constraints, the same-team trigger, cascades, and the
hierarchy-aware `can_start_task(uuid)`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import (
    ApiToken,
    MemberRole,
    Message,
    Task,
    TaskDependency,
    TaskEvent,
    TaskStatus,
    Team,
    TeamMember,
)
from tests.factories import (
    DependencyFactory,
    ManagerFactory,
    TaskFactory,
    TeamFactory,
    WorkerFactory,
)

CHECK_VIOLATION = "23514"
UNIQUE_VIOLATION = "23505"
INVALID_TEXT_REPRESENTATION = "22P02"


def refused(
    session: Session,
    sql: str,
    params: dict[str, Any],
    *,
    sqlstate: str,
    constraint: str | None = None,
) -> DBAPIError:
    """Run `sql`; PostgreSQL must refuse it with this SQLSTATE (and constraint)."""
    with pytest.raises(DBAPIError) as info:
        session.execute(text(sql), params)
    session.rollback()
    orig: Any = info.value.orig
    assert orig.sqlstate == sqlstate, str(orig)
    if constraint is not None:
        assert orig.diag.constraint_name == constraint, str(orig)
    return info.value


def accepted(session: Session, sql: str, params: dict[str, Any]) -> None:
    session.execute(text(sql), params)
    session.rollback()


def count(session: Session, model: type[Any], **filters: Any) -> int:
    query = select(func.count()).select_from(model).filter_by(**filters)
    return int(session.scalar(query) or 0)


# --- refusals --------------------------------------------------------------------------------


def test_self_dependency_is_refused(session: Session) -> None:
    task = TaskFactory()
    refused(
        session,
        "INSERT INTO task_dependencies (task_id, depends_on_task_id) VALUES (:t, :t)",
        {"t": task.id},
        sqlstate=CHECK_VIOLATION,
        constraint="no_self_dependency",
    )


def test_duplicate_edge_is_refused(session: Session) -> None:
    edge = DependencyFactory()
    refused(
        session,
        "INSERT INTO task_dependencies (task_id, depends_on_task_id) VALUES (:t, :d)",
        {"t": edge.task_id, "d": edge.depends_on_task_id},
        sqlstate=UNIQUE_VIOLATION,
        constraint="task_dependencies_unique",
    )
    # the reverse edge is a different row (cycles are the service's to refuse)
    accepted(
        session,
        "INSERT INTO task_dependencies (task_id, depends_on_task_id) VALUES (:d, :t)",
        {"t": edge.task_id, "d": edge.depends_on_task_id},
    )


def test_cross_team_dependency_is_refused(session: Session) -> None:
    mine, theirs = TaskFactory(), TaskFactory()
    assert mine.team_id != theirs.team_id
    error = refused(
        session,
        "INSERT INTO task_dependencies (task_id, depends_on_task_id) VALUES (:t, :d)",
        {"t": mine.id, "d": theirs.id},
        sqlstate=CHECK_VIOLATION,
    )
    assert "different teams" in str(error.orig)
    # ... and an update cannot move an edge across teams either
    edge = DependencyFactory(task=mine)
    refused(
        session,
        "UPDATE task_dependencies SET depends_on_task_id = :d WHERE id = :id",
        {"d": theirs.id, "id": edge.id},
        sqlstate=CHECK_VIOLATION,
    )


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("current_workload", -1, "workload_non_negative"),
        ("max_concurrent_tasks", 0, "capacity_bounds"),
        ("max_concurrent_tasks", -3, "capacity_bounds"),
        ("max_concurrent_tasks", 1001, "capacity_bounds"),
        ("tasks_completed", -1, "counters_non_negative"),
        ("tasks_failed", -1, "counters_non_negative"),
        ("total_tokens_used", -1, "usage_non_negative"),
    ],
)
def test_member_bounds(session: Session, column: str, value: int, constraint: str) -> None:
    member = WorkerFactory()
    refused(
        session,
        f"UPDATE team_members SET {column} = :v WHERE id = :id",
        {"v": value, "id": member.id},
        sqlstate=CHECK_VIOLATION,
        constraint=constraint,
    )


def test_member_bounds_accept_the_edges(session: Session) -> None:
    member = WorkerFactory()
    for sql in (
        "UPDATE team_members SET max_concurrent_tasks = 1 WHERE id = :id",
        "UPDATE team_members SET max_concurrent_tasks = 1000 WHERE id = :id",
        "UPDATE team_members SET current_workload = 0 WHERE id = :id",
    ):
        accepted(session, sql, {"id": member.id})


@pytest.mark.parametrize("priority", [-1, 11, 100])
def test_priority_out_of_bounds_is_refused(session: Session, priority: int) -> None:
    task = TaskFactory()
    refused(
        session,
        "UPDATE tasks SET priority = :p WHERE id = :id",
        {"p": priority, "id": task.id},
        sqlstate=CHECK_VIOLATION,
        constraint="priority_bounds",
    )


@pytest.mark.parametrize("priority", [0, 10])
def test_priority_bounds_are_inclusive(session: Session, priority: int) -> None:
    task = TaskFactory()
    accepted(
        session, "UPDATE tasks SET priority = :p WHERE id = :id", {"p": priority, "id": task.id}
    )


@pytest.mark.parametrize(
    "skills",
    [
        {"coding": 1.5},
        {"coding": -0.1},
        {"coding": 0.5, "testing": 2},
        {"coding": "high"},
        {"coding": None},
        {"coding": [0.5]},
        ["coding"],
        "coding",
        0.5,
        None,  # JSON null is not a skills object
    ],
)
def test_skills_outside_the_unit_interval_are_refused(session: Session, skills: Any) -> None:
    member = WorkerFactory()
    refused(
        session,
        "UPDATE team_members SET skills = CAST(:s AS jsonb) WHERE id = :id",
        {"s": json.dumps(skills), "id": member.id},
        sqlstate=CHECK_VIOLATION,
        constraint="skills_proficiency_bounds",
    )


@pytest.mark.parametrize("skills", [{}, {"coding": 0}, {"coding": 1}, {"a": 0.25, "b": 1.0}])
def test_valid_skills_are_accepted(session: Session, skills: dict[str, float]) -> None:
    member = WorkerFactory()
    accepted(
        session,
        "UPDATE team_members SET skills = CAST(:s AS jsonb) WHERE id = :id",
        {"s": json.dumps(skills), "id": member.id},
    )
    accepted(session, "UPDATE team_members SET skills = NULL WHERE id = :id", {"id": member.id})


def test_orm_none_is_sql_null_in_json_columns(session: Session) -> None:
    """`skills=None` / `required_skills=None` on a new row mean "none": SQL NULL, which the
    skills constraint accepts, not the JSON value `null`, which it refuses."""
    team = TeamFactory()
    member = TeamMember(team_id=team.id, agent_id="w", role=MemberRole.WORKER, skills=None)
    task = Task(
        team_id=team.id,
        title="t",
        required_skills=None,
        acceptance_criteria=None,
        start_rank=1,
        end_rank=2,
    )
    session.add_all([member, task])
    session.commit()
    assert session.scalar(text("SELECT skills IS NULL FROM team_members WHERE agent_id = 'w'"))
    assert session.scalar(
        text("SELECT required_skills IS NULL AND acceptance_criteria IS NULL FROM tasks")
    )


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("UPDATE tasks SET status = :v", "done"),
        ("UPDATE tasks SET status = :v", "PENDING"),
        ("UPDATE teams SET status = :v", "running"),
        ("UPDATE team_members SET status = :v", "busy"),
        ("UPDATE team_members SET role = :v", "boss"),
    ],
)
def test_unknown_status_values_are_refused(session: Session, sql: str, value: str) -> None:
    TaskFactory()
    WorkerFactory()
    refused(session, sql, {"v": value}, sqlstate=INVALID_TEXT_REPRESENTATION)


def test_every_task_status_is_accepted(session: Session) -> None:
    task = TaskFactory()
    for status in TaskStatus:
        session.execute(
            text("UPDATE tasks SET status = :v WHERE id = :id"), {"v": status.value, "id": task.id}
        )
    session.rollback()


def test_other_task_bounds(session: Session) -> None:
    task = TaskFactory()
    for sql, constraint in [
        ("UPDATE tasks SET title = '' WHERE id = :id", "task_title_length"),
        ("UPDATE tasks SET parent_task_id = id WHERE id = :id", "not_own_parent"),
        ("UPDATE tasks SET revision_count = -1 WHERE id = :id", "revision_count_non_negative"),
        ("UPDATE tasks SET max_revisions = 101 WHERE id = :id", "max_revisions_bounds"),
        (
            "UPDATE tasks SET unmet_dependencies = -1 WHERE id = :id",
            "unmet_dependencies_non_negative",
        ),
        ("UPDATE tasks SET estimated_tokens = -1 WHERE id = :id", "estimated_tokens_bound"),
    ]:
        refused(session, sql, {"id": task.id}, sqlstate=CHECK_VIOLATION, constraint=constraint)


def test_agent_id_is_unique_within_a_team_only(session: Session) -> None:
    member = WorkerFactory()
    other_team = TeamFactory()
    insert = "INSERT INTO team_members (team_id, agent_id, role) VALUES (:team, :agent, 'worker')"
    refused(
        session,
        insert,
        {"team": member.team_id, "agent": member.agent_id},
        sqlstate=UNIQUE_VIOLATION,
        constraint="team_members_agent_unique",
    )
    accepted(session, insert, {"team": other_team.id, "agent": member.agent_id})


# --- cascades --------------------------------------------------------------------------------


def populate_team(team: Team) -> dict[str, Any]:
    manager = ManagerFactory(team=team)
    worker = WorkerFactory(team=team)
    parent = TaskFactory(team=team)
    child = TaskFactory(parent=parent)
    other = TaskFactory(team=team, status=TaskStatus.ASSIGNED)
    DependencyFactory(task=child, depends_on=other)
    DependencyFactory(task=other, depends_on=parent)
    return {"manager": manager, "worker": worker, "tasks": [parent, child, other]}


def test_deleting_a_team_deletes_everything_it_owns(session: Session) -> None:
    doomed, kept = TeamFactory(), TeamFactory()
    rows = populate_team(doomed)
    populate_team(kept)
    parent = rows["tasks"][0]
    session.add_all(
        [
            Message(
                team_id=doomed.id,
                task_id=parent.id,
                worker_id=rows["worker"].id,
                message_type="task_assignment",
                content="assigned",
            ),
            TaskEvent(team_id=doomed.id, task_id=parent.id, kind="task.created"),
            ApiToken(team_id=doomed.id, token_hash="h" * 64, prefix="hhhh"),
        ]
    )
    session.commit()

    session.execute(text("DELETE FROM teams WHERE id = :id"), {"id": doomed.id})
    session.commit()

    for model in (TeamMember, Task, Message, TaskEvent, ApiToken):
        assert count(session, model, team_id=doomed.id) == 0, model.__name__
    assert count(session, TaskDependency) == 2  # the other team's edges only
    assert count(session, Task, team_id=kept.id) == 3
    assert count(session, TeamMember, team_id=kept.id) == 2


def test_deleting_a_task_deletes_its_edges_and_subtasks(session: Session) -> None:
    team = TeamFactory()
    before, after, bystander = (TaskFactory(team=team) for _ in range(3))
    doomed = TaskFactory(team=team)
    child = TaskFactory(parent=doomed)
    grandchild = TaskFactory(parent=child)
    DependencyFactory(task=doomed, depends_on=before)  # doomed depends on `before`
    DependencyFactory(task=after, depends_on=doomed)  # `after` depends on doomed
    DependencyFactory(task=grandchild, depends_on=before)
    DependencyFactory(task=after, depends_on=bystander)
    session.add(Message(team_id=team.id, task_id=child.id, message_type="note", content="x"))
    session.commit()

    session.execute(text("DELETE FROM tasks WHERE id = :id"), {"id": doomed.id})
    session.commit()

    remaining = set(session.scalars(select(Task.id).where(Task.team_id == team.id)))
    assert remaining == {before.id, after.id, bystander.id}
    edges = session.execute(select(TaskDependency.task_id, TaskDependency.depends_on_task_id))
    assert {tuple(e) for e in edges} == {(after.id, bystander.id)}
    assert count(session, Message, team_id=team.id) == 0


def test_deleting_a_member_unassigns_its_tasks(session: Session) -> None:
    team = TeamFactory()
    worker, manager = WorkerFactory(team=team), ManagerFactory(team=team)
    task = TaskFactory(
        team=team, status=TaskStatus.ASSIGNED, assigned_to=worker.id, assigned_by=manager.id
    )
    session.execute(text("DELETE FROM team_members WHERE id = :id"), {"id": worker.id})
    session.execute(text("DELETE FROM team_members WHERE id = :id"), {"id": manager.id})
    session.commit()
    row = session.execute(
        text("SELECT assigned_to, assigned_by FROM tasks WHERE id = :id"), {"id": task.id}
    ).one()
    assert tuple(row) == (None, None)


# --- can_start_task --------------------------------------------------------------------------


def can_start(session: Session, task: Any) -> bool:
    return bool(session.scalar(text("SELECT can_start_task(:id)"), {"id": task.id}))


def set_status(session: Session, task: Any, status: TaskStatus) -> None:
    session.execute(
        text("UPDATE tasks SET status = :s WHERE id = :id"), {"s": status.value, "id": task.id}
    )
    session.commit()


def test_can_start_task_follows_its_dependencies(session: Session) -> None:
    team = TeamFactory()
    task, first, second = (TaskFactory(team=team) for _ in range(3))
    assert can_start(session, task)  # no dependencies

    DependencyFactory(task=task, depends_on=first)
    DependencyFactory(task=task, depends_on=second)
    assert not can_start(session, task)
    assert can_start(session, first)  # depending on is one-way

    set_status(session, first, TaskStatus.COMPLETED)
    assert not can_start(session, task)  # second still pending
    for status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.REVIEW):
        set_status(session, second, status)
        assert not can_start(session, task), status
    set_status(session, second, TaskStatus.COMPLETED)
    assert can_start(session, task)


def test_can_start_task_counts_the_ancestors_dependencies(session: Session) -> None:
    team = TeamFactory()
    blocker = TaskFactory(team=team)
    parent = TaskFactory(team=team)
    child = TaskFactory(parent=parent)
    grandchild = TaskFactory(parent=child)
    uncle = TaskFactory(team=team)
    cousin = TaskFactory(parent=uncle)
    DependencyFactory(task=parent, depends_on=blocker)

    assert not can_start(session, parent)
    assert not can_start(session, child)
    assert not can_start(session, grandchild)
    assert can_start(session, uncle)
    assert can_start(session, cousin)

    # a subtask's own dependency holds back the subtask, not its parent
    late = TaskFactory(team=team)
    DependencyFactory(task=child, depends_on=late)
    set_status(session, blocker, TaskStatus.COMPLETED)
    assert can_start(session, parent)
    assert not can_start(session, child)
    assert not can_start(session, grandchild)

    set_status(session, late, TaskStatus.COMPLETED)
    assert can_start(session, child)
    assert can_start(session, grandchild)


def test_can_start_task_of_an_unknown_task(session: Session) -> None:
    # Nothing blocks a task that does not exist; callers check existence themselves.
    assert session.scalar(text("SELECT can_start_task(:id)"), {"id": uuid.uuid4()}) is True
