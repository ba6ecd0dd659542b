"""Inventory analytics (issue 21) on SQLite and PostgreSQL: the real consumer turns the outbox's
stock events into hourly facts by folding the ledger; handling them again changes nothing; a
rebuild from the ledger and the behaviour log gives the same facts; the SKU's measures answer
over HTTP; PostgreSQL keeps the facts in monthly partitions and drops old months."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from instock.analytics import store
from instock.app import Container, create_app
from instock.catalog.model import Product, Variant
from instock.inventory.errors import InsufficientStockConflict
from instock.inventory.model import Channel, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from tests.integration.helpers import (
    CTX,
    add_location,
    add_product,
    receive,
    stocked,
    write_history,
)
from tests.support import INSTOCK, backends, instock_env


async def consume_outbox(c: Container) -> None:
    """Hand every event the outbox holds to the analytics consumer, as the bus would: in bursts
    of many to one transaction."""
    async with c.db.read() as conn:
        envelopes = list((await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))).scalars())
    consumer = c.consumer("analytics")
    for start in range(0, len(envelopes), 7):
        await consumer.handle_batch(envelopes[start:start + 7])


async def all_facts(c: Container) -> dict[tuple[str, str, str, datetime], dict[str, int]]:
    async with c.db.read() as conn:
        rows = await conn.execute(sa.select(store.facts))
        return {(r.sku, r.channel, r.location, r.hour): {
            k: v for k, v in r._mapping.items() if k in store.COUNTERS and v}
            for r in rows}


async def sell(c: Container, sku: str, quantity: int, channel: str = "web") -> None:
    held = await c.inventory.reserve(ReserveRequest([Line(sku, quantity)], channel=channel),
                                     CTX)
    await c.inventory.commit(held.id, CTX)


@pytest.fixture
async def http(container: Container) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(container.settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client


async def test_sales_become_facts_once_and_a_rebuild_gives_the_same(container: Container) -> None:
    c = container
    await stocked(c, "tee-m", 5)
    await c.inventory.save_channel(Channel("app", "the app", 0, ["wh"]))
    await sell(c, "tee-m", 2, "web")
    await sell(c, "tee-m", 1, "app")
    held = await c.inventory.reserve(ReserveRequest([Line("tee-m", 2)], channel="web"), CTX)
    await c.inventory.release(held.id, CTX)
    await sell(c, "tee-m", 2, "web")  # sold out
    await c.recommendations.record([{"kind": "view", "session_id": "s1", "product_id": "p-tee-m",
                                     "sku": "tee-m"}] * 3, None)
    await consume_outbox(c)
    live = await all_facts(c)
    by_counter: dict[str, int] = {}
    for (sku, channel, location, _), counts in live.items():
        assert sku == "tee-m"
        for name, value in counts.items():
            by_counter[f"{name}:{channel}:{location}"] = (
                by_counter.get(f"{name}:{channel}:{location}", 0) + value)
    assert {k: v for k, v in by_counter.items() if not k.startswith("minutes")} == {
        "restocked::wh": 5, "reserved:web:wh": 6, "sold:web:wh": 4, "reserved:app:wh": 1,
        "sold:app:wh": 1, "released:web:wh": 2, "views::": 3}
    async with c.db.read() as conn:
        periods = await store.periods_of(conn, "tee-m", datetime(2000, 1, 1, tzinfo=UTC))
    # Out while the last two were held, back when they were released, then sold out.
    assert len(periods) == 2 and all(p.end is not None for p in periods)

    await consume_outbox(c)  # every event again: the bus may deliver twice
    assert await all_facts(c) == live

    report = await c.analytics.rebuild(datetime.now(UTC) - timedelta(days=1))
    assert report["skus"] == 1 and report["views_and_carts"] == 3
    assert report["entries"] == 9  # receive + 3 reservations + 2 commits... per the ledger
    assert await all_facts(c) == live


async def test_the_sku_s_measures_over_http(container: Container,
                                            http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    app, client = http
    await stocked(c, "cap", 10)
    await sell(c, "cap", 3)
    await consume_outbox(c)
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.MERCHANDISER, "m")}
    answer = await client.get("/v1/analytics/skus/cap", headers=staff)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    # In stock for minutes: measured over one day, so 3 a day; 7 left last 7/3 days.
    assert (body["sold_7d"], body["velocity_7d"], body["velocity_28d"]) == (3, 3.0, 3.0)
    assert body["available"] == 7
    assert body["days_of_cover"] == pytest.approx(7 / 3, abs=1e-3)
    assert body["sell_through_28d"] == 0.3
    assert body["in_stock_share_28d"] < 0.01 and body["in_stock_share_7d"] < 0.01  # seconds
    assert body["stockout_on"] == (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    drops = (await client.get("/v1/analytics/drops/cap", headers=staff)).json()["drops"]
    assert [(d["units"], d["sold_out_at"]) for d in drops] == [(10, None)]
    assert drops[0]["minutes_to"]["25"] is not None and drops[0]["minutes_to"]["50"] is None
    product = (await client.get("/v1/analytics/products/p-cap", headers=staff)).json()
    assert (product["sold_28d"], product["available"], product["size_curve"]) == (
        3, 7, {"cap": 1.0})
    assert product["skus"][0]["last_drop"]["units"] == 10
    assert (await client.get("/v1/analytics/products/nope", headers=staff)).status_code == 404
    unknown = await client.get("/v1/analytics/skus/nothing", headers=staff)
    assert unknown.status_code == 404
    customer = {"Authorization": "Bearer " + app.state.tokens.mint(Role.CUSTOMER, "c")}
    assert (await client.get("/v1/analytics/skus/cap", headers=customer)).status_code == 403


async def test_postgresql_keeps_facts_in_monthly_partitions(container: Container) -> None:
    c = container
    if not c.db.url.drivername.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    now = datetime(2026, 12, 6, tzinfo=UTC)
    kept = await c.analytics.keep_months(2, now)
    assert kept["created"] == ["analytics_facts_y2026m12", "analytics_facts_y2027m01",
                               "analytics_facts_y2027m02"]
    await stocked(c, "old", 1)
    await consume_outbox(c)
    async with c.db.write() as conn:  # a month long past, as a rebuild of old history makes
        await c.analytics.partitions.ensure(conn, [datetime(2026, 8, 1, tzinfo=UTC)])
        await conn.execute(sa.insert(store.facts).values(
            sku="old", channel="", location="wh", hour=datetime(2026, 8, 3, tzinfo=UTC),
            sold=4))
        months = await store.existing_months(conn)
    assert datetime(2026, 8, 1, tzinfo=UTC) in months
    kept = await c.analytics.keep_months(2, now)
    assert kept["dropped"] == ["analytics_facts_y2026m08"]
    async with c.db.read() as conn:
        assert await store.sums(conn, "old", datetime(2026, 1, 1, tzinfo=UTC)) == {
            **{name: 0 for name in store.COUNTERS}, "restocked": 1}


async def test_concurrent_creators_of_a_month_s_partition_all_succeed(
        container: Container) -> None:
    """Two workers' upkeep (or consumers) at a month's start: neither fails "already exists"
    (found by the chaos test: `CREATE TABLE IF NOT EXISTS` is not safe against a race)."""
    c = container
    if not c.db.url.drivername.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    month = datetime(2031, 3, 1, tzinfo=UTC)

    async def create() -> list[str]:
        async with c.db.write() as conn:
            created = await store.Partitions().ensure(conn, [month])
            await asyncio.sleep(0.05)  # the transaction stays open: a racer would collide
            return created

    results = await asyncio.gather(*(create() for _ in range(6)))
    assert all(result == ["analytics_facts_y2031m03"] for result in results)
    async with c.db.read() as conn:
        assert month in await store.existing_months(conn)


# The commands run as processes: one backend (PostgreSQL when there is one) bounds their time.
ONE_BACKEND = pytest.mark.parametrize("database_url", backends()[-1:], indirect=True)


@ONE_BACKEND
async def test_the_rebuild_command(container: Container, database_url: str,
                                   tmp_path: Path) -> None:
    c = container
    await stocked(c, "beanie", 4)
    await sell(c, "beanie", 1)
    result = await asyncio.to_thread(
        subprocess.run, [INSTOCK, "analytics", "rebuild", "--since", "2d", "--json"],
        env=instock_env(database_url, tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["skus"], report["entries"]) == (1, 3)
    async with c.db.read() as conn:
        assert (await store.sums(conn, "beanie", datetime.now(UTC) - timedelta(days=1)))[
            "sold"] == 1
    wrong = await asyncio.to_thread(
        subprocess.run, [INSTOCK, "analytics", "rebuild", "--since", "last week"],
        env=instock_env(database_url, tmp_path), capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--since" in wrong.stderr


def history(sku_days: int = 56) -> tuple[datetime, list[tuple[datetime, str, dict[str, int],
                                                             str | None]]]:
    """56 days to 06:00 today: 40 units on day 0 at 08:00, 2 sold each day at noon, sold out
    on day 19, 100 more on day 25, sold on until yesterday. Returns (now, moves)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = [today - timedelta(days=sku_days - 1 - k) for k in range(sku_days)]
    moves: list[tuple[datetime, str, dict[str, int], str | None]] = [
        (day[0] + timedelta(hours=8), "receive", {"on_hand": 40}, None),
        (day[25] + timedelta(hours=8), "receive", {"on_hand": 100}, None)]
    for k in [*range(20), *range(25, sku_days - 1)]:
        noon = day[k] + timedelta(hours=12)
        moves += [(noon, "reserve", {"reserved": 2}, "web"),
                  (noon + timedelta(minutes=1), "commit", {"reserved": -2, "committed": 2},
                   "web")]
    return today + timedelta(hours=6), moves


@ONE_BACKEND
async def test_a_report_on_eight_weeks_with_a_stock_out(container: Container, database_url: str,
                                                        tmp_path: Path) -> None:
    c = container
    now, moves = history()
    await write_history(c, "hood-l", moves)
    await c.analytics.rebuild(now - timedelta(days=60))
    report = await c.analytics.report("hood-l", now=now)
    # 2 a day whether the window holds the stock-out or not: days out of stock are left out.
    assert (report["sold_28d"], report["velocity_28d"], report["velocity_7d"]) == (56, 2.0, 2.0)
    assert (report["available"], report["days_of_cover"]) == (40, 20.0)
    assert report["stockout_on"] == (now + timedelta(days=20)).date()
    shares = [d["in_stock_share"] for d in report["history"]]
    assert len(shares) == 56 and shares[19] == 0.5 and shares[20:25] == [0.0] * 5
    assert shares[25] == pytest.approx(16 / 24, abs=1e-3) and shares[26:] == [1.0] * 30
    assert report["forecast"]["daily_mean"] == pytest.approx(2.0, abs=0.2)
    assert len(report["forecast"]["days"]) == 14
    assert 14 < report["reorder"]["reorder_point"] < 25  # a week's demand and safety stock
    assert report["reorder"]["order_quantity"] == 0  # 40 on hand cover two weeks and more
    drops = await c.analytics.drops("hood-l")
    # The first drop: 40 units, 2 a day from 08:00 on day 0, a quarter gone at noon on day 4.
    assert drops[1]["units"] == 40 and drops[1]["minutes_to"] == {
        "25": 4 * 1440 + 240.0, "50": 9 * 1440 + 240.0, "75": 14 * 1440 + 240.0,
        "100": 19 * 1440 + 240.0}
    assert drops[0]["units"] == 100 and drops[0]["sold_out_at"] is None
    png = tmp_path / "hood.png"
    drawn = await asyncio.to_thread(
        subprocess.run, [INSTOCK, "analytics", "report", "--sku", "hood-l", "--png", str(png),
                         "--json"],
        env=instock_env(database_url, tmp_path), capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert json.loads(drawn.stdout)["sku"] == "hood-l" and png.stat().st_size > 10_000


async def test_reorder_low_cover_and_overstock_lists(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    now, _ = history()
    start = now - timedelta(days=28, hours=6)  # midnight, 28 days ago
    daily = [start + timedelta(days=k, hours=12) for k in range(28)]

    def selling(per_day: int, received: int, days: list[datetime]) -> list[Any]:
        moves: list[Any] = [(start, "receive", {"on_hand": received}, None)]
        for noon in days:
            moves += [(noon, "reserve", {"reserved": per_day}, "web"),
                      (noon + timedelta(minutes=1), "commit",
                       {"reserved": -per_day, "committed": per_day}, "web")]
        return moves

    await write_history(c, "fast", selling(2, 66, daily))  # 10 left: 5 days at 2 a day
    await write_history(c, "fast-ordered", [*selling(2, 66, daily),
                                            (start, "expect", {"incoming": 30}, None)])
    await write_history(c, "slow", selling(1, 501, daily[:1]))  # 500 left, 1 sold in 28 days
    await write_history(c, "idle", selling(1, 20, []))
    await c.analytics.rebuild(start - timedelta(days=1))
    lists = await c.analytics.reorder(lead_time_days=7, review_days=7, service_level=0.95,
                                      overstock_days=120, now=now)
    # fast: reorder point 2*7 + 1.645*sqrt(2)*sqrt(7) = 20.15; order up to
    # 2*14 + 1.645*sqrt(2)*sqrt(14) = 36.7 from a position of 10: 27 units.
    assert [(r["sku"], r["reorder_point"], r["order_quantity"]) for r in lists["reorder"]] == [
        ("fast", 20.15, 27)]
    assert [r["sku"] for r in lists["low_cover"]] == ["fast", "fast-ordered"]
    assert lists["low_cover"][1]["incoming"] == 30  # on order: no reorder, still low cover
    assert [r["sku"] for r in lists["overstock"]] == ["idle", "slow"]
    app, client = http
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.INVENTORY, "i")}
    answer = await client.get("/v1/analytics/reorder?lead_time_days=3", headers=staff)
    assert answer.status_code == 200 and answer.json()["lead_time_days"] == 3
    wrong = await client.get("/v1/analytics/reorder?service_level=2", headers=staff)
    assert wrong.status_code == 422
    assert "service_level" in wrong.text


async def published(c: Container, event_type: str) -> list[dict[str, Any]]:
    async with c.db.read() as conn:
        envelopes = (await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at, outbox.c.id))).scalars()
        return [e["data"] for e in envelopes if e["type"] == event_type]


async def test_a_stockout_before_the_next_receipt_is_published_once(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    now, _ = history()
    start = now - timedelta(days=28, hours=6)
    moves: list[Any] = [(start, "receive", {"on_hand": 66}, None)]
    for k in range(28):  # 2 a day for 28 days: 10 left, out in 5 days
        noon = start + timedelta(days=k, hours=12)
        moves += [(noon, "reserve", {"reserved": 2}, "web"),
                  (noon + timedelta(minutes=1), "commit", {"reserved": -2, "committed": 2},
                   "web")]
    await add_product(c, "p-runs-out", ["runs-out"])  # the catalogue knows it: it is adjusted
    await write_history(c, "runs-out", moves)
    await c.analytics.rebuild(start - timedelta(days=1))
    kind = "inventory.stockout_predicted.v1"
    assert await c.analytics.predict_stockouts(14, now) == {
        "at_risk": 1, "published": 1, "cleared": 0}
    (alert,) = await published(c, kind)
    assert (alert["sku"], alert["stockout_on"], alert["receipt_on"], alert["days_of_cover"]) == (
        "runs-out", (now + timedelta(days=5)).date().isoformat(), None, 5.0)
    assert (await c.analytics.predict_stockouts(14, now))["published"] == 0  # nothing new

    # 30 more on order, due in 3 days: in time, the alert stands down.
    app, client = http
    inventory = {"Authorization": "Bearer " + app.state.tokens.mint(Role.INVENTORY, "i")}
    due = (now + timedelta(days=3)).date()
    answer = await client.post("/v1/inventory/adjustments", headers=inventory, json={
        "sku": "runs-out", "location": "wh", "kind": "expect", "quantity": 30,
        "expected_on": due.isoformat()})
    assert answer.status_code == 200, answer.text
    await consume_outbox(c)
    assert await c.analytics.predict_stockouts(14, now) == {
        "at_risk": 0, "published": 0, "cleared": 1}
    # The shipment slips to day 9: after the stock-out on day 5, so said again, with its day.
    late = (now + timedelta(days=9)).date()
    assert (await client.post("/v1/inventory/adjustments", headers=inventory, json={
        "sku": "runs-out", "location": "wh", "kind": "expect", "quantity": 30,
        "expected_on": late.isoformat()})).status_code == 200
    await consume_outbox(c)
    assert (await c.analytics.predict_stockouts(14, now))["published"] == 1
    assert [a["receipt_on"] for a in await published(c, kind)] == [None, late.isoformat()]
    # An arrival date on anything but an expect is refused, naming the field.
    wrong = await client.post("/v1/inventory/adjustments", headers=inventory, json={
        "sku": "runs-out", "location": "wh", "kind": "receive", "quantity": 1,
        "expected_on": late.isoformat()})
    assert wrong.status_code == 422 and "expected_on" in wrong.text


async def test_graphql_fields_answer_as_rest_does(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    app, client = http
    await stocked(c, "sock", 8)
    await sell(c, "sock", 2)
    await consume_outbox(c)
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.MERCHANDISER, "m")}
    query = """{ skuAnalytics(sku: "sock") { sold28d velocity28d available daysOfCover
                   conversion28d { orders } }
                 dropCurves(sku: "sock") { units minutesTo { quarter half } }
                 reorderLists(leadTimeDays: 3) { lowCover { sku } overstock { sku } } }"""
    answer = (await client.post("/graphql", json={"query": query}, headers=staff)).json()
    assert "errors" not in answer, answer
    data = answer["data"]
    rest = (await client.get("/v1/analytics/skus/sock", headers=staff)).json()
    assert data["skuAnalytics"] == {
        "sold28d": 2, "velocity28d": rest["velocity_28d"], "available": 6,
        "daysOfCover": rest["days_of_cover"], "conversion28d": {"orders": 2}}
    (drop,) = data["dropCurves"]
    assert drop["units"] == 8 and drop["minutesTo"]["half"] is None
    assert 0 <= drop["minutesTo"]["quarter"] < 1  # 2 of 8 gone within the minute
    assert data["reorderLists"] == {"lowCover": [], "overstock": []}  # 3 days of cover
    wrong = (await client.post("/graphql", json={
        "query": "{ reorderLists(serviceLevel: 2) { asOf } }"}, headers=staff)).json()
    assert "service_level" in str(wrong["errors"])
    customer = {"Authorization": "Bearer " + app.state.tokens.mint(Role.CUSTOMER, "c")}
    refused = (await client.post("/graphql", json={
        "query": '{ skuAnalytics(sku: "sock") { sku } }'}, headers=customer)).json()
    assert refused["data"] is None and "may not" in str(refused["errors"])


async def test_sales_days_over_rest_and_graphql(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    app, client = http
    await stocked(c, "scarf", 5)
    await sell(c, "scarf", 2)
    await consume_outbox(c)
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.SUPPORT, "s")}
    days = (await client.get("/v1/analytics/skus/scarf/days?days=7", headers=staff)).json()
    assert [d["sold"] for d in days] == [0] * 6 + [2]  # today the last
    # Not in stock before today's receipt; in stock since (seconds of the day so far).
    assert [d["in_stock_share"] for d in days[:-1]] == [0.0] * 6
    assert (await client.get("/v1/analytics/skus/scarf/days?days=3",
                             headers=staff)).status_code == 422
    answer = (await client.post("/graphql", headers=staff, json={
        "query": '{ salesDays(sku: "scarf", days: 7) { day sold inStockShare } }'})).json()
    assert [d["sold"] for d in answer["data"]["salesDays"]] == [d["sold"] for d in days]


async def test_demand_after_a_sell_out_counts_refusals_and_waitlist_joins(
        container: Container) -> None:
    c = container
    await stocked(c, "kick-9", 2)
    await sell(c, "kick-9", 2)  # sold out
    for quantity in (1, 1, 2):  # three buyers too late: 4 units they could not have
        with pytest.raises(InsufficientStockConflict):
            await c.inventory.reserve(ReserveRequest([Line("kick-9", quantity)]), CTX)
    await c.waitlist.join("kick-9", "cus-1")
    assert await c.inventory.publish_refusals() == 1
    assert await c.inventory.publish_refusals() == 0  # handed on once
    await consume_outbox(c)
    (drop,) = await c.analytics.drops("kick-9")
    assert drop["after_sell_out"] == {"refused_units": 4, "waitlist_joins": 1}
    assert drop["minutes_to"]["100"] is not None


async def test_the_next_drop_s_size_curve_from_past_drops_and_a_poll(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    c = container
    app, client = http
    await add_location(c, "wh")
    await c.catalog.create_product(Product(
        id="tee", title="tee", brand="b", category="c", price=Decimal("10"), currency="EUR",
        variants=[Variant(f"tee-{s}", {"size": s}) for s in ("S", "M", "L")]))
    for size, stock, sold in (("S", 10, 2), ("M", 10, 10), ("L", 10, 6)):
        await receive(c, f"tee-{size}", "wh", stock)
        for _ in range(sold):
            await sell(c, f"tee-{size}", 1)
    for _ in range(4):  # M sold out: four more wanted it
        with pytest.raises(InsufficientStockConflict):
            await c.inventory.reserve(ReserveRequest([Line("tee-M", 1)]), CTX)
    await c.inventory.publish_refusals()
    await consume_outbox(c)
    merchandiser = {"Authorization": "Bearer " + app.state.tokens.mint(Role.MERCHANDISER, "m")}
    poll = await client.post("/v1/polls", headers=merchandiser, json={
        "title": "Next drop", "contexts": ["product_page"], "questions": [
            {"id": "size", "text": "Your size?", "options": [
                {"id": s.lower(), "label": s, "attributes": {"size": s}}
                for s in ("S", "M", "L")]}]})
    assert poll.status_code == 201, poll.text
    poll_id = poll.json()["id"]
    for n, choice in enumerate(["s", "m", "m", "l"]):
        answered = await client.post(f"/v1/polls/{poll_id}/answers", json={
            "session_id": f"s{n}", "answers": [{"question_id": "size", "option_id": choice}]})
        assert answered.status_code == 201, answered.text
    answer = await client.get(f"/v1/analytics/products/tee/size-curve?units=100&poll_id="
                              f"{poll_id}", headers=merchandiser)
    assert answer.status_code == 200, answer.text
    curve = answer.json()
    # Wanted: S 2, M 10 + 4 refused, L 6; answers S 1, M 2, L 1: weights 3, 16, 7 of 26,
    # 11.5, 61.5 and 26.9 units: L and then M (a tie with S, broken by name) round up.
    assert [(s["size"], s["past_demand"], s["poll_answers"], s["units"])
            for s in curve["sizes"]] == [("S", 2, 1, 11), ("M", 14, 2, 62), ("L", 6, 1, 27)]
    assert curve["poll_respondents"] == 4
    bad = await client.get("/v1/analytics/products/tee/size-curve?units=0",
                           headers=merchandiser)
    assert bad.status_code == 422 and "units" in bad.text


async def test_a_size_curve_of_sizes_never_stocked_splits_evenly(
        container: Container, http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """A product none of whose sizes was ever in stock has no past drop: an even split
    (schemathesis found this a 500)."""
    app, client = http
    await container.catalog.create_product(Product(
        id="new", title="new", brand="b", category="c", price=Decimal("10"), currency="EUR",
        variants=[Variant(f"new-{s}", {"size": s}) for s in ("S", "M")]))
    staff = {"Authorization": "Bearer " + app.state.tokens.mint(Role.MERCHANDISER, "m")}
    answer = await client.get("/v1/analytics/products/new/size-curve?units=5", headers=staff)
    assert answer.status_code == 200, answer.text
    assert [(s["size"], s["past_demand"], s["units"]) for s in answer.json()["sizes"]] == [
        ("S", 0, 2), ("M", 0, 3)]  # a tie, broken by name
