"""SQLAlchemy 2 models. PostgreSQL enforces the invariants (see the migration)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    BLOCKED = "blocked"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    REVIEW = "review"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


IN_FLIGHT = (TaskStatus.ASSIGNED, TaskStatus.IN_PROGRESS, TaskStatus.REVIEW)
FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
# Final states that stop the tasks waiting for them (lifecycle.settle, stop_dependents).
STOPPING = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class TeamStatus(enum.StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    PAUSED = "paused"


class MemberStatus(enum.StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    OFFLINE = "offline"


class MemberRole(enum.StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: JSONB}


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (
        CheckConstraint("length(name) BETWEEN 1 AND 200", name="team_name_length"),
        CheckConstraint("token_budget IS NULL OR token_budget >= 0", name="token_budget_bound"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TeamStatus] = mapped_column(
        _enum(TeamStatus, "team_status"), nullable=False, server_default=TeamStatus.INACTIVE.value
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    token_budget: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (
        UniqueConstraint("team_id", "agent_id", name="team_members_agent_unique"),
        CheckConstraint("current_workload >= 0", name="workload_non_negative"),
        CheckConstraint("max_concurrent_tasks BETWEEN 1 AND 1000", name="capacity_bounds"),
        CheckConstraint("tasks_completed >= 0 AND tasks_failed >= 0", name="counters_non_negative"),
        CheckConstraint("total_tokens_used >= 0 AND total_cost >= 0", name="usage_non_negative"),
        CheckConstraint("skills IS NULL OR skills_valid(skills)", name="skills_proficiency_bounds"),
        CheckConstraint("length(agent_id) BETWEEN 1 AND 200", name="agent_id_length"),
        Index("ix_team_members_team_role", "team_id", "role"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    agent_id: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[MemberRole] = mapped_column(_enum(MemberRole, "member_role"), nullable=False)
    specialization: Mapped[str | None] = mapped_column(Text)
    skills: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    status: Mapped[MemberStatus] = mapped_column(
        _enum(MemberStatus, "member_status"),
        nullable=False,
        server_default=MemberStatus.IDLE.value,
    )
    current_workload: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_concurrent_tasks: Mapped[int] = mapped_column(Integer, nullable=False, server_default="3")
    tasks_completed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    tasks_failed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_tokens_used: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    total_cost: Mapped[Decimal] = mapped_column(Numeric(20, 10), nullable=False, server_default="0")
    joined_at: Mapped[datetime] = _now()
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("length(title) BETWEEN 1 AND 500", name="task_title_length"),
        CheckConstraint("priority BETWEEN 0 AND 10", name="priority_bounds"),
        CheckConstraint("revision_count >= 0", name="revision_count_non_negative"),
        CheckConstraint("max_revisions BETWEEN 0 AND 100", name="max_revisions_bounds"),
        CheckConstraint("unmet_dependencies >= 0", name="unmet_dependencies_non_negative"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint(
            "estimated_tokens IS NULL OR estimated_tokens >= 0", name="estimated_tokens_bound"
        ),
        CheckConstraint("actual_tokens IS NULL OR actual_tokens >= 0", name="actual_tokens_bound"),
        CheckConstraint("parent_task_id IS NULL OR parent_task_id <> id", name="not_own_parent"),
        CheckConstraint("start_rank < end_rank", name="ranks_ordered"),
        # The ready-task query reads this index in order and stops at the free capacity.
        Index(
            "ix_tasks_ready",
            "team_id",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text("status = 'pending' AND NOT is_summary"),
        ),
        Index("ix_tasks_team_status", "team_id", "status"),
        # The task list's order, of every status and of one: a page, the first or a deep one,
        # is an index range (decomposition._listing).
        Index("ix_tasks_team_order", "team_id", text("priority DESC"), "created_at", "id"),
        Index(
            "ix_tasks_team_status_order",
            "team_id",
            "status",
            text("priority DESC"),
            "created_at",
            "id",
        ),
        # Retrying a task finds what its failure or cancellation stopped.
        Index("ix_tasks_stopped_by", "stopped_by", postgresql_where=text("stopped_by IS NOT NULL")),
        Index("ix_tasks_parent", "parent_task_id"),
        # Placing a new task reads the team's highest point, or the highest below a parent's end.
        Index("ix_tasks_team_start_rank", "team_id", "start_rank"),
        Index("ix_tasks_team_end_rank", "team_id", "end_rank"),
        Index(
            "ix_tasks_in_flight",
            "assigned_to",
            postgresql_where=text("status IN ('assigned', 'in_progress', 'review')"),
        ),
        # assigned_to and assigned_by (members) have no index of their own: a handful of values
        # over every task, updated at each transition, they cost the soak 990 -> 401 tasks/s
        # (bench/README.md); deleting a member (only with its team) scans tasks instead.
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    parent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    title: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    acceptance_criteria: Mapped[list[str] | None] = mapped_column(JSONB(none_as_null=True))
    assigned_to: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("team_members.id", ondelete="SET NULL")
    )
    assigned_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("team_members.id", ondelete="SET NULL")
    )
    status: Mapped[TaskStatus] = mapped_column(
        _enum(TaskStatus, "task_status"), nullable=False, server_default=TaskStatus.PENDING.value
    )
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="5")
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completion_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revision_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_revisions: Mapped[int] = mapped_column(Integer, nullable=False, server_default="3")
    input_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    error_message: Mapped[str | None] = mapped_column(Text)
    required_skills: Mapped[list[str] | None] = mapped_column(JSONB(none_as_null=True))
    estimated_tokens: Mapped[int | None] = mapped_column(Integer)
    actual_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # Engine bookkeeping, not part of the public task shape.
    is_summary: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    unmet_dependencies: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim: Mapped[str | None] = mapped_column(Text)
    # A fresh id per assignment, carried by its stream entry: a claim must name the current one.
    assignment: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The dependency whose failure or cancellation ended this task (retrying it resumes this).
    stopped_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    review_feedback: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[Decimal] = mapped_column(Numeric(20, 10), nullable=False, server_default="0")
    # The task's start and end in a topological order of the team's waits-for graph (see
    # orchestration/graph.py): a point ranks above every point it waits for. Unique per team.
    start_rank: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    end_rank: Mapped[Decimal] = mapped_column(Numeric, nullable=False)


class TaskDependency(Base):
    __tablename__ = "task_dependencies"
    __table_args__ = (
        UniqueConstraint("task_id", "depends_on_task_id", name="task_dependencies_unique"),
        CheckConstraint("task_id <> depends_on_task_id", name="no_self_dependency"),
        # Lookups by task_id read the unique index above, which leads with it.
        Index("idx_task_dependencies_depends_on", "depends_on_task_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    depends_on_task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    dependency_type: Mapped[str] = mapped_column(
        String(50), nullable=False, server_default="blocks"
    )
    created_at: Mapped[datetime] = _now()


class Message(Base):
    """The seed's message log; assignments are `task_assignment` messages."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_team_type_created", "team_id", "message_type", "created_at"),
        # The foreign keys' referencing side: deleting a task deletes its messages, deleting a
        # member sets worker_id to NULL; without these, each deleted row scanned the table.
        Index("ix_messages_task", "task_id"),
        Index("ix_messages_worker", "worker_id", postgresql_where=text("worker_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    from_agent_id: Mapped[str | None] = mapped_column(Text)
    to_agent_id: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    worker_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("team_members.id", ondelete="SET NULL")
    )
    message_type: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _now()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = _uuid_pk()
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskEvent(Base):
    """The history of task and team events, written in the transaction of the change and
    published to the team's bounded Redis event stream after it commits."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_team", "team_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _now()


class DecompositionStatus(enum.StrEnum):
    QUEUED = "queued"
    PLANNING = "planning"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A decomposition still to be planned or being planned (the others are final).
OPEN_DECOMPOSITION = (DecompositionStatus.QUEUED, DecompositionStatus.PLANNING)


class Decomposition(Base):
    """A goal given to the manager's planner in the background (POST .../decompositions): a
    job row claimed under a lease by one agent consumer at a time, whose tasks are created in
    the transaction that marks it succeeded."""

    __tablename__ = "decompositions"
    __table_args__ = (
        CheckConstraint("length(goal) BETWEEN 1 AND 10000", name="decomposition_goal_length"),
        CheckConstraint("max_depth BETWEEN 0 AND 10", name="decomposition_depth_bounds"),
        CheckConstraint("attempts >= 0", name="decomposition_attempts_non_negative"),
        Index("ix_decompositions_team", "team_id", text("created_at DESC"), text("id DESC")),
        # What consumers claim: the open ones, longest queued first.
        Index(
            "ix_decompositions_open",
            "queued_at",
            "id",
            postgresql_where=text("status IN ('queued', 'planning')"),
        ),
        Index(
            "ux_decompositions_request",
            "team_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    team_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    goal: Mapped[str] = mapped_column(Text, nullable=False)
    max_depth: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[DecompositionStatus] = mapped_column(
        _enum(DecompositionStatus, "decomposition_status"),
        nullable=False,
        server_default=DecompositionStatus.QUEUED.value,
    )
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    task_ids: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))
    tokens_used: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    cost: Mapped[Decimal] = mapped_column(Numeric(20, 10), nullable=False, server_default="0")
    created_at: Mapped[datetime] = _now()
    queued_at: Mapped[datetime] = _now()  # when last queued: created, or retried
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
