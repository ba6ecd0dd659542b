"""orders remember the idempotency key of the checkout that placed them

A checkout runs in several transactions (its saga's steps call a payment provider between them),
so its response cannot be stored in the transaction of its change, as other keyed writes' are.
Instead the order keeps the key's scope: a retry after a crash finds the order its first try
placed and answers with it, rather than waiting for the key's claim to time out or placing a
second order.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("idempotency_scope", sa.String(64), nullable=True))
        batch_op.create_unique_constraint("uq_orders_idempotency_scope", ["idempotency_scope"])


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_constraint("uq_orders_idempotency_scope", type_="unique")
        batch_op.drop_column("idempotency_scope")
