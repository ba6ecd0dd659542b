"""The last unit, sold on the web shop and on a marketplace at the same moment: exactly one
wins. The API process, the payment sandbox and the marketplace simulator are real processes.

Each round stocks one unit of a fresh SKU, waits until the marketplace lists it, then releases a
web checkout and a marketplace purchase together. The loser is refused (web: 409, nothing
charged) or cancelled and refunded (marketplace: the simulator records the seller's cancel).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from instock.platform.auth import Role
from tests.e2e.harness import (
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
from tests.e2e.sandboxes import configure, payments_and_api, payments_env
from tests.marketplace import API_KEY, SECRET, simulator

# The web request leaves this much after the marketplace purchase: the marketplace's path (a
# webhook, the outbox, the bus, a worker) is the longer one, so the skew lets each side win
# some rounds; the last one gives the marketplace a clear lead.
WEB_DELAYS = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 3.0]
ROUNDS = len(WEB_DELAYS)
SKUS = [f"LAST-{i}" for i in range(ROUNDS)]


async def test_the_last_unit_sold_on_the_web_and_a_marketplace_at_once(
        servers: ServerFactory, database: Database, tmp_path: Path) -> None:
    sandbox, api = await payments_and_api(servers, payments_env)
    await configure(sandbox, latency_ms=20)  # before any payment: the API has not called it yet
    webhook = f"{api.base_url}/v1/webhooks/marketplaces/mkt"
    async with simulator(tmp_path, webhook) as sim, client(api.base_url, Role.ADMIN) as admin, \
            client(api.base_url, Role.CUSTOMER, "web-buyer") as buyer:
        await create_product(admin, "last", SKUS)
        await create_location(admin, "wh-1")
        assert (await admin.put("/v1/channels/mkt", json={
            "name": "Marketplace", "locations": ["wh-1"], "buffer": 0})).status_code == 200
        assert (await admin.put("/v1/channels/mkt/connection", json={
            "kind": "marketplace", "base_url": sim.base_url, "api_key": API_KEY,
            "webhook_secret": SECRET})).status_code == 200

        winners = []
        for sku, delay in zip(SKUS, WEB_DELAYS, strict=True):
            await receive(admin, sku, "wh-1", 1)

            async def listed(sku: str = sku) -> bool:
                return await sim.listing(sku) == 1

            await eventually(listed, f"the marketplace lists {sku}")

            async def web_checkout(sku: str = sku, delay: float = delay) -> httpx.Response:
                await asyncio.sleep(delay)
                return await buyer.post("/v1/checkout",
                                        json={"lines": [{"sku": sku, "quantity": 1}]})

            web, bought = await asyncio.gather(web_checkout(), sim.buy(sku, 1))
            winners.append(await judge(admin, database, sim, sku, web, bought))
        # Exactly one won every round (checked in each); both sides won some.
        assert set(winners) == {"web", "marketplace"}, winners


async def judge(admin: httpx.AsyncClient, database: Database, sim: Any, sku: str,
                web: httpx.Response, bought: dict[str, Any]) -> str:
    """Exactly one sale stands; the other was refused or undone, and our stock agrees."""
    external_id = bought["order"]["id"]

    async def settled() -> dict[str, Any] | None:
        work = (await admin.get("/v1/channels/mkt/orders")).json()
        done = [w for w in work if w["external_id"] == external_id and w["state"] == "done"]
        return done[0] if done else None

    marketplace = await eventually(settled, f"the marketplace order for {sku} is decided")
    web_won = web.status_code == 201
    marketplace_won = marketplace["outcome"] == "paid"
    assert web_won != marketplace_won, (web.text, marketplace)
    level = await stock(admin, sku)
    assert (level["committed"], level["reserved"], level["available"]) == (1, 0, 0), level
    if web_won:
        assert web.json()["status"] == "paid"

        async def refunded() -> list[dict[str, Any]]:
            return [c for c in (await sim.state())["cancellations"]
                    if c["order_id"] == external_id]

        [cancellation] = await eventually(refunded, "the marketplace refunds its buyer")
        assert cancellation["by"] == "seller"
        return "web"
    assert_problem(web, 409, "insufficient-stock")
    captured = await database.scalar(
        "SELECT count(*) FROM payments WHERE order_id = :o AND status = 'captured'",
        o=web.json()["order_id"])
    assert captured == 0  # the web buyer was not charged
    return "marketplace"
