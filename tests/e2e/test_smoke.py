"""Smoke: the whole path a storefront walks, over real HTTP against a real server process."""

from __future__ import annotations

import itertools

import httpx

from instock.platform.auth import Role
from tests.e2e.harness import (
    PROBLEM_JSON,
    ServerFactory,
    assert_problem,
    audit_verify,
    client,
    create_location,
    create_product,
    fields_named,
    stock,
)


async def test_catalogue_stock_reserve_commit_release(servers: ServerFactory) -> None:
    server = await servers.start()
    async with client(server.base_url, Role.ADMIN) as admin, \
            client(server.base_url, Role.MERCHANDISER) as merch, \
            client(server.base_url, Role.INVENTORY) as inv, \
            client(server.base_url, Role.CUSTOMER, "alice") as alice:
        product = {"id": "hoodie", "title": "Drop hoodie", "brand": "North", "category": "tops",
                   "tags": ["drop"], "price": "89.90",
                   "variants": [{"sku": "hoodie-m", "attributes": {"size": "M"}},
                                {"sku": "hoodie-l", "attributes": {"size": "L"}}]}
        created = await merch.post("/v1/products", json=product)
        assert created.status_code == 201, created.text
        assert [v["sku"] for v in created.json()["variants"]] == ["hoodie-m", "hoodie-l"]
        fetched = await alice.get("/v1/products/hoodie")
        assert fetched.status_code == 200 and fetched.json()["title"] == "Drop hoodie"
        again = await merch.post("/v1/products", json=product)
        assert_problem(again, 409, "already-exists")

        location = await inv.post("/v1/locations", json={"id": "wh-1", "name": "Main",
                                                         "kind": "warehouse"})
        assert location.status_code == 201, location.text
        channel = await admin.get("/v1/channels/web")
        assert channel.status_code == 200 and "wh-1" in channel.json()["locations"]

        received = await inv.post("/v1/inventory/adjustments", json={
            "sku": "hoodie-m", "location": "wh-1", "kind": "receive", "quantity": 10,
            "reason": "PO-1"})
        assert received.status_code == 200, received.text
        level = received.json()
        assert (level["on_hand"], level["available"], level["reserved"]) == (10, 10, 0)
        etag = received.headers["etag"]
        assert etag == f'"{level["version"]}"'

        # Compare-and-swap: a stale If-Match is refused and changes nothing.
        stale = await inv.post("/v1/inventory/adjustments", headers={"If-Match": '"0"'}, json={
            "sku": "hoodie-m", "location": "wh-1", "kind": "damage", "quantity": 1})
        assert_problem(stale, 412, "precondition-failed")
        fresh = await inv.post("/v1/inventory/adjustments", headers={"If-Match": etag}, json={
            "sku": "hoodie-m", "location": "wh-1", "kind": "damage", "quantity": 1})
        assert fresh.status_code == 200, fresh.text
        assert (fresh.json()["on_hand"], fresh.json()["available"]) == (10, 9)

        # Reserve, commit.
        held = await alice.post("/v1/reservations",
                                json={"lines": [{"sku": "hoodie-m", "quantity": 3}]})
        assert held.status_code == 201, held.text
        reservation = held.json()
        assert reservation["status"] == "active" and reservation["customer_id"] == "alice"
        assert reservation["lines"] == [{"sku": "hoodie-m", "quantity": 3}]
        assert sum(a["quantity"] for a in reservation["allocations"]) == 3
        level = await stock(inv, "hoodie-m")
        assert (level["reserved"], level["available"]) == (3, 6)
        committed = await alice.post(f"/v1/reservations/{reservation['id']}/commit")
        assert committed.status_code == 200, committed.text
        assert committed.json()["status"] == "committed"
        level = await stock(inv, "hoodie-m")
        assert (level["reserved"], level["committed"], level["available"]) == (0, 3, 6)
        twice = await alice.post(f"/v1/reservations/{reservation['id']}/commit")
        assert_problem(twice, 409, "invalid-transition")

        # Reserve, extend, release: the stock comes back.
        held = await alice.post("/v1/reservations", json={
            "lines": [{"sku": "hoodie-m", "quantity": 2}], "ttl_seconds": 60})
        assert held.status_code == 201, held.text
        second = held.json()
        extended = await alice.post(f"/v1/reservations/{second['id']}/extend",
                                    json={"ttl_seconds": 600})
        assert extended.status_code == 200, extended.text
        assert extended.json()["expires_at"] > second["expires_at"]
        released = await alice.post(f"/v1/reservations/{second['id']}/release")
        assert released.status_code == 200 and released.json()["status"] == "released"
        level = await stock(inv, "hoodie-m")
        assert (level["reserved"], level["committed"], level["available"]) == (0, 3, 6)

        # More than there is: 409 naming the short line, nothing changes.
        too_many = await alice.post("/v1/reservations",
                                    json={"lines": [{"sku": "hoodie-m", "quantity": 7}]})
        problem = assert_problem(too_many, 409, "insufficient-stock")
        assert problem["short"] == [{"sku": "hoodie-m", "requested": 7, "available": 6}]
        assert (await stock(inv, "hoodie-m"))["version"] == level["version"]

        # The ledger: one hash chain, versions 1..n, ending at the level's version.
        ledger = await inv.get("/v1/ledger", params={"sku": "hoodie-m"})
        assert ledger.status_code == 200, ledger.text
        entries = ledger.json()["entries"]
        assert [e["version"] for e in entries] == list(range(1, level["version"] + 1))
        assert [e["kind"] for e in entries] == [
            "receive", "damage", "reserve", "commit", "reserve", "release"]
        for before, after in itertools.pairwise(entries):
            assert after["prev_hash"] == before["hash"]
        assert entries[2]["reference"] == reservation["id"]

        # Quarantined units are unsellable, and the totals say how many of those may come back.
        quarantined = await inv.post("/v1/inventory/adjustments", json={
            "sku": "hoodie-m", "location": "wh-1", "kind": "quarantine", "quantity": 2})
        assert quarantined.status_code == 200, quarantined.text
        level = await stock(inv, "hoodie-m")
        assert (level["unsellable"], level["quarantined"], level["available"]) == (3, 2, 4)
        assert [lv["quarantined"] for lv in level["locations"]] == [2]

    code, report = await audit_verify(servers.db)
    assert code == 0, report


async def test_bad_input_is_a_problem_naming_the_field(servers: ServerFactory) -> None:
    server = await servers.start()
    async with client(server.base_url, Role.ADMIN) as admin:
        await create_product(admin, "tee", ["tee-s"])
        await create_location(admin, "wh-1")
        before = await stock(admin, "tee-s")

        cases: list[tuple[str, dict[str, object], str]] = [
            ("/v1/reservations", {"lines": [{"sku": "tee-s", "quantity": 0}]},
             "lines[0].quantity"),
            ("/v1/reservations", {"lines": []}, "lines"),
            ("/v1/reservations", {"lines": [{"sku": "tee-s", "quantity": 1}],
                                  "ttl_seconds": -5}, "ttl_seconds"),
            ("/v1/inventory/adjustments", {"sku": "tee-s", "location": "wh-1",
                                           "kind": "steal", "quantity": 1}, "kind"),
            ("/v1/inventory/adjustments", {"sku": "tee-s", "location": "wh-1",
                                           "kind": "receive", "quantity": -1}, "quantity"),
            ("/v1/inventory/adjustments", {"sku": "nope", "location": "wh-1",
                                           "kind": "receive", "quantity": 1}, "sku"),
            ("/v1/inventory/adjustments", {"sku": "tee-s", "location": "nowhere",
                                           "kind": "receive", "quantity": 1}, "location"),
            ("/v1/products", {"id": "p2", "brand": "b", "category": "c", "price": "1",
                              "variants": [{"sku": "p2-a"}]}, "title"),
            ("/v1/products", {"id": "bad id with spaces", "title": "t", "brand": "b",
                              "category": "c", "price": "1", "variants": [{"sku": "x"}]}, "id"),
            ("/v1/locations", {"id": "wh-2", "name": "x", "kind": "moon"}, "kind"),
        ]
        for path, body, field in cases:
            response = await admin.post(path, json=body)
            problem = assert_problem(response, 422, "validation-error")
            assert field in fields_named(problem), (path, body, problem)
            assert field in problem["detail"], problem

        broken = await admin.post("/v1/reservations", content=b"{not json",
                                  headers={"content-type": "application/json"})
        assert_problem(broken, 422, "validation-error")

        # A change that would drive a bucket negative: a clear 409, and nothing changed.
        negative = await admin.post("/v1/inventory/adjustments", json={
            "sku": "tee-s", "location": "wh-1", "kind": "damage", "quantity": 5})
        assert_problem(negative, 409, "stock-rule-violated")
        unknown = await admin.get("/v1/inventory/no-such-sku")
        assert_problem(unknown, 404, "not-found")
        missing = await admin.get("/v1/reservations/00000000-0000-7000-8000-000000000000")
        assert_problem(missing, 404, "not-found")
        after = await stock(admin, "tee-s")
        assert after == before


async def test_auth_401_and_403(servers: ServerFactory) -> None:
    server = await servers.start()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as anon, \
            client(server.base_url, Role.ADMIN) as admin, \
            client(server.base_url, Role.CUSTOMER, "alice") as alice, \
            client(server.base_url, Role.CUSTOMER, "bob") as bob:
        await create_product(admin, "cap", ["cap-1"])
        await create_location(admin, "wh-1")
        await admin.post("/v1/inventory/adjustments", json={
            "sku": "cap-1", "location": "wh-1", "kind": "receive", "quantity": 5})

        for method, path in [("GET", "/v1/inventory/cap-1"), ("POST", "/v1/reservations"),
                             ("GET", "/v1/ledger"), ("POST", "/v1/products"),
                             ("GET", "/v1/products/cap")]:
            response = await anon.request(method, path, json={})
            assert_problem(response, 401, "unauthorized")
        forged = await anon.get("/v1/inventory/cap-1",
                                headers={"Authorization": "Bearer not.a.token"})
        assert_problem(forged, 401, "unauthorized")

        # Health and metrics need no token.
        for path in ("/livez", "/readyz", "/metrics"):
            assert (await anon.get(path)).status_code == 200, path

        # Roles: a customer cannot change the catalogue or read the ledger.
        assert_problem(await alice.post("/v1/products", json={}), 403, "forbidden")
        assert_problem(await alice.get("/v1/ledger"), 403, "forbidden")
        assert_problem(await alice.post("/v1/inventory/adjustments", json={
            "sku": "cap-1", "location": "wh-1", "kind": "receive", "quantity": 5}),
            403, "forbidden")

        # A customer acts only for itself.
        for_bob = await alice.post("/v1/reservations", json={
            "lines": [{"sku": "cap-1", "quantity": 1}], "customer_id": "bob"})
        assert_problem(for_bob, 403, "forbidden")
        bobs = await bob.post("/v1/reservations", json={"lines": [{"sku": "cap-1", "quantity": 1}]})
        assert bobs.status_code == 201, bobs.text
        bob_id = bobs.json()["id"]
        assert bobs.json()["customer_id"] == "bob"
        assert_problem(await alice.get(f"/v1/reservations/{bob_id}"), 403, "forbidden")
        for action in ("commit", "release", "extend"):
            assert_problem(await alice.post(f"/v1/reservations/{bob_id}/{action}"),
                           403, "forbidden")
        # ... and nothing happened to bob's hold.
        still = await bob.get(f"/v1/reservations/{bob_id}")
        assert still.status_code == 200 and still.json()["status"] == "active"
        assert still.json()["expires_at"] == bobs.json()["expires_at"]
        level = await stock(admin, "cap-1")
        assert (level["reserved"], level["available"]) == (1, 4)


async def test_idempotency_key_replays_and_rejects_reuse(servers: ServerFactory) -> None:
    server = await servers.start()
    async with client(server.base_url, Role.ADMIN) as admin, \
            client(server.base_url, Role.CUSTOMER, "carol") as carol:
        await create_product(admin, "sneaker", ["snk-42", "snk-43"])
        await create_location(admin, "wh-1")

        # An adjustment retried with its key is applied once.
        receipt = {"sku": "snk-42", "location": "wh-1", "kind": "receive", "quantity": 10}
        first = await admin.post("/v1/inventory/adjustments", json=receipt,
                                 headers={"Idempotency-Key": "po-77"})
        replay = await admin.post("/v1/inventory/adjustments", json=receipt,
                                  headers={"Idempotency-Key": "po-77"})
        assert first.status_code == replay.status_code == 200
        assert replay.json() == first.json()
        assert replay.headers.get("idempotent-replayed") == "true"
        assert (await stock(admin, "snk-42"))["on_hand"] == 10

        # A reservation retried with its key: the same reservation, not a second one.
        body = {"lines": [{"sku": "snk-42", "quantity": 2}]}
        key = {"Idempotency-Key": "checkout-1"}
        first = await carol.post("/v1/reservations", json=body, headers=key)
        assert first.status_code == 201, first.text
        carols_id = first.json()["id"]
        replay = await carol.post("/v1/reservations", json=body, headers=key)
        assert replay.status_code == 201
        assert replay.json() == first.json()
        assert replay.headers.get("idempotent-replayed") == "true"
        assert first.headers.get("idempotent-replayed") is None
        assert (await stock(admin, "snk-42"))["reserved"] == 2

        # The same key with another body is rejected and changes nothing.
        other = await carol.post("/v1/reservations", headers=key,
                                 json={"lines": [{"sku": "snk-42", "quantity": 3}]})
        assert_problem(other, 422, "idempotency-key-reused")
        assert (await stock(admin, "snk-42"))["reserved"] == 2

        # A failure is remembered too: the replay of a 409 is the same 409.
        short = {"lines": [{"sku": "snk-43", "quantity": 1}]}
        first = await carol.post("/v1/reservations", json=short, headers={"Idempotency-Key": "k2"})
        assert_problem(first, 409, "insufficient-stock")
        await admin.post("/v1/inventory/adjustments", json={
            "sku": "snk-43", "location": "wh-1", "kind": "receive", "quantity": 1})
        replay = await carol.post("/v1/reservations", json=short,
                                  headers={"Idempotency-Key": "k2"})
        assert replay.status_code == 409 and replay.json() == first.json()
        assert replay.headers["content-type"].startswith(PROBLEM_JSON)

        # Keys are per caller: another customer's same key is a new request.
        async with client(server.base_url, Role.CUSTOMER, "dave") as dave:
            theirs = await dave.post("/v1/reservations", json=body, headers=key)
        assert theirs.status_code == 201, theirs.text
        assert theirs.json()["id"] != carols_id
        assert theirs.json()["customer_id"] == "dave"
        assert (await stock(admin, "snk-42"))["reserved"] == 4

    code, report = await audit_verify(servers.db)
    assert code == 0, report
