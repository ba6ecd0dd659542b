"""Live stock without gaps: kits get their own stock events when a component moves their count,
an expiring lot raises the events its availability change implies, and every bump of a SKU's
version is published (each SKU's sequence runs 1..n)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from instock.app import Container, build, live_hub
from instock.inventory.model import Adjustment, AdjustmentKind, Channel, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.live.events import Update
from instock.live.service import Connection
from instock.platform.bus.memory import MemoryBus
from instock.platform.bus.schemas import validate
from instock.platform.db import utcnow
from tests.integration.helpers import CTX, add_location, add_product, receive
from tests.integration.test_relay import running
from tests.integration.test_stock_events import of_type, outbox_rows
from tests.support import make_settings


@pytest.fixture
def c(container: Container) -> Container:
    return container


async def kit_of(c: Container, c_units: int, d_units: int) -> None:
    """KIT = 1 C + 2 D, stocked at `wh`."""
    await add_location(c, "wh")
    await add_product(c, "kit", ["C", "D"], bundles={"KIT": {"C": 1, "D": 2}})
    await receive(c, "C", "wh", c_units)
    await receive(c, "D", "wh", d_units)


def kit_events(rows: list[Any]) -> list[tuple[str, int, int]]:
    return [(e["type"], e["sequence"], e["data"]["available"])
            for e in of_type(rows, "inventory.") if e["subject"] == "KIT"]


async def next_state(connection: Connection, sku: str, timeout: float = 10.0) -> Update:
    async def wait() -> Update:
        while True:
            for update in await connection.next(heartbeat=1.0):
                if update.key == sku:
                    return update

    return await asyncio.wait_for(wait(), timeout)


async def test_a_kit_subscriber_sees_a_component_reservation_live(c: Container) -> None:
    await kit_of(c, 5, 6)  # 3 kits
    hub = live_hub(c)
    async with running(hub.run(), c.relay().run()):
        await asyncio.sleep(0.2)  # the hub is listening before the changes commit
        connection = Connection()
        await hub.watch(connection, ["KIT"])
        seeded = await next_state(connection, "KIT")
        assert seeded.body["available"] == 3
        await c.inventory.reserve(ReserveRequest([Line("D", 3)]), CTX)  # D 6 -> 3: 1 kit
        update = await next_state(connection, "KIT")
        assert update.version is not None and seeded.version is not None
        assert update.version > seeded.version
        assert (update.body["available"], update.body["sold_out"]) == (1, False)
        held = await c.inventory.reserve(ReserveRequest([Line("C", 5)]), CTX)  # C 5 -> 0
        update = await next_state(connection, "KIT")
        assert (update.body["available"], update.body["sold_out"]) == (0, True)
        await c.inventory.release(held.id, CTX)  # C back to 5: 1 kit again
        update = await next_state(connection, "KIT")
        assert (update.body["available"], update.body["sold_out"]) == (1, False)
        hub.close(connection)
    view = await c.inventory.stock("KIT")
    assert (view.version, view.available) == (update.version, 1)


async def test_kits_get_events_for_every_change_that_moves_their_count_and_only_those(
        c: Container) -> None:
    await kit_of(c, 5, 6)  # C=5, D=6: 0 -> 3 kits over the two receipts
    await receive(c, "C", "wh", 10)  # C is spare: the kit stays at 3, no event
    held = await c.inventory.reserve(ReserveRequest([Line("KIT", 2)]), CTX)  # D 6 -> 2: 1 kit
    await c.inventory.commit(held.id, CTX)  # reserved -> committed: still 1, no event
    await c.inventory.adjust(Adjustment("D", "wh", AdjustmentKind.DAMAGE, 2), CTX)  # sold out
    short = await c.inventory.reserve(ReserveRequest([Line("C", 1)], ttl_seconds=1), CTX)
    await c.inventory.adjust(Adjustment("D", "wh", AdjustmentKind.RECEIVE, 4), CTX)  # 2 kits
    later = utcnow() + timedelta(seconds=5)
    c.inventory.clock = lambda: later
    await c.inventory.sweep()  # the hold on C expires: C is spare, the kit stays at 2
    rows = await outbox_rows(c)
    assert kit_events(rows) == [
        # D's receipt makes the first kits (C alone made none).
        ("inventory.stock_changed.v1", 1, 3), ("inventory.back_in_stock.v1", 1, 3),
        ("inventory.stock_changed.v1", 2, 1),
        ("inventory.stock_changed.v1", 3, 0), ("inventory.sold_out.v1", 3, 0),
        ("inventory.stock_changed.v1", 4, 2), ("inventory.back_in_stock.v1", 4, 2)]
    changed = [e for e in of_type(rows, "inventory.stock_changed") if e["subject"] == "KIT"]
    for doc in changed:
        validate(doc)
        assert doc["data"]["location"] == "*"
        assert doc["data"]["version"] == doc["data"]["sku_version"] == doc["sequence"]
    assert [d["data"]["reason"] for d in changed] == ["receive", "reserve", "damage", "receive"]
    view = await c.inventory.stock("KIT")
    assert (view.version, view.available) == (4, 2)
    assert short.id  # the expired hold above really was one


async def test_a_lot_passing_its_expiry_raises_stock_changed_and_sold_out(c: Container) -> None:
    today = utcnow().date()
    await add_location(c, "wh")
    await add_product(c, "fresh", ["F", "G"], bundles={"PACK": {"F": 2, "G": 1}})
    await receive(c, "F", "wh", 4, "L1", today + timedelta(days=2))
    await receive(c, "G", "wh", 3)
    await c.inventory.set_policy("F", per_customer_limit=None, low_stock_threshold=None)
    assert (await c.inventory.stock("PACK")).available == 2
    version = (await c.inventory.stock("F")).version
    # Midnight of the expiry date passes (and a little more: the sweeper runs every second).
    expiry = utcnow() + timedelta(days=2)
    c.inventory.clock = lambda: expiry
    # Reads hide the lot at once; the sweeper's write is what tells the world.
    assert (await c.inventory.stock("F")).available == 0
    assert (await c.inventory.sweep())["skus_with_expired_lots"] == 1
    rows = await outbox_rows(c)
    after = [(e["type"], e["sequence"]) for e in of_type(rows, "inventory.")
             if e["subject"] == "F" and e["sequence"] > version]
    assert after == [("inventory.stock_changed.v1", version + 1),
                     ("inventory.sold_out.v1", version + 1)]
    changed = next(e for e in of_type(rows, "inventory.stock_changed")
                   if e["subject"] == "F" and e["sequence"] == version + 1)
    assert changed["data"]["reason"] == "lot_expired"
    assert (changed["data"]["totals"]["available"], changed["data"]["unsellable"]) == (0, 4)
    # The kit made of it sells out in the same transaction, at its own next version.
    pack = await c.inventory.stock("PACK")
    assert pack.available == 0
    assert [(e["type"], e["sequence"], e["data"]["available"])
            for e in of_type(rows, "inventory.") if e["subject"] == "PACK"][-2:] == [
        ("inventory.stock_changed.v1", pack.version, 0),
        ("inventory.sold_out.v1", pack.version, 0)]
    # Swept once: the next sweeps find nothing and say nothing.
    assert (await c.inventory.sweep())["skus_with_expired_lots"] == 0
    assert len(await outbox_rows(c)) == len(rows)


async def test_every_version_bump_is_published_so_sequences_have_no_gaps(c: Container) -> None:
    today = utcnow().date()
    await add_location(c, "wh")
    await add_location(c, "store")
    await add_product(c, "kit", ["C", "D"], bundles={"KIT": {"C": 1, "D": 2}})
    await c.inventory.set_policy("C", per_customer_limit=2, low_stock_threshold=None)
    await receive(c, "C", "wh", 6)
    await receive(c, "D", "wh", 8, "L1", today + timedelta(days=1))
    await c.inventory.set_policy("KIT", per_customer_limit=None, low_stock_threshold=2)
    held = await c.inventory.reserve(ReserveRequest([Line("KIT", 2)], customer_id="u1"), CTX)
    await c.inventory.set_policy("C", per_customer_limit=3, low_stock_threshold=1)
    await c.inventory.adjust(Adjustment("C", "wh", AdjustmentKind.TRANSFER, 1,
                                        to_location="store"), CTX)
    await c.inventory.release(held.id, CTX)
    await c.inventory.reserve(ReserveRequest([Line("D", 1)], ttl_seconds=1), CTX)
    await c.inventory.set_policy("D", per_customer_limit=None, low_stock_threshold=5)
    later = utcnow() + timedelta(days=1, seconds=5)  # the hold and the lot both expire
    c.inventory.clock = lambda: later
    await c.inventory.sweep()
    await c.inventory.set_policy("KIT", per_customer_limit=1, low_stock_threshold=None)
    rows = await outbox_rows(c)
    sequences: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        if row.type.startswith("inventory.") and row.sequence is not None:
            sequences[row.subject].add(row.sequence)
    for sku in ("C", "D", "KIT"):
        version = (await c.inventory.stock(sku)).version
        assert sorted(sequences[sku]) == list(range(1, version + 1)), sku
    assert {row.type for row in rows} >= {"inventory.policy_changed.v1"}
    policy = [e for e in of_type(rows, "inventory.policy_changed") if e["subject"] == "C"]
    assert [(e["sequence"], e["data"]["per_customer_limit"], e["data"]["low_stock_threshold"])
            for e in policy] == [(1, 2, None), (4, 3, 1)]  # receive 2, reserve 3
    for row in rows:
        validate(row.envelope)


async def test_a_lot_too_short_dated_for_a_channel_publishes_once_that_day(c: Container) -> None:
    today = utcnow().date()
    await add_location(c, "wh")
    await add_product(c, "cream", ["H"])
    await c.inventory.save_channel(Channel("pharmacy", "Pharmacy", 7, ["wh"]))
    await receive(c, "H", "wh", 5, "L1", today + timedelta(days=10))
    assert (await c.inventory.sweep())["shelf_life_notices"] == 0  # 10 days left: it qualifies
    version = (await c.inventory.stock("H")).version
    assert (await c.inventory.stock("H", "pharmacy")).available == 5
    later = utcnow() + timedelta(days=4)  # 6 days left: under the pharmacy's 7
    c.inventory.clock = lambda: later
    assert (await c.inventory.stock("H", "pharmacy")).available == 0
    assert (await c.inventory.sweep())["shelf_life_notices"] == 1
    rows = await outbox_rows(c)
    [changed] = [e for e in of_type(rows, "inventory.stock_changed") if e["sequence"] > version]
    assert (changed["subject"], changed["sequence"]) == ("H", version + 1)
    assert changed["data"]["reason"] == "shelf_life"
    assert changed["data"]["totals"]["available"] == 5  # any channel: still in date
    # Told once: not by this sweeper again, nor by another process's (which knows nothing).
    assert (await c.inventory.sweep())["shelf_life_notices"] == 0
    c.inventory._noticed.clear()
    assert (await c.inventory.sweep())["shelf_life_notices"] == 0
    assert len(await outbox_rows(c)) == len(rows)
    [entry] = [e for e in await c.inventory.ledger("H", 10) if e.kind == "shelf_life"]
    assert entry.delta.is_zero and entry.lot == "L1" and "pharmacy" in entry.context.reason
    assert (await c.inventory.audit()).ok


async def test_two_processes_changing_different_components_keep_the_kit_in_order(
        c: Container, database_url: str, tmp_path: Path) -> None:
    """Two services (as two processes would) reserve different components of one kit at once:
    the kit's row lock orders them, so its events run 1..n and, as only holds are taken, its
    count never goes up between them, ending on the truth (no transaction counted the other
    component from before a change it did not wait for)."""
    await add_location(c, "wh")
    await add_product(c, "kit", ["C", "D"], bundles={"KIT": {"C": 1, "D": 1}})
    await receive(c, "C", "wh", 400)
    await receive(c, "D", "wh", 400)
    other = build(make_settings(database_url, tmp_path / "other"))

    async def buyer(i: int) -> None:  # one after the other, alternating components
        service = (c if i % 2 else other).inventory
        for n in range(10):
            await service.reserve(ReserveRequest([Line("C" if (i + n) % 2 else "D", 1)]), CTX)

    try:
        await asyncio.gather(*(buyer(i) for i in range(8)))
    finally:
        await other.close()
    changed = [e for e in of_type(await outbox_rows(c), "inventory.stock_changed")
               if e["subject"] == "KIT"]
    sequences = [e["sequence"] for e in changed]
    assert sorted(sequences) == list(range(1, len(sequences) + 1))
    counts = [e["data"]["available"] for e in sorted(changed, key=lambda e: e["sequence"])]
    assert counts[0] == 400 and counts == sorted(counts, reverse=True)
    truth = await c.inventory.stock("KIT")
    assert (truth.version, truth.available) == (max(sequences), counts[-1])


async def test_a_listener_that_missed_changes_sends_every_watched_sku_afresh(
        c: Container) -> None:
    # A broker reconnect or a lagging listener loses events for this process: its clients must
    # still end on the true count. Here the listener can hold one message, and A's change and
    # B's arrive together, so A's is dropped; the hub is told of the gap and re-reads A.
    await add_location(c, "wh")
    await add_product(c, "p", ["A", "B"])
    hub = live_hub(c)
    hub.bus = bus = MemoryBus(listen_buffer=1)
    connection = Connection()
    async with running(hub.run()):
        await asyncio.sleep(0.1)  # listening
        await hub.watch(connection, ["A"])
        assert (await next_state(connection, "A")).body["available"] == 0
        await receive(c, "A", "wh", 5)
        await receive(c, "B", "wh", 1)
        await bus.publish(of_type(await outbox_rows(c), "inventory.stock_changed"))
        assert (await next_state(connection, "A")).body["available"] == 5
    await bus.close()
