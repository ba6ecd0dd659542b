"""Customer profiles over HTTP, their personal data sealed at rest (issue 19, items 1 and 2)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from instock.app import Container, build, create_app
from instock.customers.model import Changes
from instock.platform.auth import Role
from instock.platform.bus.outbox import outbox
from instock.privacy.model import Keyring
from tests.support import INSTOCK, instock_env, make_settings

ANN = {"email": "Ann.Smith@Example.com", "phone": "+33612345678", "name": "Ann Smith",
       "sizes": {"shoes": "38", "tops": "M"}, "preferences": {"brands": ["acme"]},
       "consents": {"back_in_stock_email": True, "marketing_email": False}}
BOB = {"email": "bob@example.org", "phone": "+4915112345678", "name": "Bob Jones"}
SECRETS = ("ann.smith@example.com", "Ann.Smith@Example.com", "+33612345678", "33612345678",
           "Ann Smith", "bob@example.org", "+4915112345678", "Bob Jones")


def auth(app: FastAPI, role: Role, subject: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + app.state.tokens.mint(role, subject)}


@pytest.fixture
async def http(database_url: str,
               tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield app, client


async def everything(db_url: str) -> list[Any]:
    """Every value of every row of every table in the database."""
    engine = create_async_engine(db_url)
    values: list[Any] = []
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            for name in names:
                rows = await conn.execute(sa.text(f'SELECT * FROM "{name}"'))
                values += [v for row in rows for v in row]
    finally:
        await engine.dispose()
    return values


def assert_no_plain_pii(values: list[Any]) -> None:
    for value in values:
        text = (bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview)
                else str(value))
        for secret in SECRETS:
            assert secret.lower() not in text.lower(), f"{secret!r} stored in plain: {text!r}"


async def test_a_customer_puts_and_gets_its_own_profile_and_only_its_own(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    ann = auth(app, Role.CUSTOMER, "cus-1")
    put = await client.put("/v1/customers/cus-1", json=ANN, headers=ann)
    assert put.status_code == 200, put.text
    got = (await client.get("/v1/customers/cus-1", headers=ann)).json()
    assert got == put.json()
    assert (got["email"], got["phone"], got["name"]) == (
        "ann.smith@example.com", "+33612345678", "Ann Smith")
    assert got["sizes"] == {"shoes": "38", "tops": "M"} and got["version"] == 1
    assert got["consents"]["back_in_stock_email"]["granted"] is True
    assert got["consents"]["back_in_stock_email"]["source"] == "customer:cus-1"
    assert got["erased"] is False
    # The same PUT again changes nothing (no new version, no second event).
    assert (await client.put("/v1/customers/cus-1", json=ANN, headers=ann)).json() == got

    bob = auth(app, Role.CUSTOMER, "cus-2")
    for response in (await client.get("/v1/customers/cus-1", headers=bob),
                     await client.put("/v1/customers/cus-1", json=BOB, headers=bob)):
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
    merch = auth(app, Role.MERCHANDISER, "m")
    assert (await client.get("/v1/customers/cus-1", headers=merch)).status_code == 403
    support = auth(app, Role.SUPPORT, "sue")
    assert (await client.get("/v1/customers/cus-1", headers=support)).json()["name"] == "Ann Smith"
    changed = await client.put("/v1/customers/cus-1", headers=support,
                               json={"consents": {"back_in_stock_email": False}})
    consent = changed.json()["consents"]["back_in_stock_email"]
    assert (consent["granted"], consent["source"], changed.json()["version"]) == (
        False, "support:sue", 2)
    assert (await client.get("/v1/customers/cus-9", headers=support)).status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({**BOB, "email": "not-an-email"}, "email"), ({**BOB, "email": "a@b"}, "email"),
    ({**BOB, "phone": "0612345678"}, "phone"), ({**BOB, "phone": "+12"}, "phone"),
    ({**BOB, "name": " "}, "name"), ({**BOB, "name": "Bob \ud800"}, "name"),
    ({**BOB, "sizes": {"tops": "M\x00"}}, "sizes.tops"),
    ({**BOB, "consents": {"telepathy": True}}, "consents.telepathy"),
    ({**BOB, "sizes": {"shoes": 38}}, "sizes.shoes")])
async def test_bad_input_is_a_problem_naming_the_field_and_nothing_is_written(
        http: tuple[FastAPI, httpx.AsyncClient], database_url: str, body: dict[str, Any],
        field: str) -> None:
    app, client = http
    response = await client.put(  # json.dumps escapes a lone surrogate, as a client may
        "/v1/customers/cus-2", content=json.dumps(body),
        headers={**auth(app, Role.CUSTOMER, "cus-2"), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert (await client.get("/v1/customers/cus-2",
                             headers=auth(app, Role.SUPPORT, "s"))).status_code == 404
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:  # not even a data key was left behind
        for table in ("customers", "subject_keys"):
            assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar() == 0
    await engine.dispose()


async def test_no_personal_data_is_stored_in_plain_text_anywhere(
        http: tuple[FastAPI, httpx.AsyncClient], database_url: str) -> None:
    app, client = http
    # With an Idempotency-Key too: its stored response would otherwise hold the profile.
    for who, body in (("cus-1", ANN), ("cus-2", BOB)):
        response = await client.put(f"/v1/customers/{who}", json=body, headers={
            **auth(app, Role.CUSTOMER, who), "Idempotency-Key": f"key-{who}"})
        assert response.status_code == 200
    values = await everything(database_url)
    assert_no_plain_pii(values)
    assert any(isinstance(v, str) and len(v) > 40 for v in values)  # the sealed values are there


async def test_the_profile_event_carries_no_personal_data(container: Container) -> None:
    await container.customers.save("cus-1", Changes(
        email=ANN["email"], phone=ANN["phone"], name=ANN["name"], sizes={"tops": "M"},
        consents={"sms": True}), by="customer:cus-1")
    async with container.db.read() as conn:
        rows = (await conn.execute(sa.select(outbox.c.envelope)
                                   .where(outbox.c.type == "customer.profile_updated.v1"))).all()
    assert len(rows) == 1
    envelope = rows[0].envelope
    assert envelope["subject"] == "cus-1" and envelope["sequence"] == 1
    assert envelope["data"] == {"customer_id": "cus-1", "version": 1, "sizes": {"tops": "M"},
                                "preferences": {}, "consents": {"sms": True}}
    assert_no_plain_pii([envelope])


async def test_find_by_email_uses_the_keyed_hash(container: Container) -> None:
    await container.customers.save("cus-1", Changes(email=ANN["email"]), by="support:s")
    await container.customers.save("cus-2", Changes(email=BOB["email"]), by="support:s")
    found = await container.customers.find_by_email("  ANN.smith@example.COM ")
    assert found is not None and found.id == "cus-1"
    assert (await container.customers.find_by_email("nobody@example.com")) is None


async def test_after_shredding_a_subject_their_profile_has_no_personal_data(
        http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = http
    support = auth(app, Role.SUPPORT, "sue")
    for who, body in (("cus-1", ANN), ("cus-2", BOB)):
        assert (await client.put(f"/v1/customers/{who}", json=body,
                                 headers=support)).status_code == 200
    await app.state.customers.privacy.shred("cus-1")
    erased = (await client.get("/v1/customers/cus-1", headers=support)).json()
    assert erased["erased"] is True
    assert (erased["email"], erased["phone"], erased["name"]) == (None, None, None)
    assert erased["sizes"] == ANN["sizes"]  # no personal data: kept
    assert (await app.state.customers.find_by_email(ANN["email"])) is None
    # No fresh key for a shredded subject: writing personal data again is refused.
    again = await client.put("/v1/customers/cus-1", json=ANN, headers=support)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    bob = (await client.get("/v1/customers/cus-2", headers=support)).json()
    assert (bob["email"], bob["erased"]) == ("bob@example.org", False)


async def test_rotating_the_master_key_keeps_every_profile_readable(
        database_url: str, tmp_path: Path) -> None:
    old, new = Keyring.generate("k1"), Keyring.generate("k2")
    first = build(make_settings(database_url, tmp_path, pii_master_keys=old))
    try:
        for n in range(3):
            await first.customers.save(f"cus-{n}", Changes(email=f"c{n}@example.com",
                                                           name=f"Person {n}"), by="support:s")
    finally:
        await first.close()
    rotated = build(make_settings(database_url, tmp_path, pii_master_keys=f"{new},{old}"))
    try:
        assert (await rotated.customers.get("cus-1")).name == "Person 1"  # opens before, too
        assert await rotated.privacy.rotate() == 3
        assert await rotated.privacy.rotate() == 0
        found = await rotated.customers.find_by_email("c2@example.com")  # an old-key hash
        assert found is not None and found.id == "cus-2"
    finally:
        await rotated.close()
    # The command an operator runs: rewraps (nothing left) and hashes the emails again.
    cli = subprocess.run([INSTOCK, "privacy", "rotate"], capture_output=True, text=True,
                         env=instock_env(database_url, tmp_path,
                                         INSTOCK_PII_MASTER_KEYS=f"{new},{old}"),
                         timeout=60, check=True)
    assert "0 data keys rewrapped, 3 email hashes renewed under k2" in " ".join(
        cli.stderr.split())
    subprocess.run([INSTOCK, "privacy", "erase", "cus-0", "--yes"], capture_output=True,
                   env=instock_env(database_url, tmp_path, INSTOCK_PII_MASTER_KEYS=new),
                   timeout=60, check=True)
    only_new = build(make_settings(database_url, tmp_path, pii_master_keys=new))
    try:
        for n in range(1, 3):
            profile = await only_new.customers.get(f"cus-{n}")
            assert (profile.email, profile.name) == (f"c{n}@example.com", f"Person {n}")
            found = await only_new.customers.find_by_email(f"C{n}@example.com ")
            assert found is not None and found.id == f"cus-{n}"  # without the old key
        assert (await only_new.customers.get("cus-0")).erased
    finally:
        await only_new.close()


async def test_the_generated_master_key_survives_a_restart(database_url: str,
                                                           tmp_path: Path) -> None:
    first = build(make_settings(database_url, tmp_path))
    try:
        await first.customers.save("cus-1", Changes(phone="+33612345678"), by="support:s")
    finally:
        await first.close()
    again = build(make_settings(database_url, tmp_path))
    try:
        assert (await again.customers.get("cus-1")).phone == "+33612345678"
    finally:
        await again.close()
    assert (tmp_path / "state" / "pii-master.keys").stat().st_mode & 0o077 == 0
