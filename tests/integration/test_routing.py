"""The app's routers skip requests none of their paths can match (platform/routing.py), and
that changes no routing decision: every router answers every probe exactly as FastAPI's own
matching does, and a request reaches the same route through the app."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

from instock.app import create_app
from instock.platform.auth import Role
from instock.platform.routing import literal_prefixes
from tests.support import make_settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def probes(app: Any) -> set[str]:
    """Every path the app serves with its parameters filled in, with and without a trailing
    slash, one level shorter and longer, and paths nothing serves."""
    paths = {"/", "/nope", "/v1", "/v1/", "/v1/nope", "/livez", "/static/app.css"}
    for route in app.router.routes:
        formats = [getattr(c.starlette_route, "path_format", None) or c.path_format
                   for c in route.effective_route_contexts()] \
            if hasattr(route, "effective_route_contexts") else [getattr(route, "path", "/")]
        for path_format in formats:
            path = path_format.replace("{", "").replace("}", "").replace(":path", "")
            paths |= {path, path.rstrip("/") or "/", path + "/", path + "/x",
                      path.rsplit("/", 1)[0] or "/"}
    return paths


@pytest.mark.one_backend
async def test_every_router_decides_as_fastapi_does(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    gated = [r for r in app.router.routes if "matches" in vars(r)]
    assert len(gated) >= 15, "each context's router is gated"
    assert all(literal_prefixes(r) for r in gated)
    checked = 0
    for route, path, method in itertools.product(gated, sorted(probes(app)), METHODS):
        scope = {"type": "http", "method": method, "path": path, "root_path": "",
                 "headers": [], "query_string": b"", "path_params": {}}
        fastapi_says = type(route).matches(route, dict(scope))
        assert route.matches(dict(scope)) == fastapi_says, (path, method, route)
        checked += 1
    assert checked > 10_000
    await app.state.catalog.db.dispose()


@pytest.mark.one_backend
async def test_requests_reach_their_routes(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    admin = {"Authorization": f"Bearer {app.state.tokens.mint(Role.ADMIN, 'admin-1')}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/livez")).json() == {"status": "ok"}
        locations = await client.get("/v1/locations", headers=admin)
        assert locations.status_code == 200, locations.text
        missing = await client.get("/v1/nope", headers=admin)
        assert missing.status_code == 404
        wrong_method = await client.delete("/v1/locations", headers=admin)
        assert wrong_method.status_code == 405
    await app.state.catalog.db.dispose()
