"""recommendations: behaviour events, sessions merged into customers, the catalogue projection

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rec_items",
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("brand", sa.String(128), nullable=False),
        sa.Column("category", sa.String(128), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("replenishable", sa.Boolean, nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name="pk_rec_items"),
    )
    op.create_table(
        "behaviour_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("product_id", sa.String(64), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("query", sa.Text, nullable=True),
        sa.Column("attribute", sa.String(64), nullable=True),
        sa.Column("value", sa.String(128), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_behaviour_events"),
    )
    op.create_index("ix_behaviour_events_customer", "behaviour_events",
                    ["customer_id", "occurred_at"])
    op.create_index("ix_behaviour_events_session", "behaviour_events",
                    ["session_id", "occurred_at"])
    op.create_index("ix_behaviour_events_occurred_at", "behaviour_events", ["occurred_at"])
    op.create_table(
        "rec_sessions",
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_rec_sessions"),
    )


def downgrade() -> None:
    op.drop_table("rec_sessions")
    op.drop_index("ix_behaviour_events_occurred_at", "behaviour_events")
    op.drop_index("ix_behaviour_events_session", "behaviour_events")
    op.drop_index("ix_behaviour_events_customer", "behaviour_events")
    op.drop_table("behaviour_events")
    op.drop_table("rec_items")
