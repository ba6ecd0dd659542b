"""The schema is ready to be sharded by SKU (DESIGN.md §5; docs/sharding.md).

One declared classification of every table of the migrated schema, checked against the real
thing on SQLite and on PostgreSQL when INSTOCK_TEST_DATABASE_URL is set:

- DISTRIBUTED (by sku): per-SKU state. Citus distributes such a table by its `sku` column and
  co-locates it with the others, so one SKU's rows of every table live on one node and a
  reservation's stock, ledger and lots are one node's transaction. Each needs `sku` first in
  its primary key and in each unique constraint (Citus needs the distribution column in each
  of them; first, so that the key's index serves the per-SKU lookups), an `sku` column of the
  same type everywhere (co-location), and foreign keys only to reference tables.
- REFERENCE: the catalogue and the allocation rules every per-SKU query joins with; small,
  copied to every node.
- LOCAL: neither, with the reason; they stay on the coordinator.

A table added without a classification fails here, as does a classified table that is gone,
and docs/sharding.md's create_distributed_table/create_reference_table statements must name
exactly these tables. (Migration 0023 closed the last gaps: reservation lines and allocations
keyed SKU-first, without foreign keys to the coordinator's `reservations`.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import backends, migrated_database

DOC = Path(__file__).resolve().parents[2] / "docs" / "sharding.md"

DISTRIBUTED, REFERENCE, LOCAL = "distributed", "reference", "local"
# Distributed tables co-locate with this one.
COLOCATE_WITH = "stock_levels"

TABLES: dict[str, tuple[str, str]] = {
    # --- per-SKU state: distributed by sku ---
    "stock_levels": (DISTRIBUTED, "a SKU's buckets per location"),
    "ledger": (DISTRIBUTED, "a SKU's hash-chained entries per location"),
    "lots": (DISTRIBUTED, "a SKU's lots per location"),
    "inventory_items": (DISTRIBUTED, "a SKU's version and policy (limit, low-stock threshold)"),
    "reservation_lines": (DISTRIBUTED, "the quantity of a SKU a reservation holds"),
    "reservation_allocations": (DISTRIBUTED, "where (location, lot) a reservation draws a SKU"),
    "expected_receipts": (DISTRIBUTED, "a SKU's next receipt per location"),
    "reconcile_checkpoints": (DISTRIBUTED, "the ledger state a SKU was last verified at"),
    "reconcile_marks": (DISTRIBUTED, "SKUs due for a check"),
    "waitlist": (DISTRIBUTED, "who waits for a SKU"),
    "waitlist_waves": (DISTRIBUTED, "a SKU's back-in-stock waves"),
    "channel_listings": (DISTRIBUTED, "what each marketplace was told of a SKU"),
    "item_availability": (DISTRIBUTED, "recommendations' copy of a SKU's availability"),
    "analytics_facts": (DISTRIBUTED, "a SKU's hourly facts (partitioned by month)"),
    "analytics_levels": (DISTRIBUTED, "the levels analytics' fold reached per SKU"),
    "analytics_in_stock": (DISTRIBUTED, "a SKU's in-stock periods and sell-out curve"),
    "analytics_alerts": (DISTRIBUTED, "a SKU's standing stock-out alert"),
    # --- the catalogue and allocation rules: reference ---
    "products": (REFERENCE, "catalogue"),
    "variants": (REFERENCE, "catalogue: one SKU per size/colour"),
    "bundle_components": (REFERENCE, "catalogue: a bundle's components"),
    "locations": (REFERENCE, "stock_levels references it"),
    "channels": (REFERENCE, "allocation rules every availability read applies"),
    "channel_locations": (REFERENCE, "allocation rules: a channel's ordered locations"),
    "customer_items": (REFERENCE, "customers' copy of the catalogue (brand, category per SKU)"),
    "rec_items": (REFERENCE, "recommendations' copy of the catalogue"),
    # --- the rest: local, each with why ---
    "alembic_version": (LOCAL, "Alembic's bookkeeping"),
    "reservations": (LOCAL, "a reservation's header: it spans SKUs (a bundle reserves all its "
                            "components or none), keyed and found by its id"),
    "carts": (LOCAL, "a shopper's cart, by its id"),
    "cart_items": (LOCAL, "a cart's holds, read by cart; the stock they hold is in reservations"),
    "orders": (LOCAL, "an order spans SKUs; by its id"),
    "order_reservations": (LOCAL, "an order's reservations, by reservation id"),
    "sagas": (LOCAL, "an order's saga, by its id"),
    "payments": (LOCAL, "an order's payments"),
    "channel_connections": (LOCAL, "a marketplace's credentials, read by the channel worker"),
    "channel_orders": (LOCAL, "a marketplace's order feed, by channel and its order id"),
    "customers": (LOCAL, "a person's profile, by customer id"),
    "customer_behaviour": (LOCAL, "a person's behaviour summary"),
    "subject_keys": (LOCAL, "a person's data key (crypto-shredding), by subject"),
    "behaviour_events": (LOCAL, "shoppers' events by session and customer; the model reads "
                                "them whole"),
    "rec_sessions": (LOCAL, "a session merged into a customer"),
    "experiments": (LOCAL, "A/B tests, read by id"),
    "experiment_exposures": (LOCAL, "who saw which variant"),
    "experiment_conversions": (LOCAL, "who converted"),
    "drops": (LOCAL, "drops, read by id (a shop runs a handful at a time)"),
    "drop_tickets": (LOCAL, "a drop's waiting room, by drop and customer; positions are "
                            "counted across it"),
    "drop_entries": (LOCAL, "a draw drop's entries, by drop and customer or fingerprint"),
    "drop_draws": (LOCAL, "a drop's stored draw, by drop"),
    "drop_claims": (LOCAL, "entrants who reserved a draw drop's SKUs, by drop and customer"),
    "drop_rate_segments": (LOCAL, "a capacity drop's changes of rate, by drop"),
    "drop_checkouts": (LOCAL, "a capacity drop's checkouts heard from inventory, by drop"),
    "drop_payment_failures": (LOCAL, "a customer's failed checkouts, counted by customer for "
                                     "the drops' bot scoring"),
    "polls": (LOCAL, "polls, read by id"),
    "poll_answers": (LOCAL, "answers by poll and session or customer"),
    "poll_choices": (LOCAL, "an answer's choices"),
    "poll_impressions": (LOCAL, "the poll a session was last shown"),
    "notifications": (LOCAL, "messages by recipient"),
    "webhook_subscriptions": (LOCAL, "outbound webhook subscribers"),
    "webhook_deliveries": (LOCAL, "deliveries by subscription and event"),
    "webhook_attempts": (LOCAL, "a delivery's attempts"),
    "webhook_receipts": (LOCAL, "inbound webhooks seen, by source and event id"),
    "outbox": (LOCAL, "the transactional outbox, by event id, in every writer's transaction"),
    "inbox": (LOCAL, "events a consumer handled, by consumer and event id"),
    "consumer_positions": (LOCAL, "a consumer's last sequence per subject"),
    "dead_letters": (LOCAL, "events given up on"),
    "idempotency_keys": (LOCAL, "stored responses, by caller and key"),
    "drifts": (LOCAL, "reconciliation's findings, listed across SKUs by status for staff"),
    "reconcile_cursors": (LOCAL, "where reconciliation's sweep is"),
    "api_clients": (LOCAL, "OAuth clients"),
}

CATALOGUE = {"products", "variants", "bundle_components", "locations"}


@dataclass
class Table:
    primary_key: list[str]
    uniques: list[list[str]]
    foreign_keys: list[tuple[list[str], str]]
    columns: dict[str, sa.types.TypeEngine[object]]
    nullable: dict[str, bool] = field(default_factory=dict)


def inspect(conn: sa.Connection) -> dict[str, Table]:
    inspector = sa.inspect(conn)
    names = set(inspector.get_table_names())
    if conn.dialect.name == "postgresql":  # a partition is its parent's (made at run time)
        names -= set(conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid")
        ).scalars())
    tables = {}
    for name in names:
        columns = inspector.get_columns(name)
        uniques = [u["column_names"] for u in inspector.get_unique_constraints(name)]
        uniques += [i["column_names"] for i in inspector.get_indexes(name)
                    if i["unique"] and i["column_names"] not in uniques]
        tables[name] = Table(
            inspector.get_pk_constraint(name)["constrained_columns"], uniques,
            [(fk["constrained_columns"], fk["referred_table"])
             for fk in inspector.get_foreign_keys(name)],
            {c["name"]: c["type"] for c in columns},
            {c["name"]: c["nullable"] for c in columns})
    return tables


@pytest.fixture(scope="module", params=backends())
def schema(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Table]]:
    with migrated_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        async def look() -> dict[str, Table]:
            engine = create_async_engine(url)
            try:
                async with engine.connect() as conn:
                    return await conn.run_sync(inspect)
            finally:
                await engine.dispose()

        yield asyncio.run(look())


def of(kind: str) -> list[str]:
    return sorted(name for name, (k, _) in TABLES.items() if k == kind)


def test_every_table_is_classified(schema: dict[str, Table]) -> None:
    unclassified = sorted(set(schema) - set(TABLES))
    assert not unclassified, (
        f"tables with no sharding class: {unclassified}; add each to TABLES here (distributed "
        "by sku, reference, or local with the reason) and to docs/sharding.md")
    gone = sorted(set(TABLES) - set(schema))
    assert not gone, f"classified but not in the schema: {gone}"
    assert all(reason.strip() for _, reason in TABLES.values())


@pytest.mark.parametrize("table", of(DISTRIBUTED))
def test_per_sku_tables_are_keyed_by_sku_first(schema: dict[str, Table], table: str) -> None:
    found = schema[table]
    assert found.primary_key[:1] == ["sku"], f"{table}: primary key {found.primary_key}"
    for unique in found.uniques:
        assert unique[:1] == ["sku"], f"{table}: unique {unique}"


def test_per_sku_tables_can_be_colocated(schema: dict[str, Table]) -> None:
    """Citus co-locates tables whose distribution columns share a type (and collation)."""
    types = {table: schema[table].columns["sku"] for table in of(DISTRIBUTED)}
    assert {type(t).__name__ for t in types.values()} == {"VARCHAR"}, types
    assert not [t for t in types if schema[t].nullable["sku"]], "a NULL sku has no shard"


def test_the_catalogue_is_reference(schema: dict[str, Table]) -> None:
    assert set(of(REFERENCE)) >= CATALOGUE
    for table in of(REFERENCE):
        assert schema[table].primary_key, f"{table}: a reference table needs its key"


def foreign_key_problems(schema: dict[str, Table]) -> dict[tuple[str, str], str]:
    """Foreign keys a Citus cluster cannot keep: from a distributed table to anything but a
    reference table (or a co-located one, on sku), from a reference table to a non-reference
    one, and from a local table to a distributed one."""
    problems = {}
    for name, table in schema.items():
        for columns, referred in table.foreign_keys:
            source, target = TABLES[name][0], TABLES[referred][0]
            ok = {DISTRIBUTED: target == REFERENCE or (target == DISTRIBUTED and "sku" in columns),
                  REFERENCE: target == REFERENCE,
                  LOCAL: target != DISTRIBUTED}[source]
            if not ok:
                problems[(name, referred)] = f"{name}({', '.join(columns)}) -> {referred}"
    return problems


def test_foreign_keys_citus_can_keep(schema: dict[str, Table]) -> None:
    problems = foreign_key_problems(schema)
    assert not problems, f"foreign keys a sharded schema cannot keep: {problems}"



STATEMENT = re.compile(
    r"^(?P<comment>--\s*)?SELECT (?P<call>create_distributed_table|create_reference_table)"
    r"\('(?P<table>[a-z_]+)'(?:, '(?P<column>[a-z_]+)'(?:, colocate_with => '(?P<with>[a-z_]+)')?)?"
    r"\);", re.MULTILINE)


def test_the_doc_distributes_exactly_these_tables() -> None:
    statements = list(STATEMENT.finditer(DOC.read_text()))
    distributed = {m["table"]: m for m in statements if m["call"] == "create_distributed_table"}
    reference = [m["table"] for m in statements if m["call"] == "create_reference_table"]
    assert sorted(reference) == of(REFERENCE) and len(set(reference)) == len(reference)
    assert sorted(distributed) == of(DISTRIBUTED) and len(distributed) == sum(
        m["call"] == "create_distributed_table" for m in statements)
    for table, m in distributed.items():
        assert m["column"] == "sku", table
        assert m["with"] == (None if table == COLOCATE_WITH else COLOCATE_WITH), table
        assert not m["comment"], f"{table}: its statement is commented out"
    first = min(m.start() for m in statements if m["call"] == "create_distributed_table")
    assert max(m.start() for m in statements if m["call"] == "create_reference_table") < first, (
        "reference tables first: distributed tables' foreign keys point at them")
