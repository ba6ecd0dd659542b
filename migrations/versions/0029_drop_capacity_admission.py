"""drops admit by measured checkout capacity: a drop's admission ("fixed" or "capacity") and
ceiling, its stored rate segments (one per drop and moment), and the checkouts of its SKUs
heard from inventory

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drops") as table:
        table.add_column(sa.Column("admission", sa.String(16), nullable=False,
                                   server_default="fixed"))
        table.add_column(sa.Column("max_admit_per_second", sa.Float, nullable=True))
    op.create_table(
        "drop_rate_segments",
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("from_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("through", sa.Integer, nullable=False),
        sa.Column("open", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("drop_id", "from_at", name="pk_drop_rate_segments"),
    )
    op.create_table(
        "drop_checkouts",
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("reservation_id", sa.String(64), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("drop_id", "reservation_id", name="pk_drop_checkouts"),
    )
    op.create_index("ix_drop_checkouts_ended", "drop_checkouts", ["drop_id", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_drop_checkouts_ended", table_name="drop_checkouts")
    op.drop_table("drop_checkouts")
    op.drop_table("drop_rate_segments")
    with op.batch_alter_table("drops") as table:
        table.drop_column("max_admit_per_second")
        table.drop_column("admission")
