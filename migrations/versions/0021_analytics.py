"""Inventory analytics: hourly facts per SKU, channel and location (partitioned by month on
PostgreSQL; the partitions are made by the application as months come), the stock levels the
fold has reached, the SKUs' in-stock periods with their sell-out curves, and the standing
stock-out alerts

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

COUNTERS = ("sold", "reserved", "released", "expired", "cancelled", "returned", "restocked",
            "views", "carts", "minutes_in_stock", "refused", "waitlist_joins")


def upgrade() -> None:
    op.create_table(
        "analytics_facts",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("location", sa.String(64), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        *[sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
          for name in COUNTERS],
        postgresql_partition_by="RANGE (hour)",
    )
    op.create_table(
        "analytics_levels",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("location", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        *[sa.Column(name, sa.BigInteger, nullable=False)
          for name in ("on_hand", "reserved", "committed", "safety_stock", "unsellable",
                       "incoming")],
    )
    op.create_table(
        "analytics_in_stock",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("units", sa.BigInteger, nullable=False, server_default="0"),
        *[sa.Column(column, sa.DateTime(timezone=True), nullable=True)
          for column in ("sold_25_at", "sold_50_at", "sold_75_at")],
    )
    op.create_table(
        "analytics_alerts",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("stockout_on", sa.Date, nullable=False),
        sa.Column("receipt_on", sa.Date, nullable=True),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_alerts")
    op.drop_table("analytics_in_stock")
    op.drop_table("analytics_levels")
    op.drop_table("analytics_facts")  # its partitions go with it
