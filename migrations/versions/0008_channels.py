"""marketplace connections and what each channel was last told; channel buffer and cap

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Inventory's channel allocation rules (instock.inventory.store.channels).
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("buffer", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("cap", sa.Integer, nullable=True))
    op.create_table(
        "channel_connections",
        sa.Column("channel_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("api_key", sa.String(500), nullable=False),
        sa.Column("webhook_secret", sa.String(500), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("channel_id", name="pk_channel_connections"),
    )
    op.create_table(
        "channel_listings",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("channel_id", sa.String(64), primary_key=True),
        sa.Column("changes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pushed_changes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pushed_version", sa.BigInteger, nullable=True),
        sa.Column("pushed_quantity", sa.BigInteger, nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pushes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("sku", "channel_id", name="pk_channel_listings"),
    )
    op.create_index("ix_channel_listings_channel_id", "channel_listings", ["channel_id"])
    op.create_table(
        "channel_orders",
        sa.Column("channel_id", sa.String(64), primary_key=True),
        sa.Column("external_id", sa.String(128), primary_key=True),
        sa.Column("work", sa.String(16), primary_key=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("error", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("channel_id", "external_id", "work", name="pk_channel_orders"),
    )
    op.create_index("ix_channel_orders_state_due_at", "channel_orders", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_channel_orders_state_due_at", "channel_orders")
    op.drop_table("channel_orders")
    op.drop_index("ix_channel_listings_channel_id", "channel_listings")
    op.drop_table("channel_listings")
    op.drop_table("channel_connections")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("cap")
        batch.drop_column("buffer")
