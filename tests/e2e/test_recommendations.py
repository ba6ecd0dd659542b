"""Recommendations over real HTTP: a server process with its relay, bus and consumers.

Stock and products reach the recommender as events (inventory -> outbox -> bus), behaviour
through `POST /v1/events`; nothing here feeds the engine directly.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from instock.platform.auth import Role
from instock.workers import api_only_env
from tests.e2e.harness import (
    Database,
    ServerFactory,
    assert_problem,
    client,
    create_location,
    eventually,
    fields_named,
    receive,
)
from tests.e2e.test_event_backbone import BUSES, unique_bus
from tests.support import REDIS_URL

WH = "wh-1"


async def product(api: httpx.AsyncClient, product_id: str, *, brand: str = "Acme",
                  category: str = "hoodies", sizes: tuple[str, ...] = ("M",),
                  replenishable: bool = False, tags: tuple[str, ...] = ()) -> list[str]:
    """A product with one SKU per size; returns the SKUs."""
    skus = [f"{product_id}-{size}" for size in sizes]
    response = await api.post("/v1/products", json={
        "id": product_id, "title": f"{brand} {category} {product_id}", "brand": brand,
        "category": category, "tags": list(tags), "price": "40", "replenishable": replenishable,
        "variants": [{"sku": sku, "attributes": {"size": size}}
                     for sku, size in zip(skus, sizes, strict=True)]})
    assert response.status_code == 201, response.text
    return skus


async def shop(base_url: str, stock: dict[str, int], **products: dict[str, Any]) -> None:
    """Create products (name -> options) and put `stock` units of each SKU on hand."""
    async with client(base_url, Role.ADMIN) as admin:
        await create_location(admin, WH)
        for product_id, options in products.items():
            await product(admin, product_id, **options)
        for sku, units in stock.items():
            await receive(admin, sku, WH, units)


async def events(api: httpx.AsyncClient, *batch: dict[str, Any]) -> httpx.Response:
    return await api.post("/v1/events", json={"events": list(batch)})


async def recs(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/recommendations", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [item["product_id"] for item in body["items"]]


async def knows(api: httpx.AsyncClient, skus: list[str]) -> None:
    """Wait until the recommender heard of the products and their stock (all in stock), and
    content similarity has their attributes (shared a few times a second, not per event).

    Each poll is a new shopper: a list, once served, is cached for that shopper."""
    products = {s.rsplit("-", 1)[0] for s in skus}

    async def ready() -> bool | None:
        body = await recs(api, session_id=f"probe-{uuid.uuid4()}", limit=50)
        return True if products <= {item["product_id"] for item in body["items"]} else None

    async def similar() -> bool | None:
        body = await recs(api, session_id=f"probe-{uuid.uuid4()}", limit=50,
                          context=f"product:{min(products)}")
        return True if any(i["reason"]["code"] == "content" for i in body["items"]) else None
    await eventually(ready, "the recommender knows every product in stock", timeout=20)
    await eventually(similar, "content similarity knows the products", timeout=20)


async def test_shoppers_we_know_nothing_of_share_one_list_until_they_act(
        servers: ServerFactory, database: Database) -> None:
    server = await servers.start()
    names = [f"b{i}" for i in range(6)]
    await shop(server.base_url, {f"{n}-M": 5 for n in names},
               **{n: {"category": f"c{i % 2}"} for i, n in enumerate(names)})
    async with client(server.base_url, Role.SERVICE) as api:
        await knows(api, [f"{n}-M" for n in names])
        first = await recs(api, session_id="new-1", limit=4)
        second = await recs(api, session_id="new-2", limit=4)  # made once, for both of them
        assert first["cached"] is False and second["cached"] is True
        assert ids(second) == ids(first)
        assert (await events(api, {"type": "add_to_cart", "session_id": "new-2",
                                   "product_id": "b3"})).status_code == 202
        own = await recs(api, session_id="new-2", limit=4)
        assert own["cached"] is False  # known now: a list of their own


async def test_a_sold_out_item_leaves_every_cached_list_within_a_second(
        servers: ServerFactory, database: Database) -> None:
    server = await servers.start()
    names = [f"p{i}" for i in range(6)]
    await shop(server.base_url, {f"{n}-M": 1 if n == "p0" else 5 for n in names},
               **{n: {} for n in names})
    async with client(server.base_url, Role.SERVICE) as api, \
            client(server.base_url, Role.ADMIN) as admin:
        await knows(api, [f"{n}-M" for n in names])
        shoppers = [f"s-{i}" for i in range(5)]
        for shopper in shoppers:  # each shopper's list is cached with p0 on it
            first = await recs(api, session_id=shopper, limit=6)
            assert "p0" in ids(first)
            assert (await recs(api, session_id=shopper, limit=6))["cached"] is True
        response = await admin.post("/v1/inventory/adjustments", json={
            "sku": "p0-M", "location": WH, "kind": "damage", "quantity": 1,
            "reason": "last one damaged"})
        assert response.status_code in (200, 201), response.text

        async def gone() -> bool | None:
            lists = [await recs(api, session_id=s, limit=6) for s in shoppers]
            return True if all("p0" not in ids(body) for body in lists) else None
        await eventually(gone, "p0 gone from every list", timeout=1.5)


async def similar_to(api: httpx.AsyncClient, product_id: str, others: set[str]) -> bool | None:
    """True once `others` are all among the products content similarity finds like this one."""
    body = await recs(api, session_id=f"probe-{uuid.uuid4()}", limit=50,
                      context=f"product:{product_id}")
    found = {i["product_id"] for i in body["items"] if i["reason"]["code"] == "content"}
    return True if others <= found else None


async def test_cold_start_from_preference_answers(servers: ServerFactory) -> None:
    server = await servers.start()
    catalogue = {f"a{i}": {"brand": "Acme"} for i in range(4)}
    catalogue |= {f"n{i}": {"brand": "Nova", "category": "sneakers"} for i in range(4)}
    await shop(server.base_url, {f"{p}-M": 3 for p in catalogue}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api:
        await knows(api, [f"{p}-M" for p in catalogue])
        # knows() sees content similarity hold some attributes; the answer needs every Nova's
        # (they are shared in batches: a local CI run once asked between two).
        await eventually(lambda: similar_to(api, "n0", {"n1", "n2", "n3"}),
                         "content similarity knows every Nova", timeout=20)
        answer = {"type": "preference", "session_id": "new-visitor", "attribute": "brand",
                  "value": "Nova"}
        assert (await events(api, answer)).status_code == 202
        body = await recs(api, session_id="new-visitor", limit=4)
        assert ids(body)[:2] and all(p.startswith("n") for p in ids(body)[:2]), body
        assert body["items"][0]["reason"]["code"] == "preference"
        other = await recs(api, session_id="someone-else", limit=4)
        assert ids(other) != ids(body)  # the answer, not the catalogue order, put Nova first


async def test_a_session_merges_into_its_customer_on_login(
        servers: ServerFactory, database: Database) -> None:
    server = await servers.start()
    catalogue = {f"h{i}": {"category": "hoodies"} for i in range(3)}
    catalogue |= {f"k{i}": {"category": "caps", "brand": "Kappa"} for i in range(3)}
    await shop(server.base_url, {f"{p}-M": 3 for p in catalogue}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api:
        await knows(api, [f"{p}-M" for p in catalogue])
        views = [{"type": "view", "session_id": "anon-1", "product_id": p} for p in ("k0", "k1")]
        assert (await events(api, *views)).status_code == 202
        login = {"type": "view", "session_id": "anon-1", "customer_id": "cust-9",
                 "product_id": "k1"}
        assert (await events(api, login)).status_code == 202
        stored = await database.column(
            "SELECT customer_id FROM behaviour_events WHERE session_id = 'anon-1'")
        assert stored == ["cust-9"] * 3
        body = await recs(api, customer_id="cust-9", limit=3)
        assert set(ids(body)[:3]) == {"k0", "k1", "k2"}, body  # the session's caps first
        # later events of the session alone still reach the customer's history
        assert (await events(api, {"type": "view", "session_id": "anon-1",
                                   "product_id": "h0"})).status_code == 202
        assert await database.scalar(
            "SELECT customer_id FROM behaviour_events WHERE product_id = 'h0'") == "cust-9"
        mine = await recs(api, customer_id="cust-9", limit=3)
        assert ids(await recs(api, session_id="anon-1", limit=3)) == ids(mine)
    # a process started after the login knows the session as the customer's too
    later = await servers.start()
    async with client(later.base_url, Role.SERVICE) as api:
        await knows(api, [f"{p}-M" for p in catalogue])
        body = await recs(api, session_id="anon-1", limit=3)
        assert set(ids(body)[:3]) & {"k0", "k1", "k2"} and ids(body) == ids(
            await recs(api, customer_id="cust-9", limit=3)), body


async def test_size_preference_and_bought_items(servers: ServerFactory) -> None:
    server = await servers.start()
    catalogue: dict[str, dict[str, Any]] = {
        "tee": {"sizes": ("S", "M", "L"), "category": "tees"},
        "crew": {"sizes": ("S", "M"), "category": "tees"},
        "balm": {"sizes": ("one",), "category": "cosmetics", "replenishable": True},
        "lamp": {"sizes": ("one",), "category": "home"}}
    stock = {"tee-S": 2, "tee-M": 2, "tee-L": 9, "crew-S": 9, "crew-M": 0, "balm-one": 9,
             "lamp-one": 9}
    await shop(server.base_url, {k: v for k, v in stock.items() if v}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api:
        await knows(api, ["tee-M", "crew-S", "balm-one", "lamp-one"])
        assert (await events(
            api, {"type": "preference", "customer_id": "c1", "attribute": "size", "value": "M"},
            {"type": "purchase", "customer_id": "c1", "product_id": "balm", "sku": "balm-one"},
            {"type": "purchase", "customer_id": "c1", "product_id": "lamp", "sku": "lamp-one"},
        )).status_code == 202
        body = await recs(api, customer_id="c1", limit=10)
        by_id = {item["product_id"]: item for item in body["items"]}
        assert by_id["tee"]["sku"] == "tee-M" and by_id["tee"]["in_your_size"] is True
        assert by_id["crew"]["in_your_size"] is False  # M sold out: another size, ranked lower
        assert ids(body).index("tee") < ids(body).index("crew")
        assert "lamp" not in by_id  # bought, not replenished
        assert "balm" in by_id  # cosmetics are bought again


async def test_an_event_changes_the_list_at_once_and_bad_events_change_nothing(
        servers: ServerFactory, database: Database) -> None:
    server = await servers.start()
    catalogue = {f"x{i}": {"category": f"cat{i % 3}", "brand": f"brand{i % 3}"}
                 for i in range(9)}
    await shop(server.base_url, {f"{p}-M": 3 for p in catalogue}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api:
        await knows(api, [f"{p}-M" for p in catalogue])
        before = await recs(api, session_id="s1", limit=4)
        assert (await recs(api, session_id="s1", limit=4))["cached"]
        assert (await events(api, {"type": "add_to_cart", "session_id": "s1",
                                   "product_id": "x5"})).status_code == 202
        after = await recs(api, session_id="s1", limit=4)
        assert after["cached"] is False and ids(after) != ids(before)
        cart = await recs(api, session_id="s1", context="cart", limit=4)
        assert "x5" not in ids(cart)
        page = await recs(api, session_id="s1", context="product:x2", limit=4)
        assert "x2" not in ids(page)
        assert len({i["brand"] for i in page["items"]}) >= 2  # not one brand all the way down

        count = await database.scalar("SELECT count(*) FROM behaviour_events")
        for bad, field in (
                ({"type": "view", "session_id": "s1"}, "events[0]"),
                ({"type": "teleport", "session_id": "s1", "product_id": "x1"}, "events[0].type"),
                ({"type": "preference", "session_id": "s1", "attribute": "mood",
                  "value": "x"}, "events[0].attribute"),
                ({"type": "view", "product_id": "x1"}, "events[0]")):
            response = await events(api, bad, {"type": "view", "session_id": "s1",
                                               "product_id": "x1"})
            problem = assert_problem(response, 422, "validation-error")
            assert any(f.startswith(field) for f in fields_named(problem)), problem
        assert await database.scalar("SELECT count(*) FROM behaviour_events") == count
        missing = await api.get("/v1/recommendations", params={"context": "home"})
        assert_problem(missing, 422, "validation-error")


@pytest.mark.parametrize("bus_url", BUSES)
@pytest.mark.parametrize("layout", ["each-api-does-all", "worker-beside"])
async def test_two_processes_share_the_lists_and_hear_every_change(
        servers: ServerFactory, database: Database, bus_url: str, layout: str) -> None:
    """Lists cached in Redis, events and stock heard over a real bus by both processes; with
    a worker beside, its relay and consumers carry every change the API processes make."""
    env = {"INSTOCK_BUS_URL": unique_bus(bus_url), "INSTOCK_REDIS_URL": REDIS_URL or ""}
    # a fleet's layout: API processes that only serve, `instock worker all` doing the rest
    api_env = {**env, **api_only_env()} if layout == "worker-beside" else env
    first, second = await servers.start_many(2, **api_env)
    worker = servers.worker("worker", "all", **env) if layout == "worker-beside" else None
    names = [f"q{i}" for i in range(6)]
    await shop(first.base_url, {f"{n}-M": 1 if n == "q0" else 5 for n in names},
               **{n: {"category": f"c{i % 2}"} for i, n in enumerate(names)})
    async with client(first.base_url, Role.SERVICE) as one, \
            client(second.base_url, Role.SERVICE) as two, \
            client(first.base_url, Role.ADMIN) as admin:
        for api in (one, two):
            await knows(api, [f"{n}-M" for n in names])
        assert "q0" in ids(await recs(one, session_id="shared", limit=6))
        assert (await recs(two, session_id="shared", limit=6))["cached"] is True  # via Redis
        # an event sent to one process changes the list the other one serves
        assert (await events(one, {"type": "add_to_cart", "session_id": "shared",
                                   "product_id": "q3"})).status_code == 202

        async def learnt() -> bool | None:
            return True if "q3" not in ids(await recs(two, session_id="shared", context="cart",
                                                      limit=6)) else None
        await eventually(learnt, "the second process knows what is in the cart", timeout=1.5)
        response = await admin.post("/v1/inventory/adjustments", json={
            "sku": "q0-M", "location": WH, "kind": "damage", "quantity": 1, "reason": "e2e"})
        assert response.status_code in (200, 201), response.text

        async def gone() -> bool | None:
            lists = [await recs(api, session_id="shared", limit=6) for api in (one, two)]
            return True if all("q0" not in ids(body) for body in lists) else None
        await eventually(gone, "q0 gone from both processes' lists", timeout=1.5)

    async def projected() -> bool | None:  # the recs-availability consumer ran somewhere
        return True if await database.scalar(
            "SELECT available FROM item_availability WHERE sku = 'q0-M'") == 0 else None
    await eventually(projected, "the stock projection shows q0 sold out", timeout=10)
    if worker is not None:
        assert worker.alive(), worker.log_tail()

        async def relayed() -> bool | None:  # the API processes run no relay
            return True if await database.scalar(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0 else None
        await eventually(relayed, "the worker's relay published every event", timeout=10)


async def test_an_experiment_serves_stable_variants_and_attributes_conversions(
        servers: ServerFactory) -> None:
    server = await servers.start()
    catalogue = {f"e{i}": {"category": f"c{i % 3}"} for i in range(6)}
    await shop(server.base_url, {f"{p}-M": 5 for p in catalogue}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api, \
            client(server.base_url, Role.MERCHANDISER) as staff:
        await knows(api, [f"{p}-M" for p in catalogue])
        created = await staff.post("/v1/experiments", json={
            "name": "hybrid vs popularity", "unit": "session", "variants": [
                {"name": "control", "share": 0.5, "config": {"model": "hybrid"}},
                {"name": "popular", "share": 0.5, "config": {"model": "popularity"}}]})
        assert created.status_code == 201, created.text
        experiment = created.json()["id"]
        assert (await staff.post(f"/v1/experiments/{experiment}/start")).status_code == 200

        async def assigned() -> dict[str, str] | None:
            served = {s: (await recs(api, session_id=s, limit=3))["experiment"]
                      for s in (f"v{i}" for i in range(40))}
            if any(e is None for e in served.values()):
                return None  # the running experiment reaches the engine within ~1 s
            return {s: e["variant"] for s, e in served.items()}
        variants = await eventually(assigned, "the experiment serves its variants", timeout=5)
        assert set(variants.values()) == {"control", "popular"}
        again = {s: (await recs(api, session_id=s, limit=3))["experiment"]["variant"]
                 for s in variants}
        assert again == variants  # the same subject always gets the same variant

        clickers = [s for s in variants if variants[s] == "popular"][:3]
        for s in clickers:
            assert (await events(api, {"type": "click", "session_id": s,
                                       "product_id": "e1"})).status_code == 202

        shown_popular = sum(v == "popular" for v in variants.values())

        async def attributed() -> dict[str, Any] | None:
            # exposures are written in batches (every FLUSH_EVERY), not with the list
            body = (await staff.get(f"/v1/experiments/{experiment}/results")).json()
            by_name = {v["name"]: v for v in body["variants"]}
            popular = by_name["popular"]
            done = (popular["click"]["converted"] == len(clickers)
                    and popular["exposed"] >= shown_popular)
            return body if done else None
        results = await eventually(attributed, "exposures logged, clicks attributed",
                                   timeout=15)
        by_name = {v["name"]: v for v in results["variants"]}
        assert by_name["popular"]["exposed"] == shown_popular  # each subject once
        assert by_name["control"]["click"]["converted"] == 0
        assert by_name["popular"]["click"]["p_value"] is not None
