"""Outbound calls cannot reach inside (issue 20): webhook subscribers' URLs and marketplaces'
base URLs are refused on save, and again at every delivery, with the reason recorded.

Names are given addresses the test controls (`outbound_hosts`, or a resolver it flips): no
DNS server is asked and no traffic leaves this machine. The only receiver listens on
127.0.0.1 and must hear nothing when loopback is not allowed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from instock.app import create_app
from instock.channels.connector import ConnectorError, HttpMarketplace
from instock.platform.auth import Role
from instock.platform.outbound import OutboundGuard, PinnedTransport
from instock.webhooks.service import WebhooksService
from tests.support import make_settings
from tests.webhook_receiver import Receiver

PUBLIC = "93.184.216.34"
SECRET = "whsec_outbound-guard-test-secret"


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app as deployed: loopback not allowed; one name pinned to a private address."""
    app = create_app(make_settings(database_url, tmp_path, outbound_allow_loopback=False,
                                   outbound_hosts={"inside.test": "10.0.0.1"}))
    token = app.state.tokens.mint(Role.ADMIN, "admin-1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield app, http


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://inside.test/hook", "inside.test (10.0.0.1) is a private"),
    (f"http://{PUBLIC}:6379/", "port 6379 is not allowed"),
])
async def test_a_subscription_to_an_inside_url_is_refused_and_nothing_is_stored(
        api: tuple[Any, httpx.AsyncClient], url: str, reason: str) -> None:
    _, http = api
    response = await http.post("/v1/webhooks/subscriptions",
                               json={"url": url, "event_types": ["inventory.*"]})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "url" and reason in error["reason"], error
    assert (await http.get("/v1/webhooks/subscriptions")).json() == []
    # Moving a subscription there is refused the same way.
    made = await http.post("/v1/webhooks/subscriptions",
                           json={"url": f"https://{PUBLIC}/hook", "event_types": ["inventory.*"]})
    assert made.status_code == 201, made.text
    moved = await http.patch(f"/v1/webhooks/subscriptions/{made.json()['id']}", json={"url": url})
    assert moved.status_code == 422 and moved.json()["errors"][0]["field"] == "url"
    kept = await http.get(f"/v1/webhooks/subscriptions/{made.json()['id']}")
    assert kept.json()["url"] == f"https://{PUBLIC}/hook"


async def test_a_marketplace_base_url_inside_is_refused_on_save(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    _, http = api
    response = await http.put("/v1/channels/web/connection", json={
        "base_url": "http://169.254.169.254", "api_key": "k",
        "webhook_secret": "whsec_marketplace-test-secret-long"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "base_url"
    assert "link-local" in response.json()["errors"][0]["reason"]


async def test_a_marketplace_call_to_a_name_now_inside_is_never_sent() -> None:
    connector = HttpMarketplace(
        "http://inside.test", "key", attempts=3,
        transport=PinnedTransport(OutboundGuard(hosts={"inside.test": "10.0.0.1"})))
    try:
        with pytest.raises(ConnectorError, match="private") as refused:
            await connector.push_quantity("tee-m", 3)
        assert refused.value.retryable is False  # asking again will not make it public
    finally:
        await connector.aclose()


async def test_a_name_that_turns_inside_is_refused_at_delivery_with_a_reason(
        api: tuple[Any, httpx.AsyncClient], receiver: Receiver) -> None:
    app, _ = api
    answers = {"flip.test": [PUBLIC]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    # The receiver's own port is allowed: only where the name points changes.
    webhooks = WebhooksService(app.state.webhooks.db, guard=OutboundGuard(
        ports=frozenset({receiver.port}), resolver=resolver))
    url = f"http://flip.test:{receiver.port}/hook"
    subscription = await webhooks.subscribe(url, ["webhook.*"], SECRET)  # public now: saved
    answers["flip.test"] = ["127.0.0.1"]  # DNS rebinding: the name now points inside
    delivery = await webhooks.ping(subscription.id)
    [attempt] = delivery.log
    assert attempt.status_code is None
    assert attempt.error == "refused: flip.test (127.0.0.1) is a loopback address"
    assert receiver.received == []  # nothing was sent


async def test_a_redirect_is_recorded_and_not_followed(
        api: tuple[Any, httpx.AsyncClient], receiver: Receiver) -> None:
    app, _ = api
    # Loopback allowed, so the receiver can be called; it answers with a redirect to the
    # cloud metadata address.
    webhooks = WebhooksService(app.state.webhooks.db, guard=OutboundGuard(allow_loopback=True))
    subscription = await webhooks.subscribe(receiver.url("/moved"), ["webhook.*"], SECRET)
    receiver.answers["/moved"] = 302
    receiver.locations["/moved"] = "http://169.254.169.254/latest/meta-data/"
    delivery = await webhooks.ping(subscription.id)
    [attempt] = delivery.log
    assert (attempt.status_code, attempt.error) == (302, "HTTP 302: redirects are not followed")
    assert [r.path for r in receiver.received] == ["/moved"]
