"""Tampering is caught by a running server: a stock level changed, an outbox event deleted and a
ledger entry edited directly in the database each show up as a drift within 5 s; approved
repairs write compensating `reconcile` entries and the next pass is clean (SQLite and
PostgreSQL, a real `instock serve` with its reconciler)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    ServerFactory,
    client,
    create_location,
    create_product,
    eventually,
    receive,
)

DETECTION_SECONDS = 5.0


async def open_drifts(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/v1/reconciliation/drifts")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def drifts_gauge(api: httpx.AsyncClient) -> float:
    for line in (await api.get("/metrics")).text.splitlines():
        if line.startswith("instock_reconciliation_drifts "):
            return float(line.split()[1])
    raise AssertionError("instock_reconciliation_drifts is not on /metrics")


async def test_tampering_is_caught_within_seconds_and_repaired_by_approval(
        database: Database, servers: ServerFactory) -> None:
    # The relay is off so that the event of T-2's change is still unpublished when it is
    # deleted (deleting a published one is the outbox's own clean-up, not a loss).
    server = await servers.start(INSTOCK_RECONCILE_INTERVAL_SECONDS="1",
                                 INSTOCK_RUN_RELAY="false")
    async with client(server.base_url) as api:
        await create_location(api, "wh")
        await create_product(api, "tamper", ["T-1", "T-2", "T-3"])
        for sku in ("T-1", "T-2", "T-3"):
            await receive(api, sku, "wh", 10)

        async def clean_pass() -> bool:
            ready = (await api.get("/readyz")).json()["checks"]["reconciler"]
            return ready["status"] == "ok" and await open_drifts(api) == []

        await eventually(clean_pass, "a clean reconciliation pass", timeout=30)
        await receive(api, "T-2", "wh", 1)  # its event waits in the outbox
        tampered = time.monotonic()
        await database.execute(_sql("UPDATE stock_levels SET on_hand = on_hand + 40 "
                                    "WHERE sku = 'T-1'"))
        assert await database.execute(_sql(
            "DELETE FROM outbox WHERE subject = 'T-2' AND published_at IS NULL")) >= 1
        await database.execute(_sql("UPDATE ledger SET on_hand = on_hand + 3 "
                                    "WHERE sku = 'T-3' AND version = 1"))

        async def all_three() -> list[dict[str, Any]] | None:
            found = await open_drifts(api)
            kinds = {(d["kind"], d["sku"]) for d in found}
            wanted = {("level_mismatch", "T-1"), ("event_lost", "T-2"),
                      ("ledger_altered", "T-3")}
            return found if wanted <= kinds else None

        found = await eventually(all_three, "three drifts", timeout=DETECTION_SECONDS + 5)
        assert time.monotonic() - tampered < DETECTION_SECONDS
        assert len(found) == 3
        # The gauge is set just after the pass stores its drifts (which the API then shows).

        async def gauge_says_three() -> bool:
            return await drifts_gauge(api) == 3

        await eventually(gauge_says_three, "the drifts gauge at 3", timeout=10)
        level = next(d for d in found if d["kind"] == "level_mismatch")
        assert (level["expected"]["on_hand"], level["actual"]["on_hand"]) == (10, 50)

    async with client(server.base_url, Role.INVENTORY, "ops-kim") as staff:
        for drift in found:
            response = await staff.post(f"/v1/reconciliation/drifts/{drift['id']}/approve",
                                        json={"reason": f"tamper test: {drift['kind']}"})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "repaired"
    async with client(server.base_url) as api:
        for sku in ("T-1", "T-2", "T-3"):
            ledger = (await api.get(f"/v1/ledger?sku={sku}&limit=100")).json()["entries"]
            last = ledger[-1]
            assert (last["kind"], last["actor"]) == ("reconcile", "ops-kim"), last
        assert (await api.get("/v1/inventory/T-1")).json()["on_hand"] == 10
        assert (await api.get("/v1/inventory/T-3")).json()["on_hand"] == 10

        async def clean_again() -> bool:
            return await open_drifts(api) == [] and await drifts_gauge(api) == 0

        await eventually(clean_again, "a clean pass after the repairs", timeout=15)


def _sql(statement: str) -> Any:
    import sqlalchemy as sa

    return sa.text(statement)
