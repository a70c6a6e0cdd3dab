"""decompositions: goals planned in the background (POST /teams/{id}/decompositions)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A decomposition is a job row: queued when submitted, claimed under a lease by one agent
consumer (planning), then succeeded (with the ids of the tasks its plan created, in the same
transaction), failed or cancelled. A new table: nothing existing is rewritten or locked.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STATUSES = ("queued", "planning", "succeeded", "failed", "cancelled")


def upgrade() -> None:
    status = sa.Enum(*STATUSES, name="decomposition_status")
    op.create_table(
        "decompositions",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column(
            "team_id",
            UUID(as_uuid=True),
            sa.ForeignKey("teams.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("goal", sa.Text, nullable=False),
        sa.Column("max_depth", sa.Integer, nullable=False),
        sa.Column("status", status, nullable=False, server_default="queued"),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("task_ids", ARRAY(UUID(as_uuid=True))),
        sa.Column("tokens_used", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost", sa.Numeric(20, 10), nullable=False, server_default="0"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("length(goal) BETWEEN 1 AND 10000", name="decomposition_goal_length"),
        sa.CheckConstraint("max_depth BETWEEN 0 AND 10", name="decomposition_depth_bounds"),
        sa.CheckConstraint("attempts >= 0", name="decomposition_attempts_non_negative"),
    )
    op.create_index(
        "ix_decompositions_team",
        "decompositions",
        ["team_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_decompositions_open",
        "decompositions",
        ["queued_at", "id"],
        postgresql_where=sa.text("status IN ('queued', 'planning')"),
    )
    op.create_index(
        "ux_decompositions_request",
        "decompositions",
        ["team_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("decompositions")
    sa.Enum(name="decomposition_status").drop(op.get_bind())
