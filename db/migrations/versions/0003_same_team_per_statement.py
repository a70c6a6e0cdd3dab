"""same-team check of dependencies once per statement

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

The check that a dependency joins two tasks of one team ran once per inserted row (two
lookups of tasks each); batches of edges and plans insert thousands of rows in one statement.
It now runs once per statement over the rows the statement wrote (a transition table), with
the same error (check_violation, "task ... and task ... belong to different teams").
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PER_STATEMENT = """
DROP TRIGGER task_dependencies_same_team ON task_dependencies;
DROP FUNCTION task_dependencies_same_team();
CREATE FUNCTION task_dependencies_same_team() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    crossing record;
BEGIN
    SELECT e.task_id, e.depends_on_task_id INTO crossing
    FROM written_edges e
    JOIN tasks t ON t.id = e.task_id
    JOIN tasks d ON d.id = e.depends_on_task_id
    WHERE t.team_id <> d.team_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'task % and task % belong to different teams',
            crossing.task_id, crossing.depends_on_task_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER task_dependencies_same_team AFTER INSERT ON task_dependencies
    REFERENCING NEW TABLE AS written_edges
    FOR EACH STATEMENT EXECUTE FUNCTION task_dependencies_same_team();
CREATE TRIGGER task_dependencies_same_team_on_update AFTER UPDATE ON task_dependencies
    REFERENCING NEW TABLE AS written_edges
    FOR EACH STATEMENT EXECUTE FUNCTION task_dependencies_same_team();
"""

# 0001's row trigger, as it was.
PER_ROW = """
DROP TRIGGER task_dependencies_same_team_on_update ON task_dependencies;
DROP TRIGGER task_dependencies_same_team ON task_dependencies;
DROP FUNCTION task_dependencies_same_team();
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


def upgrade() -> None:
    op.execute(PER_STATEMENT)


def downgrade() -> None:
    op.execute(PER_ROW)
