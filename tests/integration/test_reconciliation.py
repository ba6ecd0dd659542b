"""Continuous reconciliation: stock changed behind the code's back is found by the next pass
(SQLite and PostgreSQL), reported once, repaired only by a reason-coded ledger entry (at once
when small, on approval otherwise), and the pass after a repair is clean."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client import REGISTRY

from instock.app import Container, create_app
from instock.inventory.model import Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.orders.model import OrderLine, OrderStatus
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.reconciliation.model import RepairPolicy
from instock.reconciliation.service import ReconcileSettings, ReconciliationService
from tests.integration.helpers import CTX, add_product, receive, stocked
from tests.integration.test_channels import (
    connect,
    marketplace_channel,
    push,
    run_consumers,
)
from tests.integration.test_relay import running
from tests.marketplace import simulator
from tests.support import make_settings

QUIET = ReconcileSettings(RepairPolicy(max_units=0), sweep_per_pass=0)


def reconciler(c: Container, settings: ReconcileSettings = QUIET) -> ReconciliationService:
    return ReconciliationService(c.db, c.inventory, c.catalog, c.orders, c.recommendations,
                                 c.channels, settings)


async def sql(c: Container, statement: str, **params: Any) -> None:
    async with c.db.write() as conn:
        await conn.execute(sa.text(statement), params)


async def last_entry(c: Container, sku: str) -> Any:
    return (await c.inventory.ledger(sku, 1000))[-1]


def kinds(report: Any) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["sku"]) for d in report.drifts)


async def test_a_consistent_stock_passes_clean_and_checkpoints_what_it_checked(
        container: Container) -> None:
    c = container
    await stocked(c, "R-1", 10)
    await stocked(c, "R-2", 5)
    async with c.db.read() as conn:  # the code's own writes leave no mark: no trigger fired
        assert (await conn.execute(sa.text("SELECT count(*) FROM reconcile_marks"))).scalar() == 0
    first = await reconciler(c).run_pass()
    assert (first.drifts, first.checked, first.skus) == ([], 2, 2)
    assert first.entries == 2  # every entry folded once
    second = await reconciler(c).run_pass()  # nothing changed: folds nothing new
    assert second.drifts == [] and second.entries == 0


async def test_a_level_changed_behind_the_code_is_a_drift_approved_into_a_ledger_entry(
        container: Container, tmp_path: Path, database_url: str) -> None:
    c = container
    await stocked(c, "R-3", 10)
    await reconciler(c).run_pass()
    await sql(c, "UPDATE stock_levels SET on_hand = on_hand + 50 WHERE sku = 'R-3'")
    found = await reconciler(c).run_pass()
    assert kinds(found) == [("level_mismatch", "R-3")]
    drift = found.drifts[0]
    assert (drift["expected"]["on_hand"], drift["actual"]["on_hand"]) == (10, 60)
    again = await reconciler(c).run_pass(sku="R-3")  # reported once, still open
    assert kinds(again) == [("level_mismatch", "R-3")]
    assert REGISTRY.get_sample_value("instock_reconciliation_drifts") == 1
    async with c.db.read() as conn:
        types = (await conn.execute(sa.select(outbox.c.type).where(
            outbox.c.subject == "R-3"))).scalars().all()
    assert types.count("inventory.drift_detected.v1") == 1

    app = create_app(make_settings(database_url, tmp_path))
    app.state.reconciliation = reconciler(c)
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.INVENTORY, "ops-ann")}
    customer = {"Authorization": "Bearer " + app.state.tokens.mint(Role.CUSTOMER, "eve")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        listed = (await client.get("/v1/reconciliation/drifts", headers=staff)).json()["items"]
        assert [(d["kind"], d["sku"], d["location"], d["status"]) for d in listed] == [
            ("level_mismatch", "R-3", "wh", "open")]
        assert {"id", "kind", "sku", "location", "expected", "actual", "detected_at",
                "status"} <= listed[0].keys()
        drift_id = listed[0]["id"]
        refused = await client.post(f"/v1/reconciliation/drifts/{drift_id}/approve",
                                    headers=customer, json={"reason": "mine"})
        assert refused.status_code == 403
        bad = await client.post(f"/v1/reconciliation/drifts/{drift_id}/approve",
                                headers=staff, json={})
        assert bad.status_code == 422 and "reason" in bad.text
        done = await client.post(f"/v1/reconciliation/drifts/{drift_id}/approve",
                                 headers=staff, json={"reason": "counted: the ledger is right"})
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["decided_by"]) == ("repaired", "ops-ann")
        twice = await client.post(f"/v1/reconciliation/drifts/{drift_id}/approve",
                                  headers=staff, json={"reason": "again"})
        assert twice.status_code == 409
    entry = await last_entry(c, "R-3")
    assert (entry.kind, entry.context.actor) == ("reconcile", "ops-ann")
    assert drift_id in entry.context.reason and "the ledger is right" in entry.context.reason
    assert (await c.inventory.stock("R-3")).totals.on_hand == 10
    assert (await reconciler(c).run_pass()).drifts == []
    assert REGISTRY.get_sample_value("instock_reconciliation_drifts") == 0
    assert (await c.inventory.audit()).ok


async def test_an_edited_ledger_entry_is_found_and_compensated(container: Container) -> None:
    c = container
    await stocked(c, "R-4", 10)
    await reconciler(c).run_pass()
    failures = REGISTRY.get_sample_value("instock_ledger_verification_failures_total") or 0
    await sql(c, "UPDATE ledger SET on_hand = on_hand + 5 WHERE sku = 'R-4' AND version = 1")
    found = await reconciler(c).run_pass()
    assert kinds(found) == [("ledger_altered", "R-4")]  # the level mismatch is its consequence
    assert found.drifts[0]["actual"]["versions"] == [1]
    assert REGISTRY.get_sample_value("instock_ledger_verification_failures_total") == failures + 1
    drift = (await reconciler(c).drifts())[0]
    await reconciler(c).approve(drift.id, "auditor", "edited by hand; the level is right")
    entry = await last_entry(c, "R-4")
    assert (entry.kind, entry.delta.on_hand) == ("reconcile", -5)  # compensates the edit
    assert (await c.inventory.stock("R-4")).totals.on_hand == 10
    assert (await reconciler(c).run_pass()).drifts == []  # the edit is accepted, now known


async def test_an_event_deleted_before_publication_is_a_lost_event_made_good(
        container: Container) -> None:
    c = container
    await stocked(c, "R-5", 3)
    await sql(c, "DELETE FROM outbox WHERE subject = 'R-5' AND published_at IS NULL")
    found = await reconciler(c).run_pass()
    assert ("event_lost", "R-5") in kinds(found)
    drift = next(d for d in await reconciler(c).drifts() if d.kind == "event_lost")
    await reconciler(c).approve(drift.id, "ops", "publish the current state again")
    async with c.db.read() as conn:
        events = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.subject == "R-5", outbox.c.type == "inventory.stock_changed.v1"))).all()
    assert [e.envelope["data"]["totals"]["on_hand"] for e in events] == [3]
    assert (await last_entry(c, "R-5")).kind == "reconcile"


async def test_a_small_drift_in_reserved_stock_is_repaired_at_once(container: Container) -> None:
    c = container
    await stocked(c, "R-6", 10)
    await c.inventory.reserve(ReserveRequest([Line("R-6", 2)]), CTX)
    # The reservation is released behind the code's back: its 2 units stay reserved.
    await sql(c, "UPDATE reservations SET status = 'released'")
    small = ReconcileSettings(RepairPolicy(max_units=2, max_value=Decimal(100)),
                              sweep_per_pass=100)  # the sweep finds what no trigger marks
    found = await reconciler(c, small).run_pass()
    assert kinds(found) == [("reserved_mismatch", "R-6")]
    assert found.repaired == 1
    entry = await last_entry(c, "R-6")
    assert (entry.kind, entry.context.actor, entry.delta.reserved) == ("reconcile",
                                                                        "reconciler", -2)
    assert (await c.inventory.stock("R-6")).available == 10
    [drift] = await reconciler(c).drifts(None)
    assert (drift.status.value, drift.decided_by) == ("repaired", "reconciler")
    assert (await reconciler(c, small).run_pass()).drifts == []


async def test_a_large_drift_waits_and_can_be_rejected(container: Container) -> None:
    c = container
    await stocked(c, "R-7", 10)
    await reconciler(c).run_pass()
    await sql(c, "UPDATE stock_levels SET on_hand = 0 WHERE sku = 'R-7'")
    small = replace(QUIET, policy=RepairPolicy(max_units=2, max_value=Decimal(100)))
    found = await reconciler(c, small).run_pass()
    assert found.repaired == 0  # 10 units: a person decides
    [drift] = await reconciler(c).drifts()
    rejected = await reconciler(c).reject(drift.id, "ops", "stock was stolen; police report")
    assert (rejected.status.value, rejected.note) == ("rejected", "stock was stolen; police report")
    assert (await c.inventory.stock("R-7")).totals.on_hand == 0  # left as it is


async def test_two_reconcilers_running_record_a_drift_once(container: Container) -> None:
    c = container
    await stocked(c, "R-8", 10)
    fast = replace(QUIET, interval_seconds=0.05)
    first, second = reconciler(c, fast), reconciler(c, fast)
    async with running(first.run(), second.run()):
        await asyncio.sleep(0.3)
        await sql(c, "UPDATE stock_levels SET on_hand = 99 WHERE sku = 'R-8'")
        for _ in range(100):
            if await reconciler(c).drifts():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # passes go on: the one leader records no second drift
    assert [(d.kind, d.sku) for d in await reconciler(c).drifts()] == [("level_mismatch",
                                                                        "R-8")]
    assert (first.last_pass is None) != (second.last_pass is None)  # one led, one stood by


NO_GRACE = replace(QUIET, grace_seconds=0)


async def test_committed_stock_of_a_cancelled_order_is_found_once_it_lasts_and_given_back(
        container: Container) -> None:
    c = container
    await stocked(c, "R-9", 5)
    kept = await c.orders.place_marketplace_order("web", "m-9a", [OrderLine("R-9", 1, Decimal(
        "10"))], "EUR")
    stuck = await c.orders.place_marketplace_order("web", "m-9b", [OrderLine("R-9", 2, Decimal(
        "10"))], "EUR")
    # Committed through the API by an order system of its own: no order of ours holds it.
    theirs = await c.inventory.reserve(ReserveRequest([Line("R-9", 1)]), CTX)
    await c.inventory.commit(theirs.id, CTX)
    assert (await reconciler(c, NO_GRACE).run_pass()).drifts == []
    # An order cancelled by a hand in the database: its units stay committed, never sold.
    await sql(c, "UPDATE orders SET status = 'cancelled' WHERE id = :id", id=stuck.id)
    [reservation_id] = stuck.reservation_ids
    patient = reconciler(c, replace(NO_GRACE, grace_seconds=3600))
    seen = await patient.run_pass(sku="R-9")
    assert seen.drifts == []  # a saga may be between cancelling the order and the stock
    assert [(d["kind"], d["expected"]["reservation"]) for d in seen.suspected] == [
        ("orphan_commitment", reservation_id)]
    found = await reconciler(c, NO_GRACE).run_pass(sku="R-9")
    assert [(d["kind"], d["sku"], d["actual"]["committed"], d["actual"]["order_status"])
            for d in found.drifts] == [("orphan_commitment", "R-9", 2, "cancelled")]
    [drift] = await reconciler(c).drifts()
    await reconciler(c).approve(drift.id, "ops-kim", "cancelled by hand; give it back")
    entry = await last_entry(c, "R-9")
    assert (entry.kind, entry.context.actor, entry.delta.committed) == ("cancel", "ops-kim", -2)
    assert drift.id in entry.context.reason
    view = await c.inventory.stock("R-9")
    assert (view.totals.committed, view.available) == (2, 3)  # the others' units stay
    assert kept.status is OrderStatus.PAID
    assert (await reconciler(c, NO_GRACE).run_pass(sku="R-9")).drifts == []


async def test_a_paid_order_whose_stock_was_let_go_is_a_drift_for_its_order(
        container: Container, tmp_path: Path, database_url: str) -> None:
    c = container
    await stocked(c, "R-10", 3)
    order = await c.orders.place_marketplace_order("web", "m-10", [OrderLine("R-10", 2, Decimal(
        "10"))], "EUR")
    assert (await reconciler(c, NO_GRACE).run_pass()).drifts == []  # paid and committed
    await c.inventory.cancel(order.reservation_ids[0], CTX)  # behind the order's back
    found = await reconciler(c, NO_GRACE).run_pass()
    assert [(d["kind"], d["sku"], d["expected"]["order"], d["actual"]["status"])
            for d in found.drifts] == [("order_unstocked", "R-10", order.id, "cancelled")]
    again = await reconciler(c, NO_GRACE).run_pass()  # checked again though nothing changed
    assert [d["kind"] for d in again.drifts] == ["order_unstocked"]
    app = create_app(make_settings(database_url, tmp_path))
    app.state.reconciliation = reconciler(c)
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.INVENTORY, "ops")}
    [drift] = await reconciler(c).drifts()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        refused = await client.post(f"/v1/reconciliation/drifts/{drift.id}/approve",
                                    headers=staff, json={"reason": "fix it"})
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("drift-needs-order-action")
        assert order.id in refused.json()["detail"]
        rejected = await client.post(f"/v1/reconciliation/drifts/{drift.id}/reject",
                                     headers=staff, json={"reason": "order refunded by hand"})
        assert rejected.status_code == 200
    assert await reconciler(c).drifts() == []


async def test_recommendations_view_left_behind_is_found_once_the_stock_stands_still(
        container: Container) -> None:
    c = container
    await stocked(c, "R-11", 10)
    await run_consumers(c, "recs-availability")  # the view hears the stock: the same
    assert (await reconciler(c, NO_GRACE).run_pass()).drifts == []
    # A policy moves the SKU's version, not what it has available: the view is not stale.
    await c.inventory.set_policy("R-11", per_customer_limit=2, low_stock_threshold=None)
    await run_consumers(c, "recs-availability")
    assert (await reconciler(c, NO_GRACE).run_pass()).drifts == []
    await c.inventory.reserve(ReserveRequest([Line("R-11", 4)]), CTX)  # the view misses it
    patient = reconciler(c, replace(NO_GRACE, grace_seconds=3600))
    assert [d["kind"] for d in (await patient.run_pass()).suspected] == ["recs_stock_stale"]
    found = await reconciler(c, NO_GRACE).run_pass()
    [stale] = found.drifts
    assert (stale["kind"], stale["expected"]["available"], stale["actual"]["available"]) == (
        "recs_stock_stale", 6, 10)
    [drift] = await reconciler(c).drifts()
    await reconciler(c).approve(drift.id, "ops", "publish it again")
    assert (await last_entry(c, "R-11")).kind == "reconcile"  # an entry of nothing, who and why
    await run_consumers(c, "recs-availability")  # the republished state reaches the view
    assert (await c.recommendations.stock_view({"R-11"}))["R-11"][1] == 6
    assert (await reconciler(c, NO_GRACE).run_pass()).drifts == []


async def test_listings_and_the_marketplace_are_checked_against_what_was_pushed(
        container: Container, tmp_path: Path) -> None:
    c = container
    await marketplace_channel(c)
    await add_product(c, "p", ["L-1", "L-2"])
    await receive(c, "L-1", "wh-a", 6)
    await receive(c, "L-2", "wh-a", 3)
    every_pass = replace(NO_GRACE, marketplace_every_seconds=0)
    async with simulator(tmp_path) as sim:
        await connect(c, sim)
        await push(c)
        assert (await reconciler(c, every_pass).run_pass()).drifts == []
        await sim.configure(drift={"L-1": 9})  # someone edited the listing on the marketplace
        await receive(c, "L-2", "wh-a", 1)  # a change the channel's consumer never hears of
        found = await reconciler(c, every_pass).run_pass()
        assert sorted((d["kind"], d["sku"], d["expected"]["quantity"], d["actual"]["quantity"])
                      for d in found.drifts) == [("listing_stale", "L-2", 4, 3),
                                                 ("marketplace_mismatch", "L-1", 6, 9)]
        for drift in await reconciler(c).drifts():
            await reconciler(c).approve(drift.id, "ops", "tell the marketplace again")
        await push(c)
        listed = {sku: v["quantity"] for sku, v in (await sim.state())["listings"].items()}
        assert listed == {"L-1": 6, "L-2": 4}
        assert (await reconciler(c, every_pass).run_pass()).drifts == []
