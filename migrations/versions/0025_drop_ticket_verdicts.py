"""drop tickets carry the bot scoring's verdict (its decision, score and the rules tripped),
the keyed hash of the client address they came from, and how often the shopper asked

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drop_tickets") as table:
        table.add_column(sa.Column("decision", sa.String(8), nullable=False,
                                   server_default="admit"))
        table.add_column(sa.Column("verdict", sa.JSON, nullable=True))
        table.add_column(sa.Column("client_key", sa.String(64), nullable=True))
        table.add_column(sa.Column("asks", sa.Integer, nullable=False, server_default="1"))
    op.create_index("ix_drop_tickets_client", "drop_tickets", ["drop_id", "client_key"])


def downgrade() -> None:
    op.drop_index("ix_drop_tickets_client", table_name="drop_tickets")
    with op.batch_alter_table("drop_tickets") as table:
        table.drop_column("asks")
        table.drop_column("client_key")
        table.drop_column("verdict")
        table.drop_column("decision")
