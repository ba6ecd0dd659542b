"""Marketplace channels end to end: an API process (relay, consumers and the channel worker in
it), the marketplace simulator and the `instock channels reconcile` command, all real processes,
on PostgreSQL too when INSTOCK_TEST_DATABASE_URL is set."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    INSTOCK,
    Database,
    ServerFactory,
    assert_problem,
    client,
    create_location,
    create_product,
    eventually,
    receive,
    stock,
)
from tests.marketplace import API_KEY, SECRET, Simulator, simulator

# The channel worker, the simulator and the reconcile command end to end; the channels
# context's integration tests run on both databases.
pytestmark = pytest.mark.one_backend

T = TypeVar("T")


@dataclass
class Shop:
    api: httpx.AsyncClient
    sim: Simulator
    db: Database

    async def committed(self, sku: str) -> int:
        return int((await stock(self.api, sku))["committed"])

    async def order_work(self) -> list[dict[str, Any]]:
        response = await self.api.get("/v1/channels/mkt/orders")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def listing_reaches(self, sku: str, quantity: int) -> None:
        async def there() -> bool:
            return await self.sim.listing(sku) == quantity

        await eventually(there, f"the marketplace lists {quantity} of {sku}")

    def reconcile(self, *options: str) -> dict[str, Any]:
        done = subprocess.run([INSTOCK, "channels", "reconcile", "mkt", "--json", *options],
                              env=self.db.env(), capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@asynccontextmanager
async def shop(servers: ServerFactory, database: Database, tmp_path: Path,
               buffer: int = 1) -> AsyncIterator[Shop]:
    server = await servers.start()
    webhook = f"{server.base_url}/v1/webhooks/marketplaces/mkt"
    async with simulator(tmp_path, webhook) as sim, client(server.base_url, Role.ADMIN) as api:
        await create_product(api, "sneaker", ["SNK-42", "SNK-43"])
        await create_location(api, "wh-1")
        response = await api.put("/v1/channels/mkt", json={
            "name": "Marketplace", "locations": ["wh-1"], "buffer": buffer})
        assert response.status_code == 200, response.text
        response = await api.put("/v1/channels/mkt/connection", json={
            "kind": "marketplace", "base_url": sim.base_url, "api_key": API_KEY,
            "webhook_secret": SECRET})
        assert response.status_code == 200, response.text
        assert "webhook_secret" not in response.json() and "api_key" not in response.json()
        yield Shop(api, sim, database)


async def test_stock_changes_reach_the_marketplace_listing(
        servers: ServerFactory, database: Database, tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-42", "wh-1", 5)
        await s.listing_reaches("SNK-42", 4)  # 5 - buffer
        for _ in range(10):
            await receive(s.api, "SNK-42", "wh-1", 1)
        await s.listing_reaches("SNK-42", 14)
        pushed = [p["quantity"] for p in (await s.sim.state())["pushes"]
                  if p["sku"] == "SNK-42" and p["outcome"] == 200]
        assert pushed == sorted(pushed)  # never an older value after a newer one
        assert len(pushed) <= 11  # a burst may be coalesced into fewer pushes


async def test_a_marketplace_order_decrements_our_stock_once_however_often_it_is_sent(
        servers: ServerFactory, database: Database, tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-42", "wh-1", 5)
        await s.listing_reaches("SNK-42", 4)
        bought = await s.sim.buy("SNK-42", 2, send_twice=True)
        first, second = bought["deliveries"]
        assert first["status"] == 200 and first["answer"]["duplicate"] is False
        assert second["status"] == 200 and second["answer"]["duplicate"] is True
        order_id = bought["order"]["id"]

        async def placed() -> list[dict[str, Any]]:
            return [w for w in await s.order_work()
                    if w["external_id"] == order_id and w["state"] == "done"]

        [work] = await eventually(placed, "the marketplace order is placed")
        assert work["outcome"] == "paid" and work["order_id"]
        assert await s.committed("SNK-42") == 2  # once, not twice
        order = await s.api.get(f"/v1/orders/{work['order_id']}")
        assert order.status_code == 200 and order.json()["status"] == "paid"
        await s.listing_reaches("SNK-42", 2)  # 3 left - buffer
        # the same delivery again, later, is still only acknowledged
        again = await s.sim.resend(bought["event_id"])
        assert again["status"] == 200 and again["answer"]["duplicate"] is True
        assert await s.committed("SNK-42") == 2


async def test_an_order_beyond_our_ats_is_cancelled_and_refunded_at_the_marketplace(
        servers: ServerFactory, database: Database, tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-43", "wh-1", 2)
        await s.listing_reaches("SNK-43", 1)
        bought = await s.sim.buy("SNK-43", 2, ignore_listing=True)  # a stale listing sold 2
        order_id = bought["order"]["id"]

        async def refunded() -> list[dict[str, Any]]:
            return [c for c in (await s.sim.state())["cancellations"]
                    if c["order_id"] == order_id]

        [cancellation] = await eventually(refunded, "the marketplace refunds the buyer")
        assert cancellation["by"] == "seller" and cancellation["refunded"] == "240.00"
        assert await s.committed("SNK-43") == 0
        assert (await stock(s.api, "SNK-43"))["available"] == 2


async def test_a_replayed_webhook_is_rejected(servers: ServerFactory, database: Database,
                                              tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-42", "wh-1", 3)
        await s.listing_reaches("SNK-42", 2)
        old = await s.sim.buy("SNK-42", 1, age_seconds=3600)  # signed an hour ago
        assert old["deliveries"][0]["status"] == 400
        assert old["deliveries"][0]["answer"]["type"].endswith("/webhook-signature")
        bought = await s.sim.buy("SNK-42", 1)
        replay = await s.sim.resend(bought["event_id"], age_seconds=3600)
        assert replay["status"] == 400
        # a forged signature, straight at the route
        response = await s.api.post("/v1/webhooks/marketplaces/mkt", content=b"{}", headers={
            "Marketplace-Signature": f"t={int(time.time())},v1=00"})
        problem = assert_problem(response, 400, "webhook-signature")
        assert problem["errors"][0]["field"] == "Marketplace-Signature"

        async def placed() -> list[dict[str, Any]]:
            return [w for w in await s.order_work() if w["state"] == "done"]

        assert [w["external_id"] for w in await eventually(placed, "one order placed")] == [
            bought["order"]["id"]]
        assert await s.committed("SNK-42") == 1


async def test_reconcile_reports_and_repairs_drift(servers: ServerFactory, database: Database,
                                                   tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-42", "wh-1", 6)
        await s.listing_reaches("SNK-42", 5)
        await s.sim.configure(drift={"SNK-42": 9, "OLD-1": 3})
        dry = s.reconcile("--dry-run")
        assert dry["dry_run"] is True
        assert {(d["sku"], d["ours"], d["theirs"]) for d in dry["drift"]} == {
            ("SNK-42", 5, 9), ("OLD-1", 0, 3)}
        assert await s.sim.listing("SNK-42") == 9
        fixed = s.reconcile()
        assert fixed["repaired"] == 2
        assert (await s.sim.listing("SNK-42"), await s.sim.listing("OLD-1")) == (5, 0)
        assert s.reconcile("--dry-run")["drift"] == []


async def test_a_buyer_cancellation_gives_the_stock_back(
        servers: ServerFactory, database: Database, tmp_path: Path) -> None:
    async with shop(servers, database, tmp_path) as s:
        await receive(s.api, "SNK-42", "wh-1", 4)
        await s.listing_reaches("SNK-42", 3)
        bought = await s.sim.buy("SNK-42", 1)
        order_id = bought["order"]["id"]

        async def done(work: str) -> list[dict[str, Any]]:
            return [w for w in await s.order_work()
                    if (w["external_id"], w["work"], w["state"]) == (order_id, work, "done")]

        await eventually(lambda: done("created"), "the order is placed")
        assert await s.committed("SNK-42") == 1
        cancelled = await s.sim.buyer_cancels(order_id, send_twice=True)
        assert [d["status"] for d in cancelled["deliveries"]] == [200, 200]
        [work] = await eventually(lambda: done("cancelled"), "the cancellation is carried out")
        assert work["outcome"] in ("cancelled", "refunded")  # the marketplace refunds it
        assert await s.committed("SNK-42") == 0
        assert (await stock(s.api, "SNK-42"))["available"] == 4
        await s.listing_reaches("SNK-42", 3)
