"""on-site polls: polls, their answers (one per poll and session or customer), the answers'
choices for counting, and the poll each session was last shown; customers' behaviour summary
(recent views and purchases, brand and category counts) and their projection of products

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "polls",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("questions", sa.JSON, nullable=False),
        sa.Column("contexts", sa.JSON, nullable=False),
        sa.Column("product_ids", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_polls"),
    )
    op.create_table(
        "poll_answers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("poll_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_poll_answers"),
        sa.UniqueConstraint("poll_id", "session_id", name="uq_poll_answers_session"),
        sa.UniqueConstraint("poll_id", "customer_id", name="uq_poll_answers_customer"),
    )
    op.create_index("ix_poll_answers_customer_id", "poll_answers", ["customer_id"])
    op.create_table(
        "poll_choices",
        sa.Column("answer_id", sa.String(64), nullable=False),
        sa.Column("question_id", sa.String(64), nullable=False),
        sa.Column("poll_id", sa.String(64), nullable=False),
        sa.Column("option_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("answer_id", "question_id", name="pk_poll_choices"),
    )
    op.create_index("ix_poll_choices_poll_id", "poll_choices", ["poll_id"])
    op.create_table(
        "poll_impressions",
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("poll_id", sa.String(64), nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_poll_impressions"),
    )
    op.create_table(
        "customer_items",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("brand", sa.String(128), nullable=False),
        sa.Column("category", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("sku", name="pk_customer_items"),
    )
    op.create_index("ix_customer_items_product_id", "customer_items", ["product_id"])
    op.create_table(
        "customer_behaviour",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("views", sa.JSON, nullable=False),
        sa.Column("purchases", sa.JSON, nullable=False),
        sa.Column("brands", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_behaviour"),
    )


def downgrade() -> None:
    op.drop_table("customer_behaviour")
    op.drop_index("ix_customer_items_product_id", table_name="customer_items")
    op.drop_table("customer_items")
    op.drop_table("poll_impressions")
    op.drop_index("ix_poll_choices_poll_id", table_name="poll_choices")
    op.drop_table("poll_choices")
    op.drop_index("ix_poll_answers_customer_id", table_name="poll_answers")
    op.drop_table("poll_answers")
    op.drop_table("polls")
