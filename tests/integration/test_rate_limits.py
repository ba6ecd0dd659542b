"""Rate limits in the app (issue 20): what a client over a limit is told, that a refusal changes
nothing, whose address counts behind a proxy, limits off, and a counter store that is down.

Limits here are per hour, so a run never straddles two windows of the in-memory store (whose
windows are aligned to the clock): the counts asserted are exact.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from instock.app import create_app
from instock.platform.auth import Role, TokenAuthority
from instock.platform.ratelimit import OnStoreDown, Policy, RateLimiter, RateLimitMiddleware, Who
from tests.e2e.harness import create_location, create_product, receive
from tests.support import REDIS_URL, TEST_SECRET, make_settings

LIMITS = {"anonymous": "5/hour", "reservations": "3/hour"}
Client = Callable[..., Any]


@pytest.fixture
async def make_api(database_url: str, tmp_path: Path
                   ) -> AsyncIterator[Callable[..., Any]]:
    """An in-process app with the given settings; its clients all come from 127.0.0.1."""
    opened: list[httpx.AsyncClient] = []

    async def make(**settings: Any) -> tuple[Any, httpx.AsyncClient]:
        app = create_app(make_settings(database_url, tmp_path, **settings))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        opened.append(http)
        return app, http

    yield make
    for http in opened:
        await http.aclose()


def bearer(app: Any, role: Role, subject: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.tokens.mint(role, subject)}"}


def assert_rate_limited(response: httpx.Response, policy: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/rate-limited") and problem["policy"] == policy
    assert int(response.headers["retry-after"]) >= 1
    assert re.fullmatch(rf'"{policy}";r=0;t=\d+', response.headers["ratelimit"])


async def test_an_anonymous_client_over_its_limit_is_told_when_to_come_back(
        make_api: Client) -> None:
    _, http = await make_api(rate_limit_overrides=LIMITS)
    for left in (4, 3, 2, 1, 0):
        response = await http.get("/v1/products/p-1")
        assert response.status_code == 401, response.text  # counted all the same
        assert response.headers["ratelimit-policy"] == '"anonymous";q=5;w=3600'
        assert re.fullmatch(rf'"anonymous";r={left};t=\d+', response.headers["ratelimit"])
    refused = await http.get("/v1/products/p-1")
    assert_rate_limited(refused, "anonymous")
    # A second of the hour is not enough: the refused client must wait for the window to move.
    assert int(refused.headers["retry-after"]) > 60
    # Probes and static files are never counted, nor refused.
    assert (await http.get("/livez")).status_code == 200
    assert "ratelimit" not in (await http.get("/livez")).headers


async def test_a_customer_is_limited_per_sku_and_a_refused_attempt_reserves_nothing(
        make_api: Client) -> None:
    app, http = await make_api(rate_limit_overrides=LIMITS)
    admin = bearer(app, Role.ADMIN)
    http.headers.update(admin)
    await create_product(http, "drop", ["hot-1", "hot-2"])
    await create_location(http, "wh-1")
    await receive(http, "hot-1", "wh-1", 100)
    await receive(http, "hot-2", "wh-1", 100)
    del http.headers["Authorization"]
    bot, person = bearer(app, Role.CUSTOMER, "bot-1"), bearer(app, Role.CUSTOMER, "person-1")

    async def reserve(sku: str, who: dict[str, str]) -> httpx.Response:
        return await http.post("/v1/reservations", headers=who,
                               json={"lines": [{"sku": sku, "quantity": 1}]})

    statuses = [(await reserve("hot-1", bot)).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]
    refused = await reserve("hot-1", bot)
    assert_rate_limited(refused, "reservations")
    # Through a cart too: the same counter (the same customer, the same SKU).
    cart = await http.post("/v1/carts", headers=bot, json={"channel": "web"})
    assert cart.status_code == 201, cart.text
    added = await http.post(f"/v1/carts/{cart.json()['id']}/items", headers=bot,
                            json={"sku": "hot-1", "quantity": 1})
    assert_rate_limited(added, "reservations")
    level = (await http.get("/v1/inventory/hot-1", headers=admin)).json()
    assert level["reserved"] == 3  # the refused attempts held nothing
    # The same customer on another SKU, and another customer on this one, are counted apart.
    assert (await reserve("hot-2", bot)).status_code == 201
    assert (await reserve("hot-1", person)).status_code == 201
    # Staff are not counted per SKU (they reserve for marketplaces and phone orders).
    assert [(await reserve("hot-1", admin)).status_code for _ in range(5)] == [201] * 5


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(
        make_api: Client, trusted: str) -> None:
    _, http = await make_api(rate_limit_overrides=LIMITS, trusted_proxies=trusted)
    statuses = [(await http.get("/v1/products/p-1",
                                headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
                for i in range(8)]
    if trusted:  # eight clients, one request each
        assert statuses == [401] * 8
    else:  # one client (the peer) pretending to be eight
        assert statuses == [401] * 5 + [429] * 3


async def test_limits_off_count_nothing(make_api: Client) -> None:
    _, http = await make_api(rate_limit_overrides=LIMITS, rate_limits="off")
    responses = [await http.get("/v1/products/p-1") for _ in range(8)]
    assert [r.status_code for r in responses] == [401] * 8
    assert all("ratelimit" not in r.headers for r in responses)


def store_down_app(storage_url: str) -> Starlette:
    """Two routes behind the real middleware: one counted by a policy that fails open, one by
    a policy that fails closed."""
    async def ok(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    limiter = RateLimiter([
        Policy("browse", "2/hour", frozenset({Who.ANYONE}), (("GET", "/browse"),),
               on_store_down=OnStoreDown.OPEN),
        Policy("credentials", "2/hour", frozenset({Who.ANYONE}), (("GET", "/token"),),
               on_store_down=OnStoreDown.CLOSED)], storage_url,
        prefix=f"instock:test:{uuid.uuid4()}")
    app = Starlette(routes=[Route("/browse", ok), Route("/token", ok)])
    app.add_middleware(RateLimitMiddleware, limiter=limiter,
                       tokens=TokenAuthority(TEST_SECRET, "instock", 60))
    return app


async def test_a_store_that_is_down_fails_each_policy_open_or_closed() -> None:
    # Nothing listens on port 1: every call to the store fails at once.
    app = store_down_app("redis://127.0.0.1:1/0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        browse = [await http.get("/browse") for _ in range(3)]
        assert [r.status_code for r in browse] == [200] * 3  # open: served, uncounted
        assert all("ratelimit" not in r.headers for r in browse)
        token = await http.get("/token")
        assert token.status_code == 503
        assert token.json()["type"].endswith("/rate-limit-unavailable")
        assert token.headers["retry-after"] == "1"


@pytest.mark.skipif(REDIS_URL is None, reason="needs INSTOCK_TEST_REDIS_URL")
async def test_the_same_policies_count_in_redis_when_it_is_up() -> None:
    assert REDIS_URL is not None
    app = store_down_app(REDIS_URL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        assert [(await http.get("/token")).status_code for _ in range(3)] == [200, 200, 429]
        assert [(await http.get("/browse")).status_code for _ in range(3)] == [200, 200, 429]


async def test_graphql_is_counted_by_query_cost(make_api: Client) -> None:
    app, http = await make_api(rate_limit_overrides={"graphql": "200/hour"})
    http.headers.update(bearer(app, Role.ADMIN))
    await create_product(http, "tee", ["tee-1"])
    shopper = bearer(app, Role.CUSTOMER, "shopper-1")
    page = """query($n: Int!) { products(first: $n) { edges { node { id variants { sku } } } } }"""

    async def ask(n: int, who: dict[str, str]) -> httpx.Response:
        return await http.post("/graphql", json={"query": page, "variables": {"n": n}},
                               headers=who)

    first = await ask(40, shopper)
    cost = first.json()["extensions"]["cost"]["requested"]
    assert first.status_code == 200 and cost > 50, (first.json(), first.headers)
    assert re.search(rf'"graphql";r={200 - cost};t=\d+', first.headers["ratelimit"])
    # The same page again costs more than is left: refused, as a 429 whose error carries the
    # problem, and the query does not run.
    refused = await ask(40, shopper)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    [error] = refused.json()["errors"]
    assert error["extensions"]["type"].endswith("/rate-limited")
    assert refused.json().get("data") is None
    # A cheaper query still fits in what is left (a refusal spent nothing).
    small = await ask(1, shopper)
    assert small.status_code == 200, small.json()
    assert small.json()["extensions"]["cost"]["requested"] < 200 - cost
    # Another customer has its own budget.
    assert (await ask(1, bearer(app, Role.CUSTOMER, "shopper-2"))).status_code == 200
