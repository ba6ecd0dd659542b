"""The edges of every request (issue 20): body size, content type and JSON depth refused
before anything parses a body (and nothing changed), and the security headers on answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from instock.app import create_app
from instock.platform.auth import Role
from instock.platform.edges import json_depth
from tests.e2e.harness import create_location, create_product, receive
from tests.support import make_settings

RESERVE = {"lines": [{"sku": "tee-1", "quantity": 1}]}


@pytest.fixture
async def http(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, tmp_path, max_body_bytes=4096,
                                   max_json_depth=8))
    token = app.state.tokens.mint(Role.ADMIN, "admin-1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        await create_product(client, "tee", ["tee-1"])
        await create_location(client, "wh-1")
        await receive(client, "tee-1", "wh-1", 5)
        yield client


async def reserved(http: httpx.AsyncClient) -> int:
    return int((await http.get("/v1/inventory/tee-1")).json()["reserved"])


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/{slug}")
    return body


async def test_a_body_over_the_limit_is_refused_by_its_length_or_as_it_streams(
        http: httpx.AsyncClient) -> None:
    padded = {**RESERVE, "channel": "web", "customer_id": "x" * 5000}
    problem(await http.post("/v1/reservations", json=padded), 413, "payload-too-large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"lines": [{"sku": "tee-1", "quantity": 1}], "customer_id": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    problem(await http.post("/v1/reservations", content=chunks(),
                            headers={"Content-Type": "application/json"}),
            413, "payload-too-large")
    assert await reserved(http) == 0


async def test_a_body_that_is_not_json_is_refused_naming_the_content_type(
        http: httpx.AsyncClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        refused = problem(await http.post("/v1/reservations", content=json.dumps(RESERVE),
                                          headers=headers), 415, "unsupported-media-type")
        assert refused["errors"][0]["field"] == "Content-Type"
    assert await reserved(http) == 0
    # JSON with parameters, and a +json type, are JSON.
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        made = await http.post("/v1/reservations", content=json.dumps(RESERVE),
                               headers={"Content-Type": content_type})
        assert made.status_code == 201, made.text
    assert await reserved(http) == 2


async def test_json_nested_too_deeply_is_refused_before_it_is_parsed(
        http: httpx.AsyncClient) -> None:
    deep = {"lines": [{"sku": "tee-1", "quantity": 1}], "channel": [[[[[[[["web"]]]]]]]]}
    refused = problem(await http.post("/v1/reservations", json=deep), 422, "json-too-deep")
    assert refused["errors"] == [{"field": "body", "reason": "nested too deeply"}]
    # Brackets inside strings are text, not nesting.
    text = {"lines": [{"sku": "tee-1", "quantity": 1}], "customer_id": "[[[[[[[[[[[[{{{{"}
    assert (await http.post("/v1/reservations", json=text)).status_code == 201


async def test_every_answer_carries_the_security_headers(database_url: str,
                                                         tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    for base, tls in (("http://t", False), ("https://t", True)):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=base) as client:
            api = await client.get("/v1/products/p-1")  # a 401 problem
            page = await client.get("/")
        for answer in (api, page):
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert ("strict-transport-security" in answer.headers) is tls
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert page.headers["x-frame-options"] == "DENY"
        assert "x-frame-options" not in api.headers


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\ab', max_size=4), inner, max_size=3),
    max_leaves=30)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_the_depth_scan_agrees_with_the_parsed_value(value: Any) -> None:
    assert json_depth(json.dumps(value).encode(), 1000) == depth_of(value)


async def test_an_unexpected_error_answers_without_trace_sql_or_message(
        database_url: str, tmp_path: Path) -> None:
    import sqlalchemy.exc

    app = create_app(make_settings(database_url, tmp_path))

    @app.get("/test/boom")
    async def boom() -> None:
        raise sqlalchemy.exc.OperationalError(
            "SELECT secret_hash FROM api_clients WHERE id = 'x'", {}, Exception("db gone"))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=app, raise_app_exceptions=False), base_url="http://t") as client:
        answer = await client.get("/test/boom")
    assert answer.status_code in (500, 503), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    for leak in ("Traceback", "SELECT", "secret_hash", "db gone", "File \""):
        assert leak not in answer.text, (leak, answer.text)
