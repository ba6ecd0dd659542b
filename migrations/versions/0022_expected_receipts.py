"""When each stock level's incoming units should arrive (an `expect` adjustment's
expected_on): what analytics' stock-out alert compares the projected stock-out with

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expected_receipts",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("location", sa.String(64), primary_key=True),
        sa.Column("expected_on", sa.Date, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("expected_receipts")
