"""factory-boy factories for the ORM rows. Each `create()` commits through one scoped session
bound to the current engine (db.engine.get_engine()); the harness resets it after every test.

These write raw rows: they do not maintain readiness (`unmet_dependencies`, `blocked`) or the
members' counters the way the services do. Use the services when a test needs those. Tasks
get ranks as create_task gives them; DependencyFactory edges are not checked against them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import factory
from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from db.engine import get_engine
from db.models import MemberRole, Task, TaskDependency, TaskStatus, Team, TeamMember, TeamStatus
from orchestration.dependencies import place_task
from orchestration.scoring import SPECIALIZATION_PRESETS

SPECIALIZATIONS = list(SPECIALIZATION_PRESETS)
T = TypeVar("T")


def _new_session() -> Session:
    return Session(get_engine(), expire_on_commit=False)


# scoped_session only ever calls its factory with no arguments; a plain function keeps the bind
# lazy, so the session follows db.engine.reset_engine() to whichever database is current.
factory_session: scoped_session[Session] = scoped_session(cast(sessionmaker[Session], _new_session))


def reset_session() -> None:
    """Roll back and forget the factories' session (a failed test must not poison the next)."""
    try:
        factory_session.rollback()
    finally:
        factory_session.remove()


def _team_id(o: Any) -> uuid.UUID:
    """The given team's id, else a new team's (created only when nothing names a team)."""
    team: Any = o.team if o.team is not None else TeamFactory()
    return cast(uuid.UUID, team.id)


def _id(row: Any) -> uuid.UUID:
    return cast(uuid.UUID, row.id)


def _task_team_id(task_id: uuid.UUID) -> uuid.UUID:
    return factory_session.execute(select(Task.team_id).where(Task.id == task_id)).scalar_one()


class BaseFactory(factory.alchemy.SQLAlchemyModelFactory, Generic[T]):
    """`XFactory(**fields)` creates and commits one row and returns it (typed as the model)."""

    class Meta:
        abstract = True
        sqlalchemy_session = factory_session
        sqlalchemy_session_persistence = "commit"

    if TYPE_CHECKING:
        # The metaclass turns `XFactory(...)` into `XFactory.create(...)`; tell mypy so.
        def __new__(cls, *args: Any, **kwargs: Any) -> T: ...  # type: ignore[misc]


class TeamFactory(BaseFactory[Team]):
    class Meta:
        model = Team

    class Params:
        active = factory.Trait(status=TeamStatus.ACTIVE)

    name = factory.Sequence(lambda n: f"team-{n}")
    description = None
    status = TeamStatus.INACTIVE


class MemberFactory(BaseFactory[TeamMember]):
    """A team member; pass `team=<Team>` (or `team_id=`) to join an existing team."""

    class Meta:
        model = TeamMember

    class Params:
        team = None

    team_id = factory.LazyAttribute(_team_id)
    role = MemberRole.WORKER
    agent_id = factory.Sequence(lambda n: f"member-{n}")
    specialization = factory.Iterator(SPECIALIZATIONS)
    max_concurrent_tasks = 3
    current_workload = 0
    tasks_completed = 0
    tasks_failed = 0


class WorkerFactory(MemberFactory):
    role = MemberRole.WORKER
    agent_id = factory.Sequence(lambda n: f"worker-{n}")


class ManagerFactory(MemberFactory):
    role = MemberRole.MANAGER
    agent_id = factory.Sequence(lambda n: f"manager-{n}")
    specialization: Any = None


class TaskFactory(BaseFactory[Task]):
    """A task; `team=<Team>` or `parent=<Task>` (a subtask joins its parent's team)."""

    class Meta:
        model = Task

    class Params:
        team = None
        parent = None

    team_id = factory.LazyAttribute(
        lambda o: o.parent.team_id if o.parent is not None else _team_id(o)
    )
    parent_task_id = factory.LazyAttribute(lambda o: o.parent.id if o.parent else None)
    title = factory.Sequence(lambda n: f"task-{n}")
    description = None
    priority = 5
    status = TaskStatus.PENDING

    @classmethod
    def _create(cls, model_class: type[Task], *args: Any, **kwargs: Any) -> Task:
        # Ranked as create_task ranks a new task, so the services' cycle checks stay sound.
        if "start_rank" not in kwargs:
            kwargs["start_rank"], kwargs["end_rank"] = place_task(
                factory_session(), kwargs["team_id"], kwargs.get("parent_task_id")
            )
        return cast(Task, super()._create(model_class, *args, **kwargs))


class DependencyFactory(BaseFactory[TaskDependency]):
    """`task` depends on `depends_on` (by default a new task of the same team)."""

    class Meta:
        model = TaskDependency

    class Params:
        task = None
        depends_on = None

    task_id = factory.LazyAttribute(lambda o: _id(o.task or TaskFactory()))
    depends_on_task_id = factory.LazyAttribute(
        lambda o: _id(o.depends_on or TaskFactory(team_id=_task_team_id(o.task_id)))
    )
    dependency_type = "blocks"
