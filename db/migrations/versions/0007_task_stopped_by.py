"""tasks.stopped_by: the dependency whose failure or cancellation ended a task

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

A task waiting for one that failed for good or was cancelled ends the same way (stop_dependents);
retrying that dependency runs again what it stopped, found by this column. Nullable, no
default: adding it rewrites nothing.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("stopped_by", UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "stopped_by")
