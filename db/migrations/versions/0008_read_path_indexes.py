"""indexes for the read paths and the foreign keys that had none

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

- ix_tasks_team_order, ix_tasks_team_status_order: the task list's order (priority DESC,
  created_at, id), all statuses or one: a page reads its rows from the index instead of sorting
  the whole team (60 ms a page at 100,000 tasks, whether the first or the last).
- ix_tasks_stopped_by: retrying a task finds what its failure stopped (stop_dependents) by it.
- ix_messages_task, ix_messages_worker: the referencing side of foreign keys. Deleting a task
  or a member scanned the whole message log once per deleted row (a 1,000-task team took 273 s
  with 2 M messages). tasks.assigned_to and assigned_by get none: a few values over every task,
  rewritten at each transition, such indexes cut the pipeline's throughput by more than half
  (50,000-task soak, 990 -> 401 tasks/s), and only a team's deletion deletes members.

Built CONCURRENTLY, outside the migration's transaction, so that a live database keeps taking
writes meanwhile; IF NOT EXISTS lets a run interrupted between two of them start again (an index
left invalid by a failed build must be dropped by hand first: PostgreSQL says which).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# name, table, columns, partial-index predicate
INDEXES: list[tuple[str, str, list[str | sa.TextClause], str | None]] = [
    (
        "ix_tasks_team_order",
        "tasks",
        ["team_id", sa.text("priority DESC"), "created_at", "id"],
        None,
    ),
    (
        "ix_tasks_team_status_order",
        "tasks",
        ["team_id", "status", sa.text("priority DESC"), "created_at", "id"],
        None,
    ),
    ("ix_tasks_stopped_by", "tasks", ["stopped_by"], "stopped_by IS NOT NULL"),
    ("ix_messages_task", "messages", ["task_id"], None),
    ("ix_messages_worker", "messages", ["worker_id"], "worker_id IS NOT NULL"),
]


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            op.create_index(
                name,
                table,
                columns,
                postgresql_where=sa.text(where) if where else None,
                postgresql_concurrently=True,
                if_not_exists=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
