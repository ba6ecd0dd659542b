"""A drop's waiting-room page (`/drops/{id}`) in a real browser (Debian's Chromium through
Playwright) against a server process: the page solves the proof of work with Web Crypto, takes a
place before the start, shows it, lets the shopper in once the room admits them, and reserves with
the pass; a shopper who comes after the last unit sees the drop sold out and joins the waitlist.

The proof is asked at 8 bits (a few hundred hashes): the browser's search is the real one, only
shorter. One backend (PostgreSQL when configured) bounds the browser time."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Page, expect

from instock.platform.auth import Role
from tests.e2e.browser import chromium, run
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    bearer,
    create_location,
    create_product,
    receive,
    token,
)
from tests.support import backends, migrated_database

pytestmark = pytest.mark.slow

SKU = "dp-shoe-42"
# The first shopper opens the page, solves and takes a place in this. The drop is scheduled
# only once the browser runs: a loaded machine (two CI workers) can take seconds to start one.
LEAD_SECONDS = 8.0
T = TypeVar("T")


async def _stock_and_drop(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(Role.ADMIN),
                                 timeout=30) as admin:
        await create_location(admin, "dp-wh")
        await create_product(admin, "dp-shoe", [SKU])
        await receive(admin, SKU, "dp-wh", 1)  # one unit: the first shopper takes it
        made = await admin.post("/v1/drops", headers=bearer(Role.MERCHANDISER), json={
            "skus": [SKU], "mode": "queue", "admit_per_second": 5, "per_customer_limit": 1,
            "starts_at": (datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)).isoformat()})
        assert made.status_code == 201, made.text
        drop: dict[str, Any] = made.json()
        return drop


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    """The server's address and how to schedule its drop (called when the browser is up)."""
    backend = backends()[-1]
    with migrated_database(backend, tmp_path) as url:
        servers = ServerFactory(Database(backend, url, tmp_path), tmp_path)
        try:
            server = run(servers.start(INSTOCK_DROP_PROOF_BITS="8"))
            yield server.base_url, lambda: run(_stock_and_drop(server))
        finally:
            servers.stop_all()


def open_room(page: Page, url: str, drop_id: str, shopper: str) -> None:
    page.goto(f"{url}/drops/{drop_id}#token={token(Role.CUSTOMER, shopper)}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)


def test_a_shopper_waits_is_let_in_and_reserves_then_the_next_finds_it_sold_out(
        shop: tuple[str, Callable[[], dict[str, Any]]],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    url, schedule = shop
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    shots.mkdir(exist_ok=True)
    errors: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/livez")  # the browser's first page is its slowest
        drop = schedule()

        # Before the start: the browser proves its work, takes a place and shows it.
        open_room(page, url, drop["id"], "dp-first")
        assert datetime.now(UTC) < datetime.fromisoformat(drop["starts_at"]), (
            "the page took its place after the start: raise LEAD_SECONDS")
        expect(page.locator("#position")).to_have_attribute("data-position", "1")
        expect(page.locator("#room-status")).to_contain_text("has not started")
        expect(page.locator("#room-countdown")).to_contain_text("Drops in")
        expect(page.locator("#wait")).not_to_be_empty()
        expect(page.locator("#room-sizes")).to_be_hidden()  # nothing to choose yet
        expect(page.get_by_role("button", name="Reserve")).to_be_hidden()
        page.screenshot(path=str(shots / "drop-waiting.png"), full_page=True)

        # The room opens and admits the first place: "You're in", then reserve with the pass.
        expect(page.get_by_role("heading", name="You're in")).to_be_visible(
            timeout=LEAD_SECONDS * 1000 + 10_000)
        expect(page.locator("[data-live-status]")).to_have_text("live")
        reserve = page.get_by_role("button", name="Reserve")
        expect(reserve).to_be_disabled()  # nothing chosen yet
        page.get_by_label(SKU, exact=True).check()
        reserve.click()
        expect(page.locator("#held")).to_contain_text(f"{SKU} is held for you")
        page.screenshot(path=str(shots / "drop-admitted.png"), full_page=True)
        held = httpx.get(f"{url}/v1/inventory/{SKU}", headers=bearer(Role.ADMIN)).json()
        assert held["reserved"] == 1 and held["available"] == 0, held

        # The next shopper arrives after the last unit went: sold out, and the waitlist.
        other = context.new_page()
        other.on("pageerror", lambda error: errors.append(str(error)))
        open_room(other, url, drop["id"], "dp-second")
        # Its place counts those still ahead of it, as the room's stream tells it.
        expect(other.locator("#position")).to_have_attribute("data-position",
                                                             re.compile(r"^\d+$"))
        expect(other.get_by_role("heading", name="Sold out")).to_be_visible(
            timeout=10_000)
        expect(other.get_by_role("heading", name="You're in")).to_be_hidden()
        expect(other.get_by_role("button", name="Reserve")).to_be_hidden()
        other.get_by_label(SKU, exact=True).check()
        other.get_by_role("button", name="Join the waitlist").press("Enter")
        expect(other.locator("#held")).to_contain_text(f"We will tell you when {SKU}")
        other.screenshot(path=str(shots / "drop-sold-out.png"), full_page=True)
        context.close()
    assert not errors, errors
    waiting = httpx.get(f"{url}/v1/waitlist", headers=bearer(Role.CUSTOMER, "dp-second"))
    assert [e["sku"] for e in waiting.json()] == [SKU]
    # Nobody else holds the unit: the reservation is the first shopper's.
    assert httpx.get(f"{url}/v1/inventory/{SKU}",
                     headers=bearer(Role.ADMIN)).json()["reserved"] == 1
