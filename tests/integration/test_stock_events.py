"""What the inventory and catalog services write to the outbox: subjects, sequences, totals,
SKU alerts, and envelopes that match the published JSON Schemas."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.catalog.model import ProductPatch
from instock.inventory.model import Adjustment, AdjustmentKind, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.bus.outbox import outbox
from instock.platform.bus.schemas import validate
from instock.platform.db import utcnow
from tests.integration.helpers import CTX, add_location, add_product, receive, stocked


@pytest.fixture
def c(container: Container) -> Container:
    return container


async def outbox_rows(c: Container) -> list[Any]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(outbox).order_by(outbox.c.created_at, outbox.c.id))
        return list(rows)


def of_type(rows: Iterable[Any], prefix: str) -> list[dict[str, Any]]:
    return [row.envelope for row in rows if row.type.startswith(prefix)]


async def test_stock_events_carry_the_sku_version_as_sequence_and_the_totals(
        c: Container) -> None:
    await add_location(c, "wh-a")
    await add_location(c, "wh-b")
    await add_product(c, "p", ["A"])
    await receive(c, "A", "wh-a", 5)
    await receive(c, "A", "wh-b", 3)
    await c.inventory.adjust(Adjustment("A", "wh-a", AdjustmentKind.TRANSFER, 2,
                                        to_location="wh-b"), CTX)
    view = await c.inventory.stock("A")
    changed = of_type(await outbox_rows(c), "inventory.stock_changed")
    assert [e["sequence"] for e in changed] == [1, 2, 3, 3]  # the transfer: two levels, one tx
    last_two = changed[-2:]
    assert {e["data"]["location"] for e in last_two} == {"wh-a", "wh-b"}
    for doc in last_two:
        assert (doc["subject"], doc["sequence"], doc["data"]["sku_version"]) == (
            "A", view.version, view.version)
        assert doc["data"]["totals"] == {**view.totals.as_dict(), "available": view.available}
        assert doc["data"]["reason"] == "transfer"
    by_location = {e["data"]["location"]: e["data"] for e in last_two}
    assert (by_location["wh-a"]["on_hand"], by_location["wh-b"]["on_hand"]) == (3, 5)


async def test_totals_leave_expired_lots_out_of_available(c: Container) -> None:
    await stocked(c, "A", 4)
    yesterday = utcnow().date() - timedelta(days=1)
    await receive(c, "A", "wh", 6, "OLD", yesterday)
    [*_, last] = of_type(await outbox_rows(c), "inventory.stock_changed")
    assert (last["data"]["totals"]["on_hand"], last["data"]["totals"]["available"]) == (10, 4)
    assert (await c.inventory.stock("A")).available == 4


async def test_alerts_follow_availability_across_transactions(c: Container) -> None:
    await stocked(c, "A", 5)  # 0 -> 5: back in stock
    await c.inventory.set_policy("A", per_customer_limit=None, low_stock_threshold=2)
    first = await c.inventory.reserve(ReserveRequest([Line("A", 3)]), CTX)  # 5 -> 2: low
    await c.inventory.reserve(ReserveRequest([Line("A", 1)]), CTX)  # 2 -> 1: still low, quiet
    await c.inventory.reserve(ReserveRequest([Line("A", 1)]), CTX)  # 1 -> 0: sold out
    await c.inventory.release(first.id, CTX)  # 0 -> 3: back in stock
    rows = await outbox_rows(c)
    alerts = [(e["type"], e["data"]["available"], e["sequence"])
              for e in of_type(rows, "inventory.")
              if e["type"] not in ("inventory.stock_changed.v1", "inventory.policy_changed.v1")]
    # set_policy bumps the SKU's version too (it is the ETag; its policy_changed event has
    # sequence 2), hence 1, 3, 5, 6.
    assert alerts == [("inventory.back_in_stock.v1", 5, 1), ("inventory.low_stock.v1", 2, 3),
                      ("inventory.sold_out.v1", 0, 5), ("inventory.back_in_stock.v1", 3, 6)]
    low = next(e for e in of_type(rows, "inventory.low_stock"))
    assert low["data"] == {"sku": "A", "sku_version": 3, "available": 2, "threshold": 2}
    # The alert and the level's change come from one transaction: same sequence, same row set.
    sold_out_tx = [row.type for row in rows if row.subject == "A" and row.sequence == 5]
    assert sold_out_tx == ["inventory.stock_changed.v1", "inventory.sold_out.v1"]


async def test_reservation_and_product_events_have_their_own_subjects(c: Container) -> None:
    await stocked(c, "A", 5)
    r = await c.inventory.reserve(ReserveRequest([Line("A", 2)]), CTX)
    await c.inventory.commit(r.id, CTX)
    await c.catalog.update_product("p-A", ProductPatch(title="Renamed"))
    rows = await outbox_rows(c)
    reservation = of_type(rows, "reservation.")
    assert [(e["type"], e["subject"]) for e in reservation] == [
        ("reservation.created.v1", r.id), ("reservation.committed.v1", r.id)]
    assert all("sequence" not in e for e in reservation)
    assert [row.sequence for row in rows if row.type.startswith("reservation.")] == [None, None]
    products = of_type(rows, "product.")
    assert [(e["type"], e["subject"], e["sequence"]) for e in products] == [
        ("product.created.v1", "p-A", 1), ("product.updated.v1", "p-A", 2)]
    assert products[-1]["data"]["title"] == "Renamed"
    assert products[-1]["data"]["changed"] == ["title"]


async def test_every_envelope_the_services_write_matches_its_schema(c: Container) -> None:
    """One of each event type, straight from the outbox, through the published schemas."""
    await add_location(c, "wh")
    await add_product(c, "kit", ["C", "D"], bundles={"KIT": {"C": 1, "D": 1}})
    await c.inventory.set_policy("C", per_customer_limit=None, low_stock_threshold=3)
    await receive(c, "C", "wh", 5, "L1", utcnow().date() + timedelta(days=30))
    await receive(c, "D", "wh", 5)
    kept = await c.inventory.reserve(ReserveRequest([Line("KIT", 2)], customer_id="c1"), CTX)
    await c.inventory.commit(kept.id, CTX)
    dropped = await c.inventory.reserve(ReserveRequest([Line("C", 3)]), CTX)
    await c.inventory.release(dropped.id, CTX)
    await c.inventory.reserve(ReserveRequest([Line("C", 3)], ttl_seconds=1), CTX)
    later = utcnow() + timedelta(seconds=5)
    c.inventory.clock = lambda: later
    await c.inventory.sweep()
    await c.catalog.update_product("kit", ProductPatch(price=Decimal("100"), tags=["drop"]))
    rows = await outbox_rows(c)
    for row in rows:
        validate(row.envelope)
        assert (row.subject, row.type, row.sequence) == (
            row.envelope["subject"], row.envelope["type"], row.envelope.get("sequence"))
    assert {row.type for row in rows} == {
        "inventory.stock_changed.v1", "inventory.low_stock.v1", "inventory.sold_out.v1",
        "inventory.back_in_stock.v1", "inventory.policy_changed.v1", "reservation.created.v1",
        "reservation.committed.v1", "reservation.released.v1", "reservation.expired.v1",
        "product.created.v1", "product.updated.v1"}
