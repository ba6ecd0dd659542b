"""At close, winners are drawn without anyone asking (issue 24, part 3): the workers' duty
draws a draw drop once its entries close, once, with two of them running at once on one
database (each with its own pool, as two processes have), and leaves open drops alone."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from instock.app import Container, build, create_app
from instock.drops import store
from instock.drops.draws import AUTO_DRAWER
from instock.platform.auth import Role
from instock.workers import worker_duties
from tests.integration.test_drop_draws import entered, events, standing
from tests.integration.test_drops import PROOF_BITS, auth, schedule, soon, stocked, until
from tests.support import make_settings

DRAW_EVERY = 0.05  # seconds between looks: the test waits for the draw, not for a timer


def draw_duty(container: Container) -> Coroutine[Any, Any, None]:
    """The duty the process's settings start (workers.worker_duties), alone: the others the
    test settings leave on are closed unstarted."""
    found = None
    for duty in worker_duties(container):
        if duty.cr_code.co_name == "run_draws_at_close":
            found = duty
        else:
            duty.close()
    assert found is not None, "run_draws=True starts the draw duty"
    return found


async def draws_of(container: Container, drop_id: str) -> list[Any]:
    async with container.db.read() as conn:
        return list(await conn.execute(sa.select(store.drop_draws).where(
            store.drop_draws.c.drop_id == drop_id)))


async def test_a_closed_draw_is_drawn_by_itself_once_with_two_workers(
        database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, drop_proof_bits=PROOF_BITS,
                             run_draws=True, drop_draw_seconds=DRAW_EVERY)
    assert not make_settings(database_url, tmp_path).run_draws  # off in tests unless asked
    app = create_app(settings)  # no lifespan under ASGITransport: the app runs no duty here
    workers = [build(settings), build(settings)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        http = (app, client)
        await stocked(http, "auto", {"auto-1": 5, "auto-2": 1})
        hour = soon(3600).isoformat()
        later = await schedule(http, skus=["auto-2"], starts_at=hour, mode="draw",
                               entries_close_at=hour)
        closes = soon(2.0)
        drop = await schedule(http, skus=["auto-1"], starts_at=closes.isoformat(),
                              mode="draw", entries_close_at=closes.isoformat(),
                              draw_winners=2)
        by_entry = {await entered(http, drop["id"], c): c for c in ("a1", "a2", "a3", "a4")}
        loops = [asyncio.create_task(draw_duty(worker)) for worker in workers]
        try:
            # Open entries are not drawn, however often the loops look.
            await asyncio.sleep(DRAW_EVERY * 6)
            if datetime.now(UTC) < closes:
                assert await draws_of(workers[0], drop["id"]) == []
            await until(closes)
            async with asyncio.timeout(15):
                while not await draws_of(workers[0], drop["id"]):
                    await asyncio.sleep(DRAW_EVERY)
            await asyncio.sleep(DRAW_EVERY * 10)  # both loops keep looking a while longer
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

        [row] = await draws_of(workers[0], drop["id"])
        assert row.drawn_by == AUTO_DRAWER
        published = await client.get(f"/v1/drops/{drop['id']}/draw",
                                     headers=auth(app, Role.CUSTOMER, "a1"))
        assert published.status_code == 200, published.text
        order = published.json()["order"]
        assert sorted(order) == sorted(by_entry) and published.json()["winners"] == order[:2]
        # Each winner was told once (drop.won.v1 in the draw's one transaction), not twice.
        won = [e for e in await events(workers[0], "drop.won.v1")
               if e["data"]["drop_id"] == drop["id"]]
        assert sorted(e["data"]["entry_id"] for e in won) == sorted(order[:2])
        winner = await standing(http, drop["id"], order[0], by_entry[order[0]])
        assert winner["status"] == "won" and winner["pass"]
        # The manual route answers the same stored draw.
        manual = await client.post(f"/v1/drops/{drop['id']}/draw",
                                   headers=auth(app, Role.MERCHANDISER))
        assert manual.status_code == 200 and manual.json() == published.json()
        assert await draws_of(workers[0], later["id"]) == []  # its entries are open
    for worker in workers:
        await worker.close()
