"""reservations remember the idempotency key that created them

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reservations") as batch_op:
        batch_op.add_column(sa.Column("idempotency_scope", sa.String(64), nullable=True))
        batch_op.create_unique_constraint("uq_reservations_idempotency_scope",
                                          ["idempotency_scope"])


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch_op:
        batch_op.drop_constraint("uq_reservations_idempotency_scope", type_="unique")
        batch_op.drop_column("idempotency_scope")
