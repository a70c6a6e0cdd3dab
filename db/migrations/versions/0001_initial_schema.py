"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Teams, members, tasks, dependencies, the message log (assignment log), API tokens and
the event outbox, with every invariant PostgreSQL can hold itself.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Every proficiency is a number in [0, 1].
SKILLS_VALID = """
CREATE FUNCTION skills_valid(skills jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(skills) = 'object' AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(skills) AS s(name, value)
        WHERE jsonb_typeof(s.value) <> 'number'
           OR (s.value)::numeric < 0 OR (s.value)::numeric > 1
    )
$$;
"""

# A dependency joins two tasks of the same team.
SAME_TEAM_TRIGGER = """
CREATE FUNCTION task_dependencies_same_team() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT team_id FROM tasks WHERE id = NEW.task_id)
       IS DISTINCT FROM (SELECT team_id FROM tasks WHERE id = NEW.depends_on_task_id) THEN
        RAISE EXCEPTION 'task % and task % belong to different teams',
            NEW.task_id, NEW.depends_on_task_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER task_dependencies_same_team BEFORE INSERT OR UPDATE ON task_dependencies
    FOR EACH ROW EXECUTE FUNCTION task_dependencies_same_team();
"""

# The seed's function, made hierarchy-aware: a task can start when every dependency of the
# task and of each of its ancestors is completed. Kept for operators and tests; the engine
# maintains readiness incrementally and never calls this per row.
CAN_START_TASK = """
CREATE FUNCTION can_start_task(p_task_id uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE lineage(id, parent_task_id) AS (
        SELECT id, parent_task_id FROM tasks WHERE id = p_task_id
        UNION ALL
        SELECT t.id, t.parent_task_id FROM tasks t JOIN lineage l ON t.id = l.parent_task_id
    )
    SELECT NOT EXISTS (
        SELECT 1
        FROM lineage l
        JOIN task_dependencies d ON d.task_id = l.id
        JOIN tasks dep ON dep.id = d.depends_on_task_id
        WHERE dep.status <> 'completed'
    )
$$;
"""


def upgrade() -> None:
    op.execute(SKILLS_VALID)
    op.create_table(
        "teams",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum("inactive", "active", "paused", name="team_status"),
            server_default="inactive",
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("token_budget", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name="team_name_length"),
        sa.CheckConstraint("token_budget IS NULL OR token_budget >= 0", name="token_budget_bound"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_api_tokens_team_id"), "api_tokens", ["team_id"], unique=False)
    op.create_table(
        "task_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_task_events_team", "task_events", ["team_id", "id"], unique=False)
    op.create_table(
        "team_members",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("role", sa.Enum("manager", "worker", name="member_role"), nullable=False),
        sa.Column("specialization", sa.Text(), nullable=True),
        sa.Column("skills", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "status",
            sa.Enum("idle", "active", "offline", name="member_status"),
            server_default="idle",
            nullable=False,
        ),
        sa.Column("current_workload", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_concurrent_tasks", sa.Integer(), server_default="3", nullable=False),
        sa.Column("tasks_completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tasks_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_tokens_used", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "total_cost", sa.Numeric(precision=20, scale=10), server_default="0", nullable=False
        ),
        sa.Column(
            "joined_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("current_workload >= 0", name="workload_non_negative"),
        sa.CheckConstraint("length(agent_id) BETWEEN 1 AND 200", name="agent_id_length"),
        sa.CheckConstraint("max_concurrent_tasks BETWEEN 1 AND 1000", name="capacity_bounds"),
        sa.CheckConstraint(
            "skills IS NULL OR skills_valid(skills)", name="skills_proficiency_bounds"
        ),
        sa.CheckConstraint(
            "tasks_completed >= 0 AND tasks_failed >= 0", name="counters_non_negative"
        ),
        sa.CheckConstraint("total_tokens_used >= 0 AND total_cost >= 0", name="usage_non_negative"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "agent_id", name="team_members_agent_unique"),
    )
    op.create_index("ix_team_members_team_role", "team_members", ["team_id", "role"], unique=False)
    op.create_table(
        "tasks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("parent_task_id", sa.UUID(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("acceptance_criteria", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("assigned_to", sa.UUID(), nullable=True),
        sa.Column("assigned_by", sa.UUID(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "blocked",
                "assigned",
                "in_progress",
                "review",
                "completed",
                "failed",
                "cancelled",
                name="task_status",
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), server_default="5", nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completion_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_revisions", sa.Integer(), server_default="3", nullable=False),
        sa.Column("input_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("output_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("required_skills", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("estimated_tokens", sa.Integer(), nullable=True),
        sa.Column("actual_tokens", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("is_summary", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("unmet_dependencies", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.Text(), nullable=True),
        sa.Column("review_feedback", sa.Text(), nullable=True),
        sa.Column("cost", sa.Numeric(precision=20, scale=10), server_default="0", nullable=False),
        sa.CheckConstraint(
            "actual_tokens IS NULL OR actual_tokens >= 0", name="actual_tokens_bound"
        ),
        sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        sa.CheckConstraint(
            "estimated_tokens IS NULL OR estimated_tokens >= 0", name="estimated_tokens_bound"
        ),
        sa.CheckConstraint("length(title) BETWEEN 1 AND 500", name="task_title_length"),
        sa.CheckConstraint("max_revisions BETWEEN 0 AND 100", name="max_revisions_bounds"),
        sa.CheckConstraint("parent_task_id IS NULL OR parent_task_id <> id", name="not_own_parent"),
        sa.CheckConstraint("priority BETWEEN 0 AND 10", name="priority_bounds"),
        sa.CheckConstraint("revision_count >= 0", name="revision_count_non_negative"),
        sa.CheckConstraint("unmet_dependencies >= 0", name="unmet_dependencies_non_negative"),
        sa.ForeignKeyConstraint(["assigned_by"], ["team_members.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["assigned_to"], ["team_members.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["parent_task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_tasks_in_flight",
        "tasks",
        ["assigned_to"],
        unique=False,
        postgresql_where=sa.text("status IN ('assigned', 'in_progress', 'review')"),
    )
    op.create_index("ix_tasks_parent", "tasks", ["parent_task_id"], unique=False)
    op.create_index(
        "ix_tasks_ready",
        "tasks",
        ["team_id", sa.literal_column("priority DESC"), "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending' AND NOT is_summary"),
    )
    op.create_index("ix_tasks_team_status", "tasks", ["team_id", "status"], unique=False)
    op.create_table(
        "messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=False),
        sa.Column("from_agent_id", sa.Text(), nullable=True),
        sa.Column("to_agent_id", sa.Text(), nullable=True),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("worker_id", sa.UUID(), nullable=True),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["team_members.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_messages_team_type_created",
        "messages",
        ["team_id", "message_type", "created_at"],
        unique=False,
    )
    op.create_table(
        "task_dependencies",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("depends_on_task_id", sa.UUID(), nullable=False),
        sa.Column("dependency_type", sa.String(length=50), server_default="blocks", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("task_id <> depends_on_task_id", name="no_self_dependency"),
        sa.ForeignKeyConstraint(["depends_on_task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "depends_on_task_id", name="task_dependencies_unique"),
    )
    op.create_index(
        "idx_task_dependencies_depends_on",
        "task_dependencies",
        ["depends_on_task_id"],
        unique=False,
    )
    op.create_index("idx_task_dependencies_task_id", "task_dependencies", ["task_id"], unique=False)
    op.execute(SAME_TEAM_TRIGGER)
    op.execute(CAN_START_TASK)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS can_start_task(uuid)")
    op.drop_index("idx_task_dependencies_task_id", table_name="task_dependencies")
    op.drop_index("idx_task_dependencies_depends_on", table_name="task_dependencies")
    op.drop_table("task_dependencies")
    op.drop_index("ix_messages_team_type_created", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_tasks_team_status", table_name="tasks")
    op.drop_index(
        "ix_tasks_ready",
        table_name="tasks",
        postgresql_where=sa.text("status = 'pending' AND NOT is_summary"),
    )
    op.drop_index("ix_tasks_parent", table_name="tasks")
    op.drop_index(
        "ix_tasks_in_flight",
        table_name="tasks",
        postgresql_where=sa.text("status IN ('assigned', 'in_progress', 'review')"),
    )
    op.drop_table("tasks")
    op.drop_index("ix_team_members_team_role", table_name="team_members")
    op.drop_table("team_members")
    op.drop_index("ix_task_events_team", table_name="task_events")
    op.drop_table("task_events")
    op.drop_index(op.f("ix_api_tokens_team_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("teams")
    op.execute("DROP FUNCTION IF EXISTS task_dependencies_same_team()")
    op.execute("DROP FUNCTION IF EXISTS skills_valid(jsonb)")
    for name in ("task_status", "team_status", "member_status", "member_role"):
        op.execute(f"DROP TYPE IF EXISTS {name}")
