"""orders say which reservations they hold, and when they changed, so the reconciler can ask

The reconciler compares committed stock with the orders holding it: for each committed
reservation, which order holds it (an order keeps its reservation ids as JSON, which no index
reaches), and which paid orders changed since its last pass. Existing orders are linked here.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    links = op.create_table(
        "order_reservations",
        sa.Column("reservation_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_order_reservations_order_id", "order_reservations", ["order_id"])
    op.create_index("ix_orders_updated_at", "orders", ["updated_at"])
    rows = op.get_bind().execute(sa.text("SELECT id, reservation_ids FROM orders"))
    linked = [{"reservation_id": rid, "order_id": order_id} for order_id, ids in rows
              for rid in dict.fromkeys(json.loads(ids) if isinstance(ids, str) else ids)]
    if linked:
        op.bulk_insert(links, linked)


def downgrade() -> None:
    op.drop_index("ix_orders_updated_at", table_name="orders")
    op.drop_index("ix_order_reservations_order_id", table_name="order_reservations")
    op.drop_table("order_reservations")
