"""drop draws: a draw drop's entry window, winner count and claim window; its entries (one per
customer, and per fingerprint when given, scored like tickets), its one stored draw (the seed,
the entries and their order), and the claims of rights heard from inventory

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drops") as table:
        table.add_column(sa.Column("entries_close_at", sa.DateTime(timezone=True),
                                   nullable=True))
        table.add_column(sa.Column("draw_winners", sa.Integer, nullable=True))
        table.add_column(sa.Column("claim_seconds", sa.Float, nullable=False,
                                   server_default="900.0"))
    op.create_table(
        "drop_entries",
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False, server_default="admit"),
        sa.Column("verdict", sa.JSON, nullable=True),
        sa.Column("client_key", sa.String(64), nullable=True),
        sa.Column("asks", sa.Integer, nullable=False, server_default="1"),
        sa.Column("won_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("entry_id", name="pk_drop_entries"),
        sa.UniqueConstraint("drop_id", "customer_id", name="uq_drop_entries_customer"),
        sa.UniqueConstraint("drop_id", "fingerprint", name="uq_drop_entries_fingerprint"),
    )
    op.create_index("ix_drop_entries_client", "drop_entries", ["drop_id", "client_key"])
    op.create_table(
        "drop_draws",
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("seed", sa.String(64), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drawn_by", sa.String(200), nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("entries", sa.JSON, nullable=False),
        sa.Column("draw_order", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("drop_id", name="pk_drop_draws"),
    )
    op.create_table(
        "drop_claims",
        sa.Column("drop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reservation_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("drop_id", "customer_id", name="pk_drop_claims"),
    )


def downgrade() -> None:
    op.drop_table("drop_claims")
    op.drop_table("drop_draws")
    op.drop_index("ix_drop_entries_client", table_name="drop_entries")
    op.drop_table("drop_entries")
    with op.batch_alter_table("drops") as table:
        table.drop_column("claim_seconds")
        table.drop_column("draw_winners")
        table.drop_column("entries_close_at")
