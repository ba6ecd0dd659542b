"""drop tickets carry the keyed hash of the payment method or address fingerprint a shopper
gave, as draw entries do; both are indexed by fingerprint, for the bot scoring's count of the
shoppers on one across drops

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drop_tickets") as table:
        table.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index("ix_drop_tickets_fingerprint", "drop_tickets",
                    ["fingerprint", "customer_id", "arrived_at"])
    op.create_index("ix_drop_entries_fingerprint", "drop_entries",
                    ["fingerprint", "customer_id", "arrived_at"])


def downgrade() -> None:
    op.drop_index("ix_drop_entries_fingerprint", table_name="drop_entries")
    op.drop_index("ix_drop_tickets_fingerprint", table_name="drop_tickets")
    with op.batch_alter_table("drop_tickets") as table:
        table.drop_column("fingerprint")
