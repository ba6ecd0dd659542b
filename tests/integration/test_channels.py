"""Marketplace channels against a real database and a real simulator process: allocation rules
in the reserve path, ATS pushes (coalesced, in order, retried), reconcile, the order feed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.channels.events import (
    ChannelOrderCancelled,
    ChannelOrderReceived,
    MarketplaceOrderLine,
)
from instock.channels.model import Connection
from instock.inventory import model as inventory_model
from instock.inventory.errors import InsufficientStockConflict
from instock.inventory.model import Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.bus.outbox import outbox
from instock.platform.errors import NotFound, ValidationFailed
from tests.integration.helpers import CTX, add_location, add_product, receive
from tests.marketplace import API_KEY, SECRET, Simulator, simulator


async def marketplace_channel(c: Container, *, buffer: int = 0, cap: int | None = None,
                              locations: tuple[str, ...] = ("wh-a",)) -> None:
    for location in locations:
        await add_location(c, location)
    await c.inventory.save_channel(inventory_model.Channel(
        "mkt", "Marketplace", 0, list(locations), buffer, cap))


async def connect(c: Container, sim: Simulator) -> None:
    await c.channels.save_connection(Connection("mkt", "marketplace", sim.base_url, API_KEY,
                                                SECRET))


async def run_consumers(c: Container, *names: str) -> None:
    """Hand every event in the outbox to the named consumers, in commit order (what the relay
    and the bus do in a server; each consumer's inbox makes a repeat a no-op)."""
    async with c.db.read() as conn:
        envelopes = [row.envelope for row in await conn.execute(
            sa.select(outbox.c.envelope).order_by(outbox.c.created_at, outbox.c.id))]
    for name in names:
        consumer = c.consumer(name)
        for envelope in envelopes:
            await consumer.handle(envelope)


async def push(c: Container) -> int:
    """One drain of the channel's dirty listings, as the channel worker runs it."""
    async def no_pause() -> None:
        return None

    await run_consumers(c, "channel-stock")
    return await c.channels.push_pending("mkt", "test-worker", no_pause)


def pushes_of(state: dict[str, Any], sku: str) -> list[tuple[int, int]]:
    return [(p["quantity"], p["outcome"]) for p in state["pushes"] if p["sku"] == sku]


# -- allocation rules ------------------------------------------------------------------------


async def test_a_channel_is_sold_at_most_its_ats_and_shown_exactly_that(
        container: Container) -> None:
    c = container
    await marketplace_channel(c, buffer=2, cap=5)
    await add_product(c, "p", ["A"])
    await receive(c, "A", "wh-a", 10)
    assert (await c.inventory.stock("A", "mkt")).available == 5  # min(5, 10 - 2)
    assert (await c.inventory.stock("A")).available == 10
    with pytest.raises(InsufficientStockConflict) as refused:
        await c.inventory.reserve(ReserveRequest([Line("A", 6)], "mkt"), CTX)
    assert refused.value.extensions["short"] == [{"sku": "A", "requested": 6, "available": 5}]
    await c.inventory.reserve(ReserveRequest([Line("A", 5)], "mkt"), CTX)
    # 5 left, the buffer holds 2 back: the marketplace may sell 3 more, the web all 5
    assert (await c.inventory.stock("A", "mkt")).available == 3
    await c.inventory.reserve(ReserveRequest([Line("A", 3)], "mkt"), CTX)
    with pytest.raises(InsufficientStockConflict):
        await c.inventory.reserve(ReserveRequest([Line("A", 1)], "mkt"), CTX)
    await c.inventory.reserve(ReserveRequest([Line("A", 2)], "web"), CTX)


async def test_channel_rules_are_validated_and_announced(container: Container) -> None:
    c = container
    await add_location(c, "wh-a")
    with pytest.raises(ValidationFailed, match="buffer"):
        await c.inventory.save_channel(inventory_model.Channel("mkt", "m", 0, ["wh-a"], -1))
    await marketplace_channel(c, buffer=1, cap=3)
    saved = await c.inventory.channel("mkt")
    assert (saved.buffer, saved.cap) == (1, 3)
    async with c.db.read() as conn:
        changed = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "inventory.channel_changed.v1"))).scalars().all()
    assert [e["data"]["cap"] for e in changed] == [3]


# -- pushes ----------------------------------------------------------------------------------


async def test_a_burst_of_changes_is_one_push_of_the_latest_value_and_later_ones_follow(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c, buffer=1)
    await add_product(c, "p", ["A", "B"])
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        for _ in range(25):  # a burst, all committed before the worker wakes
            await receive(c, "A", "wh-a", 1)
        await receive(c, "B", "wh-a", 4)
        assert await push(c) == 2
        state = await sim.state()
        assert pushes_of(state, "A") == [(24, 200)]  # 25 - buffer, once
        assert pushes_of(state, "B") == [(3, 200)]
        assert await push(c) == 0  # nothing new: nothing sent

        await c.inventory.reserve(ReserveRequest([Line("A", 4)], "web"), CTX)
        await add_location(c, "wh-b")
        await receive(c, "A", "wh-b", 7)  # a location the channel does not sell from
        await push(c)
        await c.inventory.reserve(ReserveRequest([Line("A", 2)], "mkt"), CTX)
        await push(c)
        assert pushes_of(await sim.state(), "A") == [(24, 200), (20, 200), (18, 200)]
        listings = {r["sku"]: r for r in await c.channels.listings("mkt")}
        assert listings["A"]["pushed_quantity"] == 18
        assert listings["A"]["changes"] == listings["A"]["pushed_changes"]


async def test_pushes_are_retried_through_failures_and_rate_limits(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c)
    await add_product(c, "p", ["A"])
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        await sim.configure(fail_pushes=2, rate_limit_pushes=1, retry_after_seconds=1)
        await receive(c, "A", "wh-a", 3)
        await push(c)
        assert pushes_of(await sim.state(), "A") == [(3, 429), (3, 503), (3, 503), (3, 200)]


async def test_a_marketplace_that_stays_down_leaves_the_listing_pending_for_later(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c)
    await add_product(c, "p", ["A"])
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        await sim.configure(fail_pushes=100)
        await receive(c, "A", "wh-a", 3)
        await push(c)
        [listing] = await c.channels.listings("mkt")
        assert listing["failures"] == 1 and listing["retry_at"] is not None
        assert listing["changes"] > listing["pushed_changes"]  # still to be pushed
        assert "503" in listing["last_error"]


async def test_a_rule_change_repushes_every_listing_of_the_channel(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c)
    await add_product(c, "p", ["A", "B"])
    await receive(c, "A", "wh-a", 10)
    await receive(c, "B", "wh-a", 1)
    async with simulator(tmp_path) as sim:
        await connect(c, sim)  # a new connection learns every listing
        await push(c)
        assert (await sim.listing("A"), await sim.listing("B")) == (10, 1)
        await marketplace_channel(c, buffer=1, cap=4)
        await push(c)
        assert (await sim.listing("A"), await sim.listing("B")) == (4, 0)


# -- reconcile -------------------------------------------------------------------------------


async def test_reconcile_reports_drift_and_repairs_it_unless_dry_run(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c, buffer=1)
    await add_product(c, "p", ["A", "B", "C"])
    await receive(c, "A", "wh-a", 6)
    await receive(c, "B", "wh-a", 3)
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        await push(c)
        await sim.configure(drift={"A": 9, "GHOST": 2})  # the marketplace's own mistakes
        await receive(c, "C", "wh-a", 2)  # and a change not pushed yet

        dry = (await c.channels.reconcile("mkt", repair=False)).as_dict()
        assert dry["drift"] == [
            {"sku": "A", "ours": 5, "theirs": 9, "repaired": False},
            {"sku": "C", "ours": 1, "theirs": None, "repaired": False},
            {"sku": "GHOST", "ours": 0, "theirs": 2, "repaired": False}]
        assert await sim.listing("A") == 9  # a dry run changes nothing

        fixed = (await c.channels.reconcile("mkt")).as_dict()
        assert fixed["repaired"] == 3
        listed = {sku: v["quantity"] for sku, v in (await sim.state())["listings"].items()}
        assert listed == {"A": 5, "B": 2, "C": 1, "GHOST": 0}
        assert (await c.channels.reconcile("mkt", repair=False)).drift == []


async def test_reconcile_needs_a_connection(container: Container) -> None:
    await marketplace_channel(container)
    with pytest.raises(NotFound):
        await container.channels.reconcile("mkt")


# -- the order feed --------------------------------------------------------------------------


async def test_a_cancellation_heard_before_its_order_waits_for_it(
        container: Container, tmp_path: Path) -> None:
    """Webhooks may arrive out of order: the buyer's cancellation is carried out only after the
    order it cancels was placed, and then gives the stock back."""
    c = container
    await marketplace_channel(c)
    await add_product(c, "p", ["A"])
    await receive(c, "A", "wh-a", 3)
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        assert await c.channels.receive("mkt", "evt-2", ChannelOrderCancelled(
            channel="mkt", external_id="mo-1", marketplace_event_id="evt-2", reason="no"))
        await run_consumers(c, "marketplace-orders")
        assert await c.channels.process_orders() == 1
        [waiting] = await c.channels.order_work("mkt")
        assert waiting["state"] == "pending" and "not placed yet" in waiting["error"]

        assert await c.channels.receive("mkt", "evt-1", ChannelOrderReceived(
            channel="mkt", external_id="mo-1", marketplace_event_id="evt-1", currency="EUR",
            lines=[MarketplaceOrderLine(sku="A", quantity=2, unit_price=Decimal("90"))]))
        assert not await c.channels.receive("mkt", "evt-1", ChannelOrderReceived(
            channel="mkt", external_id="mo-1", marketplace_event_id="evt-1", currency="EUR",
            lines=[MarketplaceOrderLine(sku="A", quantity=2, unit_price=Decimal("90"))]))
        await run_consumers(c, "marketplace-orders")
        await c.channels.process_orders()
        assert (await c.inventory.stock("A")).totals.committed == 2

        later = c.channels.clock
        c.channels.clock = lambda: later() + timedelta(minutes=5)  # its retry time has come
        await c.channels.process_orders()
        work = {w["work"]: w for w in await c.channels.order_work("mkt")}
        assert work["created"]["outcome"] == "paid"
        assert work["cancelled"]["state"] == "done"
        assert (await c.inventory.stock("A")).totals.committed == 0
        assert (await sim.state())["cancellations"] == []  # the buyer's own: nothing for us


async def test_an_order_we_cannot_fill_is_cancelled_at_the_marketplace_once(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c, buffer=1)
    await add_product(c, "p", ["A"])
    await receive(c, "A", "wh-a", 2)
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        await sim.configure(drift={"A": 5})
        bought = await sim.buy("A", 2)  # the webhook goes nowhere here: we feed the event
        order_id = bought["order"]["id"]
        await c.channels.receive("mkt", bought["event_id"], ChannelOrderReceived(
            channel="mkt", external_id=order_id, marketplace_event_id=bought["event_id"],
            currency="EUR",
            lines=[MarketplaceOrderLine(sku="A", quantity=2, unit_price=Decimal("120"))]))
        await run_consumers(c, "marketplace-orders")
        assert await c.channels.process_orders() == 1
        [work] = await c.channels.order_work("mkt")
        assert work["outcome"] == "cancelled_at_marketplace"
        [cancellation] = (await sim.state())["cancellations"]
        assert (cancellation["order_id"], cancellation["by"]) == (order_id, "seller")
        assert (await c.inventory.stock("A")).totals.committed == 0


async def test_a_connection_needs_an_existing_channel_and_a_usable_url(
        container: Container) -> None:
    c = container
    with pytest.raises(NotFound):
        await c.channels.save_connection(Connection("nope", "marketplace", "http://m", "k",
                                                    SECRET))
    await marketplace_channel(c)
    for url in ("http://", "ftp://m.example", "http://m:99999"):
        with pytest.raises(ValidationFailed, match="base_url"):
            await c.channels.save_connection(Connection("mkt", "marketplace", url, "k", SECRET))
