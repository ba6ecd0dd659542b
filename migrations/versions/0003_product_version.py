"""products carry a version: the ETag of PATCH /v1/products/{id} and the sequence of product events

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing products become version 1, the version product.created.v1 now announces.
    with op.batch_alter_table("products") as batch_op:
        batch_op.add_column(sa.Column("version", sa.BigInteger(), server_default="1",
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_column("version")
