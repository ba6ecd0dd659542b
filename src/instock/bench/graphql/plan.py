"""What a run of `instock bench graphql` is asked for, its limits, and the shop it seeds."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from instock.bench.events.plan import ADJUST_PATH, LOCATION
from instock.bench.local import Server, admin_token

PRODUCT = "bench-page"  # the product page's product
VARIANTS = 20
OTHERS = 15  # other products, so the recommendations strip has items
LIMIT = 10  # recommendations asked per page
CHANNEL = "web"
SESSIONS = 1000  # shoppers the pages are for (request i is session i mod this)
CONNECTIONS = 64  # keep-alive connections of each side's pool (query, REST)
DRAIN_SECONDS = 60.0  # after the schedule ends: how long unanswered pages may still finish
WARMUP = 20  # pages of each kind asked (untimed) before the timed runs
CONNECT_PARALLEL = 200  # capacity subscribers connecting at once (under the listen backlog)
SETTLE_SECONDS = 1.0  # after the last subscriber connected, before reading the server's memory
FANOUT_TIMEOUT = 60.0
PUSH_GRACE_SECONDS = 5.0  # after the last change: the longest wait for its push

PAGE_QUERY = """query BenchProductPage($id: ID!, $sessionId: String, $context: String,
  $limit: Int) {
  product(id: $id) {
    id title variants { sku size stock(channel: "web") { available soldOut version } }
  }
  recommendations(sessionId: $sessionId, context: $context, limit: $limit) {
    items { sku reason }
  }
}"""

STOCK_CHANGED = """subscription BenchStockChanged($skus: [String!]!) {
  stockChanged(skus: $skus) { sku version available soldOut }
}"""


@dataclass(frozen=True)
class Plan:
    rate: float  # product pages per second, each side
    seconds: float  # how long each side is asked, and how long changes are made
    changes_per_s: float
    listeners: int  # subscribers of the latency part, each on every variant's SKU
    subscribers: int  # the capacity part's subscriptions (0 skips it)
    database: str  # chooses the backend (and PostgreSQL server); never written into


def variant_skus() -> list[str]:
    return [f"{PRODUCT}-{i:02d}" for i in range(VARIANTS)]


async def seed(server: Server) -> list[str]:
    """The bench location, the page's product with its 20 stocked sizes and 15 other stocked
    products of the same brand and category; returns the page's SKUs."""
    skus = variant_skus()
    products = {PRODUCT: skus, **{f"bench-other-{n:02d}": [f"bench-other-{n:02d}-{i}"
                                                           for i in range(3)]
                                  for n in range(OTHERS)}}
    headers = {"Authorization": f"Bearer {admin_token(server)}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as api:
        (await api.post("/v1/locations", json={"id": LOCATION, "name": "Bench warehouse",
                                               "kind": "warehouse"})).raise_for_status()
        for n, (product, its_skus) in enumerate(products.items()):
            (await api.post("/v1/products", json={
                "id": product, "title": f"Bench {product}", "brand": "bench",
                "category": "tees", "price": str(20 + n),
                "variants": [{"sku": s, "attributes": {"size": str(i)}}
                             for i, s in enumerate(its_skus)]})).raise_for_status()
            for sku in its_skus:
                (await api.post(ADJUST_PATH, json={"sku": sku, "location": LOCATION,
                                                   "kind": "receive", "quantity": 1000})
                 ).raise_for_status()
    return skus
