"""What a run of `instock bench events` is asked for, its limits, and the shop it seeds."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from instock.bench.local import Server, admin_token

LOCATION = "bench-wh"
ADJUST_PATH = "/v1/inventory/adjustments"
SKUS_PER_STREAM = 100  # the server's limit per SSE connection
# Writes in flight at once (the HTTP driver's keep-alive connections): enough that a write
# waiting on one SKU does not hold up the others, few enough not to drown one server process.
# Changes due beyond that queue in the bench, so `write_ms` includes that wait.
WRITERS = 64
CONNECT_PARALLEL = 200  # capacity clients connecting at once (stays under the listen backlog)
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 120.0  # after the schedule ends: how long unanswered writes may still finish
FANOUT_TIMEOUT = 60.0
# After the last change, the longest wait for its push (longer than the relay's 1 s fallback
# poll, all the service driver on SQLite has); what arrives later counts as lost.
PUSH_GRACE_SECONDS = 5.0
SETTLE_SECONDS = 1.0  # after the last client connected, before reading the server's memory
IDLE_SECONDS = 3.0  # how long the held clients' idle cost is measured
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_NATS = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Plan:
    buses: list[str]
    rate: float
    seconds: float
    skus: int
    clients: int
    database: str  # chooses the backend (and PostgreSQL server); never written into
    driver: str = "http"  # or "service", "outbox"
    consumers: bool = False


async def seed(server: Server, count: int) -> list[str]:
    """A bench location and `count` SKUs (100 variants per product), each with some stock."""
    skus = [f"bench-{i:05d}" for i in range(count)]
    headers = {"Authorization": f"Bearer {admin_token(server)}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers,
                                 timeout=60) as api:
        (await api.post("/v1/locations", json={"id": LOCATION, "name": "Bench warehouse",
                                               "kind": "warehouse"})).raise_for_status()
        for start in range(0, count, 100):
            chunk = skus[start:start + 100]
            (await api.post("/v1/products", json={
                "id": f"bench-p{start // 100}", "title": "Bench product", "brand": "bench",
                "category": "bench", "price": "1",
                "variants": [{"sku": s, "attributes": {"n": s}} for s in chunk]})
             ).raise_for_status()
        for sku in skus:  # also warms the write path before anything is timed
            (await api.post(ADJUST_PATH, json={"sku": sku, "location": LOCATION,
                                               "kind": "receive", "quantity": 1000})
             ).raise_for_status()
    return skus
