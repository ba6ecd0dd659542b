"""outbox: a statement-level trigger sends the relay's NOTIFY (PostgreSQL only)

Each write transaction that added events sent its own `SELECT pg_notify(...)` before COMMIT:
one round trip per write. The trigger sends it from the INSERT (or COPY) itself; PostgreSQL
delivers NOTIFY at commit and drops it on rollback, and folds the duplicates of one
transaction into one, so the relay hears exactly what it heard before. SQLite has no NOTIFY:
its writers wake the relay in-process (`platform.db.signal`), and this revision is a no-op.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The channel is `platform.bus.outbox.OUTBOX_SIGNAL`, spelled out: a migration must not change
# with the code that runs after it.
_UPGRADE = [
    """
    CREATE FUNCTION instock_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('instock_outbox', '');
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION instock_outbox_notify()
    """,
]

_DOWNGRADE = [
    "DROP TRIGGER outbox_notify ON outbox",
    "DROP FUNCTION instock_outbox_notify()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _DOWNGRADE:
            op.execute(statement)
