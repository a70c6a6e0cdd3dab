"""same-team check of dependencies by index lookups, whatever plan the session caches

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

0003's check joined the statement's written edges to tasks twice. PL/pgSQL keeps that query's
plan for the session, and a plan made for a statement that wrote thousands of edges (hash joins
over every task) is a poor one for a statement that writes one: up to ~50 ms an edge at 100,000
tasks when a session is set to reuse generic plans. It now looks up each edge's two tasks by
primary key, a plan with one shape for any number of edges; same error as before.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _check(crossing: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION task_dependencies_same_team() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    crossing record;
BEGIN
    {crossing}
    IF FOUND THEN
        RAISE EXCEPTION 'task % and task % belong to different teams',
            crossing.task_id, crossing.depends_on_task_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""


BY_LOOKUPS = """SELECT e.task_id, e.depends_on_task_id INTO crossing
    FROM written_edges e
    WHERE (SELECT team_id FROM tasks WHERE id = e.task_id)
        <> (SELECT team_id FROM tasks WHERE id = e.depends_on_task_id)
    LIMIT 1;"""

# 0003's, as it was.
BY_JOINS = """SELECT e.task_id, e.depends_on_task_id INTO crossing
    FROM written_edges e
    JOIN tasks t ON t.id = e.task_id
    JOIN tasks d ON d.id = e.depends_on_task_id
    WHERE t.team_id <> d.team_id
    LIMIT 1;"""


def upgrade() -> None:
    op.execute(_check(BY_LOOKUPS))


def downgrade() -> None:
    op.execute(_check(BY_JOINS))
