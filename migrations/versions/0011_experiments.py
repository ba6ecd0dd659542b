"""experiments, their exposures and attributed conversions

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_table(
        "experiment_exposures",
        sa.Column("experiment_id", sa.String(36), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "subject", name="pk_experiment_exposures"),
    )
    op.create_index("ix_experiment_exposures_subject", "experiment_exposures", ["subject"])
    op.create_table(
        "experiment_conversions",
        sa.Column("experiment_id", sa.String(36), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "subject", "kind",
                                name="pk_experiment_conversions"),
    )


def downgrade() -> None:
    op.drop_table("experiment_conversions")
    op.drop_index("ix_experiment_exposures_subject", "experiment_exposures")
    op.drop_table("experiment_exposures")
    op.drop_table("experiments")
