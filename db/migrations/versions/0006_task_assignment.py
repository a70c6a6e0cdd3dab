"""tasks.assignment: which assignment of a task its stream entry belongs to

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Each assignment gives the task a fresh id, carried by its stream entry; a claim must name the
current one. Without it, an entry of an earlier assignment (its holder died, the task was then
cancelled, retried and assigned again to the same worker) could be reclaimed and fence out the
live run of the new one. Nullable, no default: adding it rewrites nothing, and entries emitted
before it (without the field) claim as before.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("assignment", UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "assignment")
