"""drop payment failures: the drops context's copy of checkout's failed payment attempts
(order.payment_failed.v1), one row per failed checkout, counted per shopper for the bot scoring

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drop_payment_failures",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_drop_payment_failures"),
    )
    op.create_index("ix_drop_payment_failures_customer", "drop_payment_failures",
                    ["customer_id", "failed_at"])


def downgrade() -> None:
    op.drop_index("ix_drop_payment_failures_customer", table_name="drop_payment_failures")
    op.drop_table("drop_payment_failures")
