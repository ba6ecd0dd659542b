"""One Idempotency-Key sent to three server processes at the same instant runs its request once.

Regression: the claim read the key and then inserted it with ON CONFLICT DO NOTHING without
checking that the insert happened, so on PostgreSQL two processes could both run the request
(20 one-unit receipts left on_hand at 48).
"""

from __future__ import annotations

from collections import Counter

import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    Call,
    ServerFactory,
    burst,
    client,
    create_location,
    create_product,
    stock,
)

pytestmark = pytest.mark.slow
ROUNDS = 20


async def test_one_key_on_three_servers_at_once_runs_once(servers: ServerFactory) -> None:
    urls = [p.base_url for p in await servers.start_many(3)]
    async with client(urls[0], Role.ADMIN) as admin:
        await create_product(admin, "p", ["race-1"])
        await create_location(admin, "wh-1")
    body = {"sku": "race-1", "location": "wh-1", "kind": "receive", "quantity": 1,
            "reason": "race"}
    calls = [Call("/v1/inventory/adjustments", body, role=Role.ADMIN, subject="admin-1",
                  headers={"Idempotency-Key": f"rk-{key}"}, server=s)
             for key in range(ROUNDS) for s in range(3)]  # every key to every server at once
    answers: Counter[tuple[int | None, str]] = Counter()
    for outcome in (await burst(urls, calls)).outcomes:
        problem = str((outcome.body or {}).get("type", "")).rsplit("/", 1)[-1]
        answers[(outcome.status, problem if outcome.status != 200 else "")] += 1
    assert set(answers) <= {(200, ""), (409, "idempotency-in-progress")}, answers
    async with client(urls[0], Role.ADMIN) as admin:
        assert (await stock(admin, "race-1"))["on_hand"] == ROUNDS
