"""A poll answer as cold start, over real HTTP: a server process with its relay, bus, consumers
and recommender. The answer goes out as `poll.answered.v1`, recommendations' consumer records
its attributes as preference answers, and the recommender hears them from the bus: nothing here
feeds the engine directly."""

from __future__ import annotations

from typing import Any

import httpx

from instock.platform.auth import Role
from tests.e2e.harness import ServerFactory, client, eventually
from tests.e2e.test_recommendations import ids, knows, recs, shop

BRANDS = {"title": "Who do you wear?", "contexts": ["product_page", "sold_out"], "questions": [
    {"id": "brand", "text": "Your favourite brand?", "options": [
        {"id": "acme", "label": "Acme", "attributes": {"brand": "Acme"}},
        {"id": "nova", "label": "Nova", "attributes": {"brand": "Nova"}}]}]}
DEADLINE = 1.0  # seconds: the promise of issue 19 (cold start within a second)


async def test_an_answer_changes_a_new_shoppers_recommendations_within_a_second(
        servers: ServerFactory) -> None:
    server = await servers.start()
    catalogue = {f"a{i}": {"brand": "Acme"} for i in range(4)}
    catalogue |= {f"n{i}": {"brand": "Nova", "category": "sneakers"} for i in range(4)}
    await shop(server.base_url, {f"{p}-M": 3 for p in catalogue}, **catalogue)
    async with client(server.base_url, Role.SERVICE) as api, \
            client(server.base_url, Role.MERCHANDISER) as merchandiser, \
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as anonymous:
        await knows(api, [f"{p}-M" for p in catalogue])
        defined = await merchandiser.post("/v1/polls", json=BRANDS)
        assert defined.status_code == 201, defined.text
        poll_id = defined.json()["id"]
        before = await recs(api, session_id="poll-visitor", limit=4)
        assert not all(p.startswith("n") for p in ids(before)[:2]), before
        shown = await anonymous.get("/v1/polls/next", params={
            "session_id": "poll-visitor", "context": "sold_out"})
        assert shown.status_code == 200 and shown.json()["id"] == poll_id
        answered = await anonymous.post(f"/v1/polls/{poll_id}/answers", json={
            "session_id": "poll-visitor",
            "answers": [{"question_id": "brand", "option_id": "nova"}]})
        assert answered.status_code == 201, answered.text

        async def nova_first() -> dict[str, object] | None:
            body = await recs(api, session_id="poll-visitor", limit=4)
            top = ids(body)[:2]
            return body if top and all(p.startswith("n") for p in top) else None
        body = await eventually(nova_first, "the answer reorders the new shopper's list",
                                timeout=DEADLINE)
        assert body["items"][0]["reason"]["code"] == "preference"  # type: ignore[index]
        results = await merchandiser.get(f"/v1/polls/{poll_id}/results")
        assert results.json()["questions"][0]["options"]["nova"]["count"] == 1
        again = await anonymous.get("/v1/polls/next", params={
            "session_id": "poll-visitor", "context": "sold_out"})
        assert again.status_code == 204


async def test_a_customers_answer_joins_the_profile_and_profile_sizes_reach_recommendations(
        servers: ServerFactory) -> None:
    server = await servers.start()
    catalogue: dict[str, dict[str, Any]] = {
        "tee": {"sizes": ("S", "M", "L"), "category": "tees"},
        "crew": {"sizes": ("S", "M"), "category": "tees"}}
    await shop(server.base_url, {"tee-S": 5, "tee-M": 5, "tee-L": 5, "crew-S": 5, "crew-M": 5},
               **catalogue)
    async with client(server.base_url, Role.MERCHANDISER) as merchandiser, \
            client(server.base_url, Role.CUSTOMER, "cus-poll") as customer, \
            client(server.base_url, Role.SERVICE) as api:
        await knows(api, ["tee-M", "crew-S"])
        poll_id = (await merchandiser.post("/v1/polls", json=BRANDS)).json()["id"]
        assert (await customer.put("/v1/customers/cus-poll", json={
            "sizes": {"tees": "L"}})).status_code == 200
        answered = await customer.post(f"/v1/polls/{poll_id}/answers", json={
            "session_id": "sess-cus-poll",
            "answers": [{"question_id": "brand", "option_id": "acme"}]})
        assert answered.status_code == 201, answered.text

        async def merged() -> dict[str, Any] | None:
            profile: dict[str, Any] = (await customer.get("/v1/customers/cus-poll")).json()
            return profile if profile["preferences"] == {"brand": ["Acme"]} else None
        profile = await eventually(merged, "the answer joins the profile", timeout=10)
        assert profile["sizes"] == {"tees": "L"}

        async def in_size() -> dict[str, Any] | None:  # the profile's size, by its event
            body = await recs(api, customer_id="cus-poll", limit=5)
            tee = next((i for i in body["items"] if i["product_id"] == "tee"), None)
            return body if tee and tee["sku"] == "tee-L" and tee["in_your_size"] else None
        body = await eventually(in_size, "the profile's size reaches recommendations",
                                timeout=10)
        crew = next(i for i in body["items"] if i["product_id"] == "crew")
        assert crew["in_your_size"] is False  # no L: another size, shown as such
