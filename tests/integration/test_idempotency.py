"""A keyed write stores its response in the transaction of its change (issue 17, item 3).

So there is no moment at which the change is committed and its answer is not: a server that dies
commits both or neither, and a retry with the same key gets the committed answer or runs the
request for the first time. A request that fails after its write (5xx) leaves neither, and its
key is free for the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Request

from instock.app import create_app
from instock.inventory.model import Adjustment, AdjustmentKind, Line
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.auth import Role
from instock.platform.db import Database
from instock.platform.entry_context import EntryContext
from instock.platform.idempotency import idempotency_keys
from tests.e2e.harness import create_location, create_product
from tests.support import make_settings

SKU, LOCATION = "tee-m", "wh-1"
RECEIVE = {"sku": SKU, "location": LOCATION, "kind": "receive", "quantity": 3, "reason": "in"}


class Api:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client
        token = app.state.tokens.mint(Role.ADMIN, "admin-1")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: Any, key: str) -> httpx.Response:
        return await self.client.post(path, json=body,
                                      headers={**self.headers, "Idempotency-Key": key})

    async def on_hand(self) -> int:
        response = await self.client.get(f"/v1/inventory/{SKU}", headers=self.headers)
        assert response.status_code == 200, response.text
        return int(response.json()["on_hand"])

    async def key_rows(self) -> list[Any]:
        async with self.app.state.inventory.db.read() as conn:
            return list(await conn.execute(sa.select(idempotency_keys)))


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    app = create_app(make_settings(database_url, tmp_path))

    @app.post("/test/receive-then-fail")
    async def receive_then_fail(request: Request) -> None:
        # A route whose service commits its change and which then fails to answer.
        ctx = EntryContext("admin:admin-1", "in", None, request.state.idempotency_key)
        await app.state.inventory.adjust(
            Adjustment(SKU, LOCATION, AdjustmentKind.RECEIVE, 3), ctx, None)
        raise RuntimeError("the response could not be rendered")

    @app.post("/test/receive-then-reserve")
    async def receive_then_reserve(request: Request) -> dict[str, str]:
        # Two changes in one request, the second made by the group commit's own task (which,
        # on SQLite, needs the one write lock the first would hold).
        ctx = EntryContext("admin:admin-1", "in", None, request.state.idempotency_key)
        await app.state.inventory.adjust(
            Adjustment(SKU, LOCATION, AdjustmentKind.RECEIVE, 3), ctx, None)
        reservation = await app.state.inventory.reserve(
            ReserveRequest([Line(SKU, 1)], "web", None, None), ctx)
        return {"id": reservation.id}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        api = Api(app, client)
        admin = httpx.AsyncClient(transport=transport, base_url="http://t",
                                  headers=api.headers)
        await create_product(admin, "tee", [SKU])
        await create_location(admin, LOCATION)
        yield api
    await app.state.inventory.db.dispose()


@contextlib.contextmanager
def transactions(db: Database) -> Iterator[list[list[str]]]:
    """The statements of each write transaction committed through `db` inside the block."""
    committed: list[list[str]] = []
    open_: dict[int, list[str]] = {}

    def statement(conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        open_.setdefault(id(conn), []).append(sql)

    def commit(conn: Any) -> None:
        committed.append(open_.pop(id(conn), []))

    def rollback(conn: Any) -> None:
        open_.pop(id(conn), None)

    engine = db.engine.sync_engine
    hooks = {"before_cursor_execute": statement, "commit": commit, "rollback": rollback}
    for name, hook in hooks.items():
        sa.event.listen(engine, name, hook)
    try:
        yield committed
    finally:
        for name, hook in hooks.items():
            sa.event.remove(engine, name, hook)


def touching(committed: list[list[str]], table: str) -> list[list[str]]:
    return [tx for tx in committed if any(f"INTO {table} " in sql.upper().replace('"', "")
                                          for sql in tx)]


async def test_the_change_and_its_response_commit_in_one_transaction(api: Api) -> None:
    db = api.app.state.inventory.db
    with transactions(db) as committed:
        first = await api.post("/v1/inventory/adjustments", RECEIVE, "receive-1")
    assert first.status_code == 200, first.text
    [together] = touching(committed, "IDEMPOTENCY_KEYS")
    assert touching(committed, "LEDGER") == [together]
    assert touching(committed, "OUTBOX") == [together]
    [row] = await api.key_rows()
    assert row.done and row.status_code == 200 and row.body == first.text

    replay = await api.post("/v1/inventory/adjustments", RECEIVE, "receive-1")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.text == first.text and await api.on_hand() == 3


async def test_a_request_that_fails_after_its_write_leaves_neither(api: Api) -> None:
    failed = await api.post("/test/receive-then-fail", {}, "receive-2")
    assert failed.status_code == 500
    assert await api.on_hand() == 0, "the change of a request answered 500 was committed"
    assert await api.key_rows() == [], "the key of a failed request was kept"
    # The key is free: the client's retry runs the write, once.
    retry = await api.post("/v1/inventory/adjustments", RECEIVE, "receive-2")
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert await api.on_hand() == 3


async def test_a_refusal_is_stored_and_replayed_without_a_change(api: Api) -> None:
    body = {**RECEIVE, "kind": "count", "quantity": -1}
    refused = await api.post("/v1/inventory/adjustments", body, "count-1")
    assert refused.status_code == 422, refused.text
    again = await api.post("/v1/inventory/adjustments", body, "count-1")
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == refused.json() and await api.on_hand() == 0


async def test_a_graphql_mutation_stores_its_answer_with_its_change(api: Api) -> None:
    mutation = """mutation { adjustStock(input: {sku: "tee-m", location: "wh-1", kind: "receive",
                   quantity: 2, reason: "in"}) { available buckets { onHand } } }"""
    with transactions(api.app.state.inventory.db) as committed:
        first = await api.post("/graphql", {"query": mutation}, "graph-1")
    assert first.status_code == 200 and "errors" not in first.json(), first.text
    assert first.json()["data"]["adjustStock"]["buckets"]["onHand"] == 2
    [together] = touching(committed, "IDEMPOTENCY_KEYS")
    assert touching(committed, "LEDGER") == [together]
    again = await api.post("/graphql", {"query": mutation}, "graph-1")
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert await api.on_hand() == 2


async def test_a_request_of_several_changes_claims_its_key_with_the_first(api: Api) -> None:
    answered = await asyncio.wait_for(
        api.post("/test/receive-then-reserve", {}, "two-changes"), timeout=30)
    assert answered.status_code == 200, answered.text
    [row] = await api.key_rows()
    assert row.done and row.status_code == 200
    again = await api.post("/test/receive-then-reserve", {}, "two-changes")
    assert again.headers["idempotent-replayed"] == "true" and again.json() == answered.json()
    response = await api.client.get(f"/v1/inventory/{SKU}", headers=api.headers)
    assert (response.json()["on_hand"], response.json()["reserved"]) == (3, 1)
