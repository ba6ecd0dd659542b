"""customer profiles, their personal fields sealed, and the data keys that seal them

Privacy keeps one wrapped data key per data subject (`subject_keys`; a shredded subject keeps a
row without a key, so none is made for them again). Customers keep their email, phone and name
only sealed under that key, and a keyed hash of the email for lookups.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(64), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject_id", name="pk_subject_keys"),
    )
    op.create_index("ix_subject_keys_kid", "subject_keys", ["kid"])
    op.create_table(
        "customers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("email_enc", sa.Text, nullable=True),
        sa.Column("phone_enc", sa.Text, nullable=True),
        sa.Column("name_enc", sa.Text, nullable=True),
        sa.Column("email_hash", sa.String(64), nullable=True),
        sa.Column("sizes", sa.JSON, nullable=False),
        sa.Column("preferences", sa.JSON, nullable=False),
        sa.Column("consents", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )
    op.create_index("ix_customers_email_hash", "customers", ["email_hash"])


def downgrade() -> None:
    op.drop_index("ix_customers_email_hash", table_name="customers")
    op.drop_table("customers")
    op.drop_index("ix_subject_keys_kid", table_name="subject_keys")
    op.drop_table("subject_keys")
