"""notifications, back-in-stock waves and the customer's time zone

`notifications` holds one row per message to one recipient on one channel, unique per
(recipient, reason, subject, cause, channel), claimed by senders like an outbox; no address is
stored. `waitlist_waves` holds each SKU's back-in-stock telling in progress. Customers get an
IANA `time_zone` (quiet hours are the customer's own).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(64), nullable=True))
    op.create_table(
        "waitlist_waves",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("cause", sa.String(64), nullable=False),
        sa.Column("waves", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sku", name="pk_waitlist_waves"),
    )
    op.create_index("ix_waitlist_waves_next_at", "waitlist_waves", ["next_at"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("cause", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("suppression", sa.String(32), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease", sa.String(36), nullable=True),
        sa.Column("provider_message_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint("recipient", "reason", "subject", "cause", "channel",
                            name="uq_notifications_key"),
    )
    op.create_index("ix_notifications_customer_id", "notifications", ["customer_id"])
    op.create_index("ix_notifications_status_due", "notifications", ["status", "due_at"])
    op.create_index("ix_notifications_recipient_sent", "notifications", ["recipient", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_recipient_sent", table_name="notifications")
    op.drop_index("ix_notifications_status_due", table_name="notifications")
    op.drop_index("ix_notifications_customer_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_waitlist_waves_next_at", table_name="waitlist_waves")
    op.drop_table("waitlist_waves")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("time_zone")
