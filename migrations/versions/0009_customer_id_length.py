"""customer ids on carts and orders are as long as the API accepts (128), as on reservations

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite does not enforce a VARCHAR's length
    for table in ("carts", "orders"):
        op.alter_column(table, "customer_id", type_=sa.String(128),
                        existing_type=sa.String(64), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table in ("carts", "orders"):
        op.alter_column(table, "customer_id", type_=sa.String(64),
                        existing_type=sa.String(128), existing_nullable=True)
