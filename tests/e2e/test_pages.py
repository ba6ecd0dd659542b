"""The storefront and the operations console in a real browser (Debian's Chromium, driven by
Playwright), against a server process with the payment sandbox beside it.

One server and one browser for the module (the scenario is long: a browser, a server, a
provider); each test works on SKUs of its own. The restart test runs last. Screenshots of both
pages are written under the session's pytest folder (`<basetemp>/screenshots/`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

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
from tests.e2e.sandboxes import payments_env, start_payments
from tests.support import BROWSER_HEADERS, backends, migrated_database

pytestmark = pytest.mark.slow

PRODUCT = "pw-tee"
SIZES = {"S": 5, "M": 5, "L": 2, "XL": 5}
OTHERS = ["pw-cap", "pw-bag", "pw-socks", "pw-scarf"]
T = TypeVar("T")


@dataclass
class Shop:
    servers: ServerFactory
    server: Server
    env: dict[str, str]
    screenshots: Path

    @property
    def url(self) -> str:
        return self.server.base_url

    def rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=bearer(Role.ADMIN), timeout=30,
                             **kwargs)

    def adjust(self, sku: str, kind: str, quantity: int) -> None:
        done = self.rest("POST", "/v1/inventory/adjustments", json={
            "sku": sku, "location": "pw-wh", "kind": kind, "quantity": quantity})
        assert done.status_code == 200, done.text

    def available(self, sku: str) -> int:
        return int(self.rest("GET", f"/v1/inventory/{sku}").json()["available"])


def sku(size: str) -> str:
    return f"{PRODUCT}-{size}"


async def _seed(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(Role.ADMIN),
                                 timeout=30) as admin:
        await create_location(admin, "pw-wh")
        response = await admin.post("/v1/products", json={
            "id": PRODUCT, "title": "Playwright Tee", "brand": "Drop", "category": "tees",
            "price": "39.00", "variants": [{"sku": sku(s), "attributes": {"size": s}}
                                           for s in SIZES]})
        assert response.status_code == 201, response.text
        for size, units in SIZES.items():
            await receive(admin, sku(size), "pw-wh", units)
        for other in OTHERS:
            await create_product(admin, other, [f"{other}-1"])
            await receive(admin, f"{other}-1", "pw-wh", 3)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp_path = tmp_path_factory.mktemp("pages")
    backend = backends()[-1]  # PostgreSQL when CI has it: one backend bounds the browser time
    with migrated_database(backend, tmp_path) as url:
        servers = ServerFactory(Database(backend, url, tmp_path), tmp_path)
        try:
            sandbox = run(start_payments(servers))
            env = payments_env(sandbox, INSTOCK_STOREFRONT_PRODUCT=PRODUCT,
                               INSTOCK_LIVE_HEARTBEAT_SECONDS="2")
            server = run(servers.start(**env))
            run(_seed(server))
            shots = tmp_path_factory.getbasetemp() / "screenshots"
            shots.mkdir(exist_ok=True)
            yield Shop(servers, server, env, shots)
        finally:
            servers.stop_all()


@pytest.fixture(scope="module")
def browser(shop: Shop) -> Iterator[Browser]:
    """After the shop: its set-up runs event loops, which the sync API's own loop forbids."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors


def storefront(page: Page, shop: Shop, subject: str = "pw-shopper") -> None:
    page.goto(f"{shop.url}/#token={token(Role.CUSTOMER, subject)}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)
    expect(page.locator("[data-live-status]")).to_have_text("live", timeout=10_000)


def size(page: Page, name: str) -> Any:
    return page.locator(f'.size[data-sku="{sku(name)}"]')


def test_the_storefront_shows_a_rest_stock_change_within_a_second(page: Page,
                                                                   shop: Shop) -> None:
    storefront(page, shop)
    expect(size(page, "S")).to_have_attribute("data-available", "5")
    expect(size(page, "S")).to_contain_text("only 5 left")
    shop.adjust(sku("S"), "receive", 4)
    expect(size(page, "S")).to_have_attribute("data-available", "9", timeout=1_000)
    expect(size(page, "S")).to_contain_text("in stock")


def test_a_size_flips_to_sold_out_and_offers_the_waitlist(page: Page, shop: Shop) -> None:
    storefront(page, shop, "pw-waiter")
    page.get_by_label("L", exact=True).check()
    waitlist = page.get_by_role("button", name="Notify me when it is back")
    expect(waitlist).to_be_hidden()
    shop.adjust(sku("L"), "damage", SIZES["L"])
    expect(size(page, "L")).to_have_attribute("data-available", "0", timeout=1_000)
    expect(size(page, "L")).to_contain_text("sold out")
    expect(page.get_by_role("button", name="Reserve")).to_be_disabled()
    expect(waitlist).to_be_visible()
    waitlist.press("Enter")  # keyboard, not only the mouse
    expect(page.locator("#toast")).to_contain_text("We will tell you")
    joined = httpx.get(f"{shop.url}/v1/waitlist", headers=bearer(Role.CUSTOMER, "pw-waiter"))
    assert [e["sku"] for e in joined.json()] == [sku("L")]


def test_reserve_and_checkout_ends_paid(page: Page, shop: Shop) -> None:
    storefront(page, shop, "pw-buyer")
    before = shop.available(sku("M"))
    page.get_by_label("M", exact=True).check()
    page.get_by_role("button", name="Reserve").click()
    expect(page.locator(f'[data-cart-sku="{sku("M")}"]')).to_be_visible()
    expect(size(page, "M")).to_have_attribute("data-available", str(before - 1))
    page.get_by_role("button", name="Checkout").click()
    expect(page.locator("#order")).to_have_attribute("data-status", "PAID", timeout=20_000)
    order_id = re.search(r"Order (\S+):", page.locator("#order").inner_text())
    assert order_id is not None
    order = shop.rest("GET", f"/v1/orders/{order_id.group(1)}").json()
    assert (order["status"], order["customer_id"]) == ("paid", "pw-buyer")
    assert [line["sku"] for line in order["lines"]] == [sku("M")]


def test_the_recommendations_strip_drops_an_item_that_sold_out(page: Page, shop: Shop) -> None:
    storefront(page, shop, "pw-browser")
    cards = page.locator("#recs [data-rec-sku]")
    expect(cards.first).to_be_visible(timeout=15_000)
    page.screenshot(path=shop.screenshots / "storefront.png", full_page=True)
    gone = cards.first.get_attribute("data-rec-sku")
    assert gone is not None
    shop.adjust(gone, "damage", shop.available(gone))
    expect(page.locator(f'#recs [data-rec-sku="{gone}"]')).to_have_count(0, timeout=5_000)


def test_the_ops_console_shows_a_new_ledger_entry_live(page: Page, shop: Shop) -> None:
    made = shop.rest("POST", "/v1/experiments", json={
        "name": "pw hybrid vs trending", "unit": "session", "variants": [
            {"name": "control", "share": 0.5, "config": {"model": "trending"}},
            {"name": "hybrid", "share": 0.5, "config": {}}]})
    assert made.status_code == 201, made.text
    page.goto(f"{shop.url}/ops#token={token(Role.ADMIN, 'pw-ops')}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)
    expect(page.locator(f'#stock tr[data-sku="{sku("XL")}"]')).to_be_visible()
    expect(page.locator("#audit")).to_have_attribute("data-ok", "true", timeout=15_000)
    chart = page.locator(f'[data-experiment="{made.json()["id"]}"] svg[role="img"]')
    expect(chart).to_have_attribute("aria-label", re.compile("pw hybrid vs trending"))
    expect(chart.locator("rect")).to_have_count(6)  # 2 variants x click, cart, purchase
    shop.adjust(sku("XL"), "receive", 2)
    entry = page.locator(f'#ledger li[data-key="{sku("XL")}@pw-wh"]')
    expect(entry.first).to_be_visible(timeout=2_000)
    expect(page.locator(f'#stock tr[data-sku="{sku("XL")}"] .available')).to_have_text(
        str(SIZES["XL"] + 2), timeout=2_000)
    # Picking a SKU draws its 28 days of sales and its velocity in stock.
    page.locator(f'#stock tr[data-sku="{sku("XL")}"]').click()
    figure = page.locator(f'#velocity figure[data-sku="{sku("XL")}"]')
    expect(figure.locator("svg rect.day")).to_have_count(28, timeout=5_000)
    expect(figure.locator("figcaption")).to_contain_text(re.compile(r"a day in stock \(28 d\)"))
    page.screenshot(path=shop.screenshots / "ops.png", full_page=True)


def test_the_ops_console_shows_a_drops_room_and_staff_refuse_a_held_ask(page: Page,
                                                                         shop: Shop) -> None:
    async def held_ask() -> str:
        async with httpx.AsyncClient(base_url=shop.url, headers=bearer(Role.ADMIN),
                                     timeout=30) as client:
            await create_product(client, "pw-drop", ["pw-drop-1"])
            await receive(client, "pw-drop-1", "pw-wh", 3)
            made = await client.post("/v1/drops", json={
                "skus": ["pw-drop-1"], "mode": "queue", "admit_per_second": 5,
                "starts_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
            assert made.status_code == 201, made.text
            # A browser without the proof of work: held for review, not refused.
            ticket = await client.post(f"/v1/drops/{made.json()['id']}/tickets", json={},
                                       headers={**bearer(Role.CUSTOMER, "pw-doubt"),
                                                **BROWSER_HEADERS})
            assert ticket.status_code == 201, ticket.text
            drop_id: str = made.json()["id"]
            return drop_id

    drop_id = run(held_ask())
    page.goto(f"{shop.url}/ops#token={token(Role.ADMIN, 'pw-ops')}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)
    row = page.locator(f'#drops tr[data-drop="{drop_id}"]')
    expect(row.locator(".asks")).to_have_text("1")
    expect(row.locator(".held")).to_have_text("1")
    held = page.locator('#held li[data-customer="pw-doubt"]')
    expect(held).to_contain_text("no-proof-of-work")
    held.get_by_role("button", name="Refuse").click()
    expect(held).to_have_count(0, timeout=5_000)
    expect(row.locator(".refused")).to_have_text("1")
    assert shop.rest("GET", f"/v1/drops/{drop_id}/held").json() == {"held": []}


def test_before_the_drop_a_countdown_and_no_reserving(page: Page, shop: Shop) -> None:
    starts = datetime.now(UTC) + timedelta(hours=2)
    early = run(shop.servers.start(**shop.env, INSTOCK_DROP_STARTS_AT=starts.isoformat()))
    try:
        page.goto(f"{early.base_url}/#token={token(Role.CUSTOMER, 'pw-early')}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)
        expect(page.locator("#countdown")).to_contain_text(re.compile(r"Drops in 0d 1h 59m"))
        page.get_by_label("S", exact=True).check()
        expect(page.get_by_role("button", name="Reserve")).to_be_disabled()
    finally:
        early.stop()


POLL = {"title": "Help us stock the next drop", "contexts": ["product_page"],
        "product_ids": [PRODUCT], "questions": [{
            "id": "size", "text": "Which size should we stock more of?", "options": [
                {"id": "s", "label": "Small", "attributes": {"size": "S"}},
                {"id": "m", "label": "Medium", "attributes": {"size": "M"}},
                {"id": "l", "label": "Large", "attributes": {"size": "L"}}]}]}


def test_the_storefront_shows_a_poll_and_the_answer_is_stored(page: Page, shop: Shop) -> None:
    """The widget's one script tag: the poll in accessible form controls, the answer sent
    with the keyboard, thanks, and the answer counted."""
    defined = shop.rest("POST", "/v1/polls", json=POLL)
    assert defined.status_code == 201, defined.text
    poll_id = defined.json()["id"]
    storefront(page, shop, "pw-pollster")
    poll = page.locator(f'form[data-poll-id="{poll_id}"]')
    expect(poll).to_be_visible(timeout=10_000)
    expect(poll.get_by_role("group", name="Which size should we stock more of?")).to_be_visible()
    poll.get_by_role("button", name="Send my answer").click()
    expect(poll.get_by_role("status")).to_contain_text("Choose an answer first")
    poll.get_by_label("Medium").check()
    poll.get_by_role("button", name="Send my answer").press("Enter")
    expect(poll).to_contain_text("Thank you", timeout=5_000)
    expect(poll).to_have_attribute("data-answered", "true")
    page.screenshot(path=shop.screenshots / "storefront-poll.png", full_page=True)
    results = shop.rest("GET", f"/v1/polls/{poll_id}/results").json()
    assert results["respondents"] == 1, results
    assert results["questions"][0]["options"]["m"]["count"] == 1
    page.reload()  # answered: the widget shows nothing more
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=15_000)
    expect(page.locator("[data-instock-poll] form")).to_have_count(0)


def test_the_storefront_resumes_after_the_server_restarts(page: Page, shop: Shop) -> None:
    """Last: it replaces the module's server (on the same port)."""
    storefront(page, shop, "pw-patient")
    before = shop.available(sku("XL"))
    expect(size(page, "XL")).to_have_attribute("data-available", str(before))
    shop.server = run(shop.servers.restart(shop.server, **shop.env))
    expect(page.locator("[data-live-status]")).to_have_text("live", timeout=15_000)
    shop.adjust(sku("XL"), "receive", 1)
    expect(size(page, "XL")).to_have_attribute("data-available", str(before + 1),
                                                timeout=2_000)
