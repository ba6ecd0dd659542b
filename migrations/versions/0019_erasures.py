"""erasure of a person: the pseudonym (and other ids) of an erasure under way, and when it ended

Kept on the subject's key row: an interrupted erasure finishes with the same pseudonym, and a
finished one forgets it (then nothing links the pseudonymised records to the person).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subject_keys") as batch:
        batch.add_column(sa.Column("pseudonym", sa.String(64), nullable=True))
        batch.add_column(sa.Column("aliases", sa.JSON, nullable=True))
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subject_keys") as batch:
        batch.drop_column("erased_at")
        batch.drop_column("aliases")
        batch.drop_column("pseudonym")
