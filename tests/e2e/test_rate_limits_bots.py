"""Bots in a drop (issue 20): 200 concurrent clients with 20 customer tokens hammer
reservations of one SKU on two API processes that share their counters in Redis, while people
with tokens of their own reserve in the same run.

Each bot customer gets at most its limit of attempts through, counted across both processes;
every other attempt is a 429 problem with Retry-After; every person reserves; and the stock
holds exactly what was answered 201.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict

import httpx
import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    ServerFactory,
    bearer,
    client,
    create_location,
    create_product,
    receive,
    stock,
)
from tests.support import REDIS_URL

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REDIS_URL is None, reason="needs INSTOCK_TEST_REDIS_URL")]

BOT_CLIENTS, BOT_TOKENS, ATTEMPTS_EACH = 200, 20, 5
PEOPLE = 20
LIMIT = 4  # reservation attempts per customer per SKU per minute, in this test


async def test_bots_get_their_limit_across_two_processes_and_people_still_reserve(
        servers: ServerFactory) -> None:
    assert REDIS_URL is not None
    # The limit is per minute and the window opens at a customer's first attempt (Redis), so
    # the run, a few seconds long, sits inside one window: the counts are exact. The store's
    # timeout is long: a count that waits past it fails open (a 201 over the limit, by
    # design), and a loaded machine can hold 200 requests' Redis answers that long.
    urls = [s.base_url for s in await servers.start_many(
        2, INSTOCK_REDIS_URL=REDIS_URL, INSTOCK_RATE_LIMIT_STORE_TIMEOUT_SECONDS="5",
        INSTOCK_RATE_LIMIT_OVERRIDES=json.dumps({"reservations": f"{LIMIT}/minute"}))]
    run = uuid.uuid4().hex[:8]  # fresh counters in the shared Redis
    sku = f"drop-{run}"
    async with client(urls[0], Role.ADMIN) as admin:
        await create_product(admin, f"p-{run}", [sku])
        await create_location(admin, "wh-1")
        await receive(admin, sku, "wh-1", 1000)
    bots = [f"bot-{run}-{i}" for i in range(BOT_TOKENS)]
    answers: dict[str, list[httpx.Response]] = defaultdict(list)
    body = {"lines": [{"sku": sku, "quantity": 1}]}
    https = [httpx.AsyncClient(base_url=url, timeout=60,
                               limits=httpx.Limits(max_connections=110)) for url in urls]

    async def bot(i: int) -> None:
        who = bots[i % BOT_TOKENS]
        for attempt in range(ATTEMPTS_EACH):  # each client alternates between the processes
            answers[who].append(await https[(i + attempt) % 2].post(
                "/v1/reservations", json=body, headers=bearer(Role.CUSTOMER, who)))

    async def person(i: int) -> None:
        await asyncio.sleep(0.01 * i)  # arriving while the bots hammer
        who = f"person-{run}-{i}"
        answers[who].append(await https[i % 2].post(
            "/v1/reservations", json=body, headers=bearer(Role.CUSTOMER, who)))

    try:
        await asyncio.gather(*(bot(i) for i in range(BOT_CLIENTS)),
                             *(person(i) for i in range(PEOPLE)))
    finally:
        for http in https:
            await http.aclose()

    for who in bots:
        statuses = Counter(r.status_code for r in answers[who])
        assert statuses == {201: LIMIT, 429: BOT_CLIENTS // BOT_TOKENS * ATTEMPTS_EACH - LIMIT}, \
            (who, statuses)
        for refused in (r for r in answers[who] if r.status_code == 429):
            assert refused.json()["type"].endswith("/rate-limited")
            assert int(refused.headers["retry-after"]) >= 1
    people = [r for who, rs in answers.items() if who.startswith("person-") for r in rs]
    assert [r.status_code for r in people] == [201] * PEOPLE
    # Both processes refused bots: the counters are shared, not per process.
    refused_by = {str(r.url).split("/v1/")[0] for rs in answers.values() for r in rs
                  if r.status_code == 429}
    assert len(refused_by) == 2
    async with client(urls[1], Role.ADMIN) as admin:
        assert (await stock(admin, sku))["reserved"] == BOT_TOKENS * LIMIT + PEOPLE
