"""drops: scheduled releases of SKUs (their SKUs and channels as JSON, the seed of the
waiting room's shuffle) and the waiting room's tickets, one per drop and customer, with the
place each holds in the room's order

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drops",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("skus", sa.JSON, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("admit_per_second", sa.Float, nullable=False),
        sa.Column("per_customer_limit", sa.Integer, nullable=True),
        sa.Column("channels", sa.JSON, nullable=False),
        sa.Column("seed", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drops"),
    )
    op.create_table(
        "drop_tickets",
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("lane", sa.Integer, nullable=False),
        sa.Column("place_key", sa.String(64), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("drop_id", "customer_id", name="pk_drop_tickets"),
    )
    op.create_index("ix_drop_tickets_place", "drop_tickets", ["drop_id", "lane", "place_key"])


def downgrade() -> None:
    op.drop_index("ix_drop_tickets_place", table_name="drop_tickets")
    op.drop_table("drop_tickets")
    op.drop_table("drops")
