"""reconciliation: drifts, checkpoints, cursors, and marks left by triggers on tampering

Every change the code makes to stock bumps the level's version and writes a ledger entry and
an outbox event in the same transaction; the reconciler learns of those from the outbox. What
the code never does is left as a mark by a trigger, so a pass finds it without scanning:
- a stock level updated without a new version, or deleted;
- a ledger entry updated or deleted (the ledger is append-only): the level is folded whole;
- an outbox event deleted before the relay published it (a lost event).
No trigger fires on the code's own writes (the WHEN clauses), so the hot path pays nothing.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# (trigger, table, event, WHEN condition, sku, location, reason, whole)
_TRIGGERS = [
    ("reconcile_level_tampered", "stock_levels", "UPDATE", "OLD.version = NEW.version",
     "OLD.sku", "OLD.location", "'stock_levels updated without a new version'", False),
    ("reconcile_level_deleted", "stock_levels", "DELETE", None,
     "OLD.sku", "OLD.location", "'stock_levels row deleted'", False),
    ("reconcile_ledger_updated", "ledger", "UPDATE", None,
     "OLD.sku", "OLD.location", "'ledger entry updated'", True),
    ("reconcile_ledger_deleted", "ledger", "DELETE", None,
     "OLD.sku", "OLD.location", "'ledger entry deleted'", True),
    ("reconcile_event_lost", "outbox", "DELETE", "OLD.published_at IS NULL",
     "OLD.subject", "''", "OLD.type", False),
]

_MARK = """INSERT INTO reconcile_marks (sku, location, reason, whole, n)
VALUES ({sku}, {location}, {reason}, {whole}, 1)
ON CONFLICT (sku, location) DO UPDATE SET n = reconcile_marks.n + 1,
    reason = excluded.reason, whole = (reconcile_marks.whole OR excluded.whole)"""


def _postgres() -> list[str]:
    statements = []
    for name, table, event, when, sku, location, reason, whole in _TRIGGERS:
        mark = _MARK.format(sku=sku, location=location, reason=reason,
                            whole="TRUE" if whole else "FALSE")
        statements.append(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {mark};
                RETURN NULL;
            END
            $$""")
        condition = f"WHEN ({when})" if when else ""
        statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                          f"{condition} EXECUTE FUNCTION {name}()")
    return statements


def _sqlite() -> list[str]:
    statements = []
    for name, table, event, when, sku, location, reason, whole in _TRIGGERS:
        mark = _MARK.format(sku=sku, location=location, reason=reason, whole=1 if whole else 0)
        condition = f"WHEN {when}" if when else ""
        statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                          f"{condition} BEGIN {mark}; END")
    return statements


def upgrade() -> None:
    op.create_table(
        "reconcile_marks",
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("whole", sa.Boolean, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("sku", "location", name="pk_reconcile_marks"),
    )
    op.create_table(
        "reconcile_checkpoints",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sku", "location", name="pk_reconcile_checkpoints"),
    )
    op.create_table(
        "reconcile_cursors",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("position", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_reconcile_cursors"),
    )
    op.create_table(
        "drifts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("expected", sa.JSON, nullable=False),
        sa.Column("actual", sa.JSON, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_drifts"),
    )
    op.create_index("ix_drifts_status", "drifts", ["status"])
    statements = _postgres() if op.get_bind().dialect.name == "postgresql" else _sqlite()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, *_ in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")
        if postgres:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_index("ix_drifts_status", table_name="drifts")
    for table in ("drifts", "reconcile_cursors", "reconcile_checkpoints", "reconcile_marks"):
        op.drop_table(table)
