"""The inventory service against a real database (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.inventory import model, store
from instock.inventory.errors import (
    CustomerLimitExceeded,
    InsufficientStockConflict,
    InvalidTransition,
    StockRuleViolated,
)
from instock.inventory.model import Adjustment, AdjustmentKind, Line, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.db import utcnow
from instock.platform.errors import PreconditionFailed, ValidationFailed
from tests.integration.helpers import CTX, add_location, add_product, receive, stocked


async def assert_audit_ok(c: Container) -> None:
    report = await c.inventory.audit()
    assert report.problems == []


async def test_reserve_commit_release_moves_buckets_and_writes_the_ledger(c: Container) -> None:
    await stocked(c, "SKU-1", 10)
    r1 = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 3)]), CTX)
    r2 = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 2)]), CTX)
    await c.inventory.commit(r1.id, CTX)
    await c.inventory.release(r2.id, CTX)
    view = await c.inventory.stock("SKU-1")
    assert (view.totals.on_hand, view.totals.reserved, view.totals.committed) == (10, 0, 3)
    assert view.available == 7
    kinds = [e.kind for e in await c.inventory.ledger("SKU-1", 100)]
    assert kinds == ["receive", "reserve", "reserve", "commit", "release"]
    with pytest.raises(InvalidTransition):
        await c.inventory.release(r1.id, CTX)
    await assert_audit_ok(c)


async def test_a_rejected_change_changes_nothing(c: Container) -> None:
    await stocked(c, "SKU-1", 5)
    before = await c.inventory.stock("SKU-1")
    with pytest.raises(StockRuleViolated):
        await c.inventory.adjust(Adjustment("SKU-1", "wh", AdjustmentKind.DAMAGE, 6), CTX)
    with pytest.raises(InsufficientStockConflict):
        await c.inventory.reserve(ReserveRequest([Line("SKU-1", 6)]), CTX)
    with pytest.raises(ValidationFailed):
        await c.inventory.adjust(Adjustment("SKU-1", "nowhere", AdjustmentKind.RECEIVE, 1), CTX)
    assert await c.inventory.stock("SKU-1") == before
    assert len(await c.inventory.ledger("SKU-1", 100)) == 1


async def test_if_match_is_a_compare_and_swap_on_the_sku_version(c: Container) -> None:
    await stocked(c, "SKU-1", 5)
    version = (await c.inventory.stock("SKU-1")).version
    count = Adjustment("SKU-1", "wh", AdjustmentKind.COUNT, 4)
    await c.inventory.adjust(count, CTX, expected_version=version)
    with pytest.raises(PreconditionFailed):
        await c.inventory.adjust(count, CTX, expected_version=version)
    assert (await c.inventory.stock("SKU-1")).version == version + 1


async def test_channel_priority_and_fefo_with_minimum_shelf_life(c: Container) -> None:
    await add_location(c, "wh-a")
    await add_location(c, "wh-b")
    await add_product(c, "serum", ["SERUM"])
    today = utcnow().date()
    await receive(c, "SERUM", "wh-a", 5, "LATE", today + timedelta(days=300))
    await receive(c, "SERUM", "wh-a", 5, "SOON", today + timedelta(days=20))
    await receive(c, "SERUM", "wh-b", 5, "B1", today + timedelta(days=100))
    await c.inventory.save_channel(model.Channel("app", "app", 60, ["wh-b", "wh-a"]))
    await c.inventory.save_channel(model.Channel("outlet", "outlet", 0, ["wh-b"]))
    assert (await c.inventory.stock("SERUM")).available == 15
    assert (await c.inventory.stock("SERUM", "app")).available == 10  # SOON is too short-lived
    assert (await c.inventory.stock("SERUM", "outlet")).available == 5  # wh-b only
    r = await c.inventory.reserve(ReserveRequest([Line("SERUM", 8)], channel="app"), CTX)
    assert [(a.location, a.lot, a.quantity) for a in r.allocations] == [
        ("wh-b", "B1", 5), ("wh-a", "LATE", 3)]
    web = await c.inventory.reserve(ReserveRequest([Line("SERUM", 6)]), CTX)  # web: wh-a first
    assert [(a.location, a.lot, a.quantity) for a in web.allocations] == [
        ("wh-a", "SOON", 5), ("wh-a", "LATE", 1)]


async def test_transfer_keeps_lot_codes_and_expiry(c: Container) -> None:
    await add_location(c, "wh-a")
    await add_location(c, "wh-b")
    await add_product(c, "serum", ["SERUM"])
    expiry = utcnow().date() + timedelta(days=90)
    await receive(c, "SERUM", "wh-a", 5, "L1", expiry)
    await c.inventory.adjust(Adjustment("SERUM", "wh-a", AdjustmentKind.TRANSFER, 3,
                                        to_location="wh-b"), CTX)
    view = await c.inventory.stock("SERUM")
    by_location = {lv.location: lv for lv in view.levels}
    assert by_location["wh-b"].lots["L1"].expires_on == expiry
    assert (by_location["wh-a"].buckets.on_hand, by_location["wh-b"].buckets.on_hand) == (2, 3)
    await assert_audit_ok(c)


async def test_the_sweeper_expires_holds_and_lots(c: Container) -> None:
    await stocked(c, "SKU-1", 5)
    await receive(c, "SKU-1", "wh", 2, "L1", utcnow().date() + timedelta(days=2))
    r = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 4)], ttl_seconds=5), CTX)
    assert (await c.inventory.sweep())["reservations_expired"] == 0
    later = utcnow() + timedelta(days=3)
    c.inventory.clock = lambda: later
    result = await c.inventory.sweep()
    assert result == {"reservations_expired": 1, "skus_with_expired_lots": 1,
                      "shelf_life_notices": 0}
    assert (await c.inventory.get_reservation(r.id)).status is ReservationStatus.EXPIRED
    view = await c.inventory.stock("SKU-1")
    assert (view.totals.reserved, view.totals.unsellable, view.available) == (0, 2, 5)
    await assert_audit_ok(c)


async def test_concurrent_sweepers_release_each_hold_exactly_once(c: Container) -> None:
    await stocked(c, "SKU-1", 50)
    for _ in range(20):
        await c.inventory.reserve(ReserveRequest([Line("SKU-1", 2)], ttl_seconds=1), CTX)
    later = utcnow() + timedelta(seconds=5)
    c.inventory.clock = lambda: later
    results = await asyncio.gather(*(c.inventory.sweep() for _ in range(4)))
    assert sum(r["reservations_expired"] for r in results) == 20
    expiries = [e for e in await c.inventory.ledger("SKU-1", 1000) if e.kind == "expire"]
    assert len(expiries) == 20
    assert (await c.inventory.stock("SKU-1")).totals.reserved == 0
    await assert_audit_ok(c)


async def test_concurrent_reservations_never_oversell(c: Container) -> None:
    await stocked(c, "HOT", 40)

    async def buy() -> bool:
        try:
            await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), CTX)
            return True
        except InsufficientStockConflict:
            return False

    outcomes = await asyncio.gather(*(buy() for _ in range(150)))
    assert sum(outcomes) == 40
    view = await c.inventory.stock("HOT")
    assert (view.totals.reserved, view.available) == (40, 0)
    await assert_audit_ok(c)


async def test_concurrent_bundles_sharing_a_component_never_oversell(c: Container) -> None:
    await add_location(c, "wh")
    await add_product(c, "parts", ["C", "D"])
    await add_product(c, "kits", [], bundles={"KIT-1": {"C": 2, "D": 1}, "KIT-2": {"C": 3}})
    await receive(c, "C", "wh", 30)
    await receive(c, "D", "wh", 100)

    async def buy(line: Line) -> int:
        try:
            r = await c.inventory.reserve(ReserveRequest([line]), CTX)
        except InsufficientStockConflict:
            return 0
        return sum(a.quantity for a in r.allocations if a.sku == "C")

    lines = [Line("KIT-1", 1), Line("KIT-2", 1)] * 20
    used = await asyncio.gather(*(buy(line) for line in lines))
    assert sum(used) <= 30 and sum(used) >= 28  # nothing oversold, and at most 2 units idle
    assert (await c.inventory.stock("C")).totals.reserved == sum(used)
    assert (await c.inventory.stock("KIT-1")).available == min(
        (30 - sum(used)) // 2, (await c.inventory.stock("D")).available)
    await assert_audit_ok(c)


async def test_per_customer_limit_holds_under_concurrency(c: Container) -> None:
    await stocked(c, "SHOE-42", 100)
    await c.inventory.set_policy("SHOE-42", per_customer_limit=1, low_stock_threshold=None)

    async def buy(customer: str) -> bool:
        try:
            await c.inventory.reserve(ReserveRequest([Line("SHOE-42", 1)],
                                                     customer_id=customer), CTX)
            return True
        except CustomerLimitExceeded:
            return False

    outcomes = await asyncio.gather(*(buy(f"cust-{i % 5}") for i in range(40)))
    assert sum(outcomes) == 5
    assert (await c.inventory.stock("SHOE-42")).totals.reserved == 5


async def test_audit_detects_a_level_edited_behind_the_ledgers_back(c: Container) -> None:
    await stocked(c, "SKU-1", 5)
    async with c.db.write() as conn:
        await conn.execute(sa.update(store.stock_levels).values(on_hand=50))
    report = await c.inventory.audit()
    assert not report.ok and "levels" in report.problems[0]


@pytest.fixture
def c(container: Container) -> Container:
    return container


async def test_a_retried_reservation_with_the_same_key_is_the_same_reservation(
        c: Container) -> None:
    await stocked(c, "SKU-1", 10)
    keyed = replace(CTX, idempotency_key="key-1")
    first = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 2)]), keyed)
    again = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 2)]), keyed)
    other_caller = await c.inventory.reserve(ReserveRequest([Line("SKU-1", 2)]),
                                             replace(keyed, actor="someone-else"))
    assert again.id == first.id and other_caller.id != first.id
    assert (await c.inventory.stock("SKU-1")).totals.reserved == 4


async def test_oversold_units_count_what_is_held_beyond_on_hand(c: Container) -> None:
    """instock_oversold_units (what a canary rolls back on): 0 for what the model wrote; the
    units held beyond on hand once something writes around it, summed over levels."""
    from prometheus_client import REGISTRY

    await stocked(c, "ov-1", 5)
    await stocked(c, "ov-2", 5)
    await c.inventory.reserve(ReserveRequest([Line("ov-1", 5)]), CTX)  # sold out: not over
    assert await c.inventory.sample_oversold() == 0
    async with c.db.write() as conn:
        for sku, reserved, committed in (("ov-1", 7, 1), ("ov-2", 2, 0)):
            await conn.execute(sa.update(store.stock_levels).where(
                store.stock_levels.c.sku == sku).values(reserved=reserved, committed=committed))
    assert await c.inventory.sample_oversold() == 3  # ov-1: 8 held of 5; ov-2 under, not -3
    assert REGISTRY.get_sample_value("instock_oversold_units") == 3
