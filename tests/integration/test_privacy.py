"""A person's rights over their data: export everything, then be forgotten (issue 19, item 2).

One registry of personal-data locations serves both; a table with a personal column that no
context registered fails here, before it can escape an export or an erasure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

import instock.tables  # noqa: F401  (every table on the metadata)
from instock.app import create_app
from instock.customers.model import Changes
from instock.experiments.store import exposures
from instock.payments.errors import PaymentUnavailable
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.platform.db import Database, metadata
from instock.privacy.model import PersonalData, unregistered
from tests.integration.helpers import CTX, stocked
from tests.support import make_settings

ANN = {"email": "Ann.Smith@Example.com", "phone": "+33612345678", "name": "Ann Smith",
       "sizes": {"shoes": "38"}, "consents": {"back_in_stock_email": True}}
WHO = "cus-ann"


def auth(app: FastAPI, role: Role, subject: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.tokens.mint(role, subject)}


@pytest.fixture
async def http(database_url: str,
               tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # The relay runs (memory bus): published events naming the person are deleted on erasure.
    app = create_app(make_settings(database_url, tmp_path, run_relay=True))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield app, client


async def published(db: Database) -> None:
    """Wait (a few seconds at most) until the relay has published every event."""
    for _ in range(100):
        async with db.read() as conn:
            if not (await conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                       .where(outbox.c.published_at.is_(None)))).scalar():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the relay published nothing")


def tables_of(meta: sa.MetaData) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    return {t.name: [(c.name, dict(c.info)) for c in t.columns] for t in meta.sorted_tables}


def test_every_table_with_a_personal_column_is_registered(tmp_path: Path) -> None:
    app = create_app(make_settings("sqlite+aiosqlite:///" + str(tmp_path / "r.db"), tmp_path))
    registry = app.state.privacy.registry
    assert unregistered(tables_of(metadata), registry) == {}
    # ...and the check does fail for a table nobody registered.
    other = sa.MetaData()
    sa.Table("gift_cards", other, sa.Column("id", sa.String, primary_key=True),
             sa.Column("customer_id", sa.String))
    sa.Table("notes", other, sa.Column("id", sa.String, primary_key=True),
             sa.Column("body", sa.Text, info={"personal": True}))
    sa.Table("skus", other, sa.Column("sku", sa.String, primary_key=True))
    assert unregistered(tables_of(other), registry) == {"gift_cards": ["customer_id"],
                                                        "notes": ["body"]}
    assert unregistered(tables_of(other), [*registry, PersonalData(
        "gifts", frozenset({"gift_cards", "notes"}), registry[0].export,
        registry[0].erase)]) == {}


async def dump(db_url: str) -> list[tuple[str, str, str]]:
    """(table, column, value as text) of every value of every row of every table."""
    engine = create_async_engine(db_url)
    found: list[tuple[str, str, str]] = []
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            for name in names:
                rows = await conn.execute(sa.text(f'SELECT * FROM "{name}"'))
                for row in rows:
                    for column, value in row._mapping.items():
                        text = (bytes(value).decode("latin-1")
                                if isinstance(value, bytes | memoryview) else str(value))
                        found.append((name, column, text))
    finally:
        await engine.dispose()
    return found


def stored_forms(app: FastAPI, value: str) -> set[str]:
    """The value as it could sit in a table: plain, any case, encoded, hashed, keyed-hashed."""
    plain = {value, value.lower(), value.lstrip("+")}
    forms = set(plain)
    for v in plain:
        forms |= {base64.b64encode(v.encode()).decode().rstrip("="),
                  base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
                  hashlib.sha256(v.encode()).hexdigest(), v.encode().hex()}
        forms |= set(app.state.privacy.lookup_hashes(v))
    return forms


async def test_export_holds_everything_and_erasure_leaves_nothing_that_names_them(
        http: tuple[FastAPI, httpx.AsyncClient], database_url: str) -> None:
    app, client = http
    ann, support = auth(app, Role.CUSTOMER, WHO), auth(app, Role.SUPPORT, "sue")
    c = app.state
    assert (await client.put(f"/v1/customers/{WHO}", json=ANN, headers=ann)).status_code == 200
    # Her traces in every context: a reservation, a failed checkout (an order and its saga),
    # a wait, behaviour before and after logging in, an experiment exposure.
    await stocked(c, "TEE-M", 5)
    await stocked(c, "CAP-1", 0)
    reserved = await client.post("/v1/reservations", headers={**ann, "Idempotency-Key": "k1"},
                                 json={"lines": [{"sku": "TEE-M", "quantity": 1}]})
    assert reserved.status_code == 201, reserved.text
    cart = await c.orders.create_cart("web", WHO)
    await c.orders.add_to_cart(cart.id, "TEE-M", 1, CTX)
    with pytest.raises(PaymentUnavailable):  # no provider runs here: the order stays
        await c.orders.checkout(channel="web", customer_id=WHO, cart_id=cart.id)
    assert (await client.post("/v1/waitlist", headers=ann,
                              json={"sku": "CAP-1", "customer_id": WHO})).status_code == 201
    events = [{"type": "view", "session_id": "sess-ann", "product_id": "p-TEE-M"},
              {"type": "search", "session_id": "sess-ann", "query": "ann smith's tee"},
              {"type": "view", "session_id": "sess-ann", "customer_id": WHO,
               "product_id": "p-CAP-1"}]
    assert (await client.post("/v1/events", headers=auth(app, Role.SERVICE, "shop"),
                              json={"events": events})).status_code == 202
    async with c.privacy.db.write() as conn:  # as the exposure writer records one
        await conn.execute(exposures.insert().values(
            experiment_id="exp-1", subject=WHO, variant="hybrid",
            exposed_at=sa.func.current_timestamp()))

    await published(c.privacy.db)
    exported = await client.get(f"/v1/customers/{WHO}/export", headers=ann)
    assert exported.status_code == 200, exported.text
    data = exported.json()["data"]
    profile = data["customers"]["profile"]
    assert (profile["email"], profile["phone"], profile["name"]) == (
        "ann.smith@example.com", "+33612345678", "Ann Smith")
    assert [r["customer_id"] for r in data["inventory"]["reservations"]] == [WHO, WHO]
    assert [o["customer_id"] for o in data["orders"]["orders"]] == [WHO]
    assert [w["sku"] for w in data["waitlist"]["waits"]] == ["CAP-1"]
    assert {e["kind"] for e in data["recommendations"]["behaviour"]} == {"view", "search"}
    assert len(data["recommendations"]["behaviour"]) == 3  # the session's too
    assert [e["variant"] for e in data["experiments"]["exposures"]] == ["hybrid"]
    assert data["platform"]["events"] and data["privacy"]["data_key"]["shredded_at"] is None
    assert (await client.get(f"/v1/customers/{WHO}/export",
                             headers=auth(app, Role.CUSTOMER, "cus-bob"))).status_code == 403

    before = await dump(database_url)
    assert any(WHO in text for table, _, text in before if table == "behaviour_events")

    erased = await client.post(f"/v1/customers/{WHO}/erase", headers=support)
    assert erased.status_code == 200, erased.text
    assert erased.json()["already"] is False and "recommendations" in erased.json()["contexts"]
    again = await client.post(f"/v1/customers/{WHO}/erase", headers=ann)
    assert again.json()["already"] is True

    after = await dump(database_url)
    secrets: set[str] = set()
    for value in ("ann.smith@example.com", "Ann Smith", "+33612345678", "sess-ann",
                  "ann smith's tee"):
        secrets |= stored_forms(app, value)
    leaks = [(t, col, text) for t, col, text in after
             if any(s.lower() in text.lower() for s in secrets)]
    assert leaks == []
    # Her id survives only where it says "this person was erased" (so no new key is made).
    named = {(t, col) for t, col, text in after if WHO in text}
    assert named <= {("subject_keys", "subject_id"), ("customers", "id")}, named
    # Records the law or the models keep are still there, under one pseudonym.
    pseudonyms = {text for t, col, text in after
                  if (t, col) in {("orders", "customer_id"), ("reservations", "customer_id"),
                                  ("behaviour_events", "customer_id"),
                                  ("behaviour_events", "session_id"),
                                  ("experiment_exposures", "subject")}} - {"None"}
    assert len(pseudonyms) == 1 and pseudonyms.pop().startswith("anon-")
    # ...which nothing links back to her: the erasure forgot it.
    assert not [v for t, col, v in after if t == "subject_keys" and col == "pseudonym"
                and v != "None"]

    gone = await client.get(f"/v1/customers/{WHO}", headers=support)
    assert gone.json()["erased"] is True and gone.json()["email"] is None
    assert (await client.put(f"/v1/customers/{WHO}", json=ANN, headers=ann)).status_code == 409
    assert await c.customers.find_by_email("ann.smith@example.com") is None
    assert (await c.inventory.audit()).ok  # the ledger's chains still verify
    assert (await client.get(f"/v1/customers/{WHO}/export", headers=support)).json()[
        "data"]["customers"]["profile"]["erased"] is True


async def test_an_interrupted_erasure_finishes_with_the_same_pseudonym(
        http: tuple[FastAPI, httpx.AsyncClient], database_url: str) -> None:
    app, client = http
    c = app.state
    await c.customers.save(WHO, Changes(email="ann@example.com"), by="test")
    await stocked(c, "TEE-M", 5)
    for _ in range(2):
        assert (await client.post("/v1/reservations", headers=auth(app, Role.CUSTOMER, WHO),
                                  json={"lines": [{"sku": "TEE-M", "quantity": 1}]})
                ).status_code == 201
    registry = list(c.privacy.registry)

    async def dies(subject: str, pseudonym: str) -> None:
        raise RuntimeError("the process died here")

    # The erasure stops after the inventory's part: its reservations already carry a
    # pseudonym; started again, the rest gets the same one.
    at = [e.context for e in registry].index("inventory") + 1
    c.privacy.registry = [*registry[:at], PersonalData("x", frozenset(), registry[0].export,
                                                       dies), *registry[at:]]
    with pytest.raises(RuntimeError):
        await c.privacy.erase(WHO)
    c.privacy.registry = registry
    assert await c.privacy.erase(WHO) is True
    after = await dump(database_url)
    held = {text for t, col, text in after if (t, col) == ("reservations", "customer_id")}
    behaviour = {text for t, col, text in after if (t, col) == ("subject_keys", "pseudonym")}
    assert len(held) == 1 and held.pop().startswith("anon-") and behaviour == {"None"}
