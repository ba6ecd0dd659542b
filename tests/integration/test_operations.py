"""What operators see: the backbone's gauges (outbox lag, consumer lag, dead letters), the
commit-to-push latency, refusals that prevented an oversell, and a /readyz that reports each
dependency and is not-ready only when a required one is down."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.app import Container, create_app, live_hub
from instock.inventory.model import Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.live.service import Connection
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import Consumer, ConsumerSpec
from instock.platform.bus.health import BackboneMonitor
from instock.platform.db import utcnow
from instock.platform.errors import Conflict
from instock.platform.ids import new_id
from instock.webhooks.events import Ping
from tests.integration.helpers import CTX, add_location, add_product, receive
from tests.integration.test_relay import running
from tests.integration.test_stock_gaps import next_state
from tests.support import make_settings


@pytest.fixture
def c(container: Container) -> Container:
    return container


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_outbox_gauges_follow_what_waits_for_the_relay(c: Container) -> None:
    monitor = BackboneMonitor(c.db, [])
    assert (await monitor.sample()).outbox_pending == 0
    assert metric("instock_outbox_lag_seconds") == 0.0
    async with c.db.write() as conn:
        await outbox.add(conn, [Ping(subscription_id="s1"), Ping(subscription_id="s2")])
    await asyncio.sleep(0.3)
    found = await monitor.sample()
    assert found.outbox_pending == 2
    assert 0.3 <= found.outbox_lag_seconds < 30
    assert metric("instock_outbox_pending") == 2
    assert metric("instock_outbox_lag_seconds") == found.outbox_lag_seconds
    assert await c.relay().publish_pending() == 2
    found = await monitor.sample()
    assert (found.outbox_pending, found.outbox_lag_seconds) == (0, 0.0)
    assert metric("instock_outbox_lag_seconds") == 0.0


def stuck_event(seconds_ago: float) -> Envelope:
    return {"specversion": "1.0", "id": new_id(), "source": "/test", "type": "test.ops.v1",
            "subject": "ops", "time": (utcnow() - timedelta(seconds=seconds_ago)).isoformat(),
            "data": {}}


async def test_a_consumer_stuck_on_an_event_shows_its_lag_growing(c: Container) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(conn: AsyncConnection, envelope: Envelope) -> None:
        entered.set()
        await release.wait()

    name = f"ops-{new_id()[:8]}"
    worker = Consumer(c.db, c.bus, ConsumerSpec(name, frozenset({"test.ops.v1"}), handler))
    assert metric("instock_consumer_lag_seconds", consumer=name) == 0.0  # a series at once
    handled = metric("instock_consumer_handle_duration_seconds_count", consumer=name)
    async with running(worker.run()):
        await asyncio.sleep(0.1)
        await c.bus.publish([stuck_event(seconds_ago=5)])
        await asyncio.wait_for(entered.wait(), 10)
        first = metric("instock_consumer_lag_seconds", consumer=name)
        await asyncio.sleep(0.3)
        later = metric("instock_consumer_lag_seconds", consumer=name)
        assert 5 <= first < later < 30  # read at each scrape: it grows while stuck
        release.set()
        for _ in range(100):
            if metric("instock_consumer_handle_duration_seconds_count", consumer=name) > handled:
                break
            await asyncio.sleep(0.05)
        assert metric("instock_consumer_lag_seconds", consumer=name) == 0.0
    assert metric("instock_consumer_handle_duration_seconds_count", consumer=name) == handled + 1


async def test_dead_letters_are_counted_per_consumer(c: Container) -> None:
    async def broken(conn: AsyncConnection, envelope: Envelope) -> None:
        raise RuntimeError("downstream is down")

    name, quiet = f"ops-dead-{new_id()[:8]}", f"ops-quiet-{new_id()[:8]}"
    worker = Consumer(c.db, c.bus, ConsumerSpec(name, frozenset({"test.ops.v1"}), broken),
                      attempts=1)
    assert await worker.handle(stuck_event(0)) == "dead"
    assert await worker.handle(stuck_event(0)) == "dead"
    found = await BackboneMonitor(c.db, [quiet]).sample()
    assert found.dead_letters[name] == 2
    assert metric("instock_dead_letters", consumer=name) == 2
    assert REGISTRY.get_sample_value("instock_dead_letters", {"consumer": quiet}) == 0.0


async def test_a_watched_change_is_timed_from_commit_to_push_and_a_refusal_counted(
        c: Container) -> None:
    await add_location(c, "wh")
    await add_product(c, "ops", ["OPS-1"])
    await receive(c, "OPS-1", "wh", 2)
    pushed = metric("instock_commit_to_push_seconds_count")
    prevented = metric("instock_oversell_prevented_total")
    hub = live_hub(c)
    async with running(hub.run(), c.relay().run()):
        await asyncio.sleep(0.2)
        connection = Connection()
        await hub.watch(connection, ["OPS-1"])
        await next_state(connection, "OPS-1")  # the snapshot: no push of a change yet
        await c.inventory.reserve(ReserveRequest([Line("OPS-1", 1)]), CTX)
        assert (await next_state(connection, "OPS-1")).body["available"] == 1
        hub.close(connection)
    assert metric("instock_commit_to_push_seconds_count") == pushed + 1
    assert 0 < metric("instock_commit_to_push_seconds_sum") < 60
    with pytest.raises(Conflict):
        await c.inventory.reserve(ReserveRequest([Line("OPS-1", 4)]), CTX)
    assert metric("instock_oversell_prevented_total") == prevented + 3  # 4 asked, 1 left


async def ready(settings_overrides: dict[str, Any], database_url: str,
                tmp_path: Path) -> httpx.Response:
    app = create_app(make_settings(database_url, tmp_path, **settings_overrides))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/readyz")


async def test_readyz_reports_each_dependency_and_the_outbox(database_url: str,
                                                             tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(100):  # the backbone monitor samples at start
                body = (await client.get("/readyz")).json()
                if body["checks"]["outbox"]["status"] != "unknown":
                    break
                await asyncio.sleep(0.05)
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == {"status": "up", "required": True}
    assert checks["bus"] == {"status": "up", "required": False}
    assert checks["outbox"]["status"] == "ok"
    assert checks["outbox"]["pending"] >= 0 and checks["outbox"]["lag_seconds"] >= 0
    assert checks["reconciler"] == {"status": "off"}  # the tests' settings turn it off


async def test_readyz_shows_the_reconciler_keeping_to_its_interval(database_url: str,
                                                                    tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, run_reconciler=True,
                                   reconcile_interval_seconds=0.2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(200):
                check = (await client.get("/readyz")).json()["checks"]["reconciler"]
                if check["status"] == "ok":
                    break
                await asyncio.sleep(0.05)
    assert check["status"] == "ok" and check["seconds_since_pass"] < 5


async def test_readyz_is_not_ready_without_the_database_and_says_why(tmp_path: Path) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"  # nothing listens on 9
    response = await ready({}, unreachable, tmp_path)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["database"]["status"] == "down"
    assert "database" in body["detail"]


async def test_a_bus_that_is_down_is_reported_but_the_process_stays_ready(
        database_url: str, tmp_path: Path) -> None:
    # Writes wait in the outbox while the broker is away; pulling every API process from the
    # load balancer would make an outage of late live updates a full one.
    response = await ready({"bus_url": "nats://127.0.0.1:9"}, database_url, tmp_path)
    assert response.status_code == 200
    assert response.json()["checks"]["bus"]["status"] == "down"
