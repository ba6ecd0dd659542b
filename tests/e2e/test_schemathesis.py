"""Schemathesis against the OpenAPI document the running server generates, every operation.

With an admin token (so requests get past auth into the handlers), examples + coverage +
fuzzing phases, about 25 generated cases per operation. Checks: no 5xx and every response
conforms to its documented schema. Half of the cases are aimed at data that exists (a stocked
SKU, a bundle, a location, live reservations), so they reach the business logic instead of
stopping at "unknown SKU"; which half is a pure function of the case, so Hypothesis can shrink
and replay failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from instock.app import create_app, graphql_schema
from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    audit_verify,
    bearer,
    client,
    create_location,
    create_product,
    receive,
)
from tests.e2e.sandboxes import start_payments
from tests.support import backends, make_settings, migrated_database

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("INSTOCK_E2E_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("INSTOCK_E2E_FUZZ_SEED", "20260421"))
GRAPHQL_EXAMPLES = int(os.environ.get("INSTOCK_E2E_GRAPHQL_FUZZ_EXAMPLES", "15"))

SKUS = ["fz-tee-s", "fz-tee-m", "fz-kit"]
LOCATIONS = ["fz-wh", "fz-store"]


@pytest.fixture(scope="module", params=backends())
def fuzz_target(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[str]]]:
    """One server per backend for every operation, with real data to aim at: stock in two
    places, a lot, a bundle, live holds; and the payment sandbox for it to pay through.

    Afterwards the ledger must still verify: random traffic may be refused, never corrupt.
    """
    tmp_path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with migrated_database(request.param, tmp_path) as url:
        db = Database(request.param, url, tmp_path)
        servers = ServerFactory(db, tmp_path)
        try:
            # A payment provider is part of the world: checkout without one is a fair 503.
            sandbox = asyncio.run(start_payments(servers))
            server = asyncio.run(servers.start(INSTOCK_PAYMENTS_URL=sandbox.base_url))
            reservations = asyncio.run(_seed(server))
            with requests.get(f"{server.base_url}/openapi.json", timeout=30) as served:
                assert served.json() == DOCUMENT, "the server serves another OpenAPI document"
            yield server, reservations
            code, report = asyncio.run(audit_verify(db))
            assert code == 0, f"the ledger does not verify after fuzzing:\n{report}"
        finally:
            servers.stop_all()


async def _seed(server: Server) -> list[str]:
    async with client(server.base_url, Role.ADMIN) as admin:
        await create_product(admin, "fz-tee", SKUS[:2], {"fz-kit": {"fz-tee-s": 1, "fz-tee-m": 2}})
        await create_location(admin, LOCATIONS[0])
        await create_location(admin, LOCATIONS[1], "store")
        await receive(admin, "fz-tee-s", LOCATIONS[0], 500)
        await receive(admin, "fz-tee-m", LOCATIONS[1], 500)
        lot = await admin.post("/v1/inventory/adjustments", json={
            "sku": "fz-tee-s", "location": LOCATIONS[1], "kind": "receive", "quantity": 50,
            "lot": {"code": "L-1", "expires_on": "2099-01-01"}})
        assert lot.status_code == 200, lot.text
        reservations = []
        for i in range(8):
            held = await admin.post("/v1/reservations", json={
                "lines": [{"sku": SKUS[i % 3], "quantity": 1}], "customer_id": f"fz-{i}"})
            assert held.status_code == 201, held.text
            reservations.append(held.json()["id"])
    return reservations


def _served_document() -> dict[str, Any]:
    """The OpenAPI document `instock serve` generates, built the same way at collection time.

    (schemathesis' lazy `from_fixture` loader needs pytest's private `Node._nodeid`, which
    pytest 9 removed, so the schema is loaded eagerly; each test checks that the running
    server serves exactly this document.)
    """
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", Path(tempfile.gettempdir())))
    return app.openapi()


DOCUMENT = _served_document()
# Live streams answer 200 and then stream for as long as the client listens: no fuzz case would
# ever end. Their contract (bad input, auth, what they push) is tested in tests/e2e/test_live.py.
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"seed": SEED})).exclude(
        path_regex="^/v1/stream/")


def _pick(case: Any, options: list[str], salt: str) -> str | None:
    """Deterministically aim about half the cases at existing data (None: leave as generated)."""
    digest = hashlib.sha256(
        f"{salt}|{case.path_parameters!r}|{case.query!r}|{case.body!r}".encode()).digest()
    return None if digest[0] % 2 else options[digest[1] % len(options)]


def aim(case: Any, reservations: list[str]) -> None:
    params = dict(case.path_parameters or {})
    for name, options in (("sku", SKUS), ("product_id", ["fz-tee"]),
                          ("reservation_id", reservations)):
        if name in params and (choice := _pick(case, options, name)) is not None:
            params[name] = choice
    if params:
        case.path_parameters = params
    query = case.query
    if isinstance(query, dict) and "sku" in query and (choice := _pick(case, SKUS, "q")):
        case.query = {**query, "sku": choice}
    body = case.body
    if isinstance(body, dict):
        if "sku" in body and (choice := _pick(case, SKUS[:2], "body.sku")) is not None:
            body["sku"] = choice
        if "location" in body and (choice := _pick(case, LOCATIONS, "body.loc")) is not None:
            body["location"] = choice
        lines = body.get("lines")
        if isinstance(lines, list) and (choice := _pick(case, SKUS, "lines")) is not None:
            for line in lines:
                if isinstance(line, dict) and "sku" in line:
                    line["sku"] = choice


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_no_5xx_and_conforms(case: Any, fuzz_target: tuple[Server, list[str]],
                                             session: requests.Session) -> None:
    server, reservations = fuzz_target
    aim(case, reservations)
    try:
        case.call_and_validate(base_url=server.base_url, session=session,
                               headers=bearer(Role.ADMIN, "fuzzer"),
                               checks=[not_a_server_error, response_schema_conformance,
                                       status_code_conformance, content_type_conformance])
    except Exception as failure:  # a 500's traceback is in the server's log, not the answer
        failure.add_note(f"the end of the server's log:\n{server.log_tail(6000)}")
        raise


# -- GraphQL ---------------------------------------------------------------------------------

GRAPHQL = schemathesis.graphql.from_file(
    graphql_schema(make_settings("sqlite+aiosqlite:///:memory:",
                                 Path(tempfile.gettempdir()))).as_str(),
    config=schemathesis.Config.from_dict({"seed": SEED}))


@GRAPHQL.parametrize()
@settings(max_examples=GRAPHQL_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_graphql_field_no_5xx(case: Any, fuzz_target: tuple[Server, list[str]],
                                    session: requests.Session) -> None:
    """Generated queries and mutations for every root field: never a server error, nor an
    error the server did not type (`INTERNAL_ERROR`)."""
    server, _ = fuzz_target
    response = case.call(base_url=f"{server.base_url}/graphql", session=session,
                         headers=bearer(Role.ADMIN, "fuzzer"))
    assert response.status_code < 500, response.text
    body = response.json()
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
    assert "INTERNAL_ERROR" not in codes, body
