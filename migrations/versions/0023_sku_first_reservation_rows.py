"""Reservation lines and allocations keyed SKU-first, so that they could be distributed by SKU
beside the stock they hold (docs/sharding.md): primary keys (sku, reservation_id) and
(sku, reservation_id, position), an index on reservation_id for reading a reservation's rows
(and none of its own on the lines' sku, which the key now leads), and no foreign key to
`reservations` (a table distributed by SKU may reference only reference tables or co-located
ones; the rows are written in the reservation's own transaction).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# Contracting on purpose (tests/e2e/test_expand_contract.py): the keys change and the foreign
# keys go, but no column does. The previous release only inserts these rows (the same rows
# are unique under the new keys as under the old: a reservation has one line per SKU and its
# allocations are numbered) and reads them by reservation id, which the new index serves.
CONTRACT = ("keys reordered SKU-first, foreign keys dropped, the lines' sku index folded into "
            "their key; every column stays")

TABLES = {
    "reservation_lines": (["reservation_id", "sku"], ["sku", "reservation_id"]),
    "reservation_allocations": (["reservation_id", "position"],
                                ["sku", "reservation_id", "position"]),
}


def upgrade() -> None:
    for table, (_, new) in TABLES.items():
        # Batch mode: SQLite cannot alter a primary key in place (it copies the table).
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_reservation_id_reservations", type_="foreignkey")
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", new)
            batch.create_index(f"ix_{table}_reservation_id", ["reservation_id"])
    # The new key leads with sku: an index of its own on it would only cost every line written.
    with op.batch_alter_table("reservation_lines") as batch:
        batch.drop_index("ix_reservation_lines_sku")


def downgrade() -> None:
    with op.batch_alter_table("reservation_lines") as batch:
        batch.create_index("ix_reservation_lines_sku", ["sku"])
    for table, (old, _) in TABLES.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_reservation_id")
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", old)
            batch.create_foreign_key(f"fk_{table}_reservation_id_reservations", "reservations",
                                     ["reservation_id"], ["id"])
