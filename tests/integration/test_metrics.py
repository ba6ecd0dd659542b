"""/metrics labels requests by route template, including keyed (idempotent) writes."""

from __future__ import annotations

from pathlib import Path

import httpx

from instock.app import create_app
from instock.platform.auth import Role
from tests.support import make_settings


async def test_request_metrics_use_route_templates(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path))
    async with app.router.lifespan_context(app):
        headers = {"Authorization": "Bearer " + app.state.tokens.mint(Role.ADMIN, "a"),
                   "Idempotency-Key": "metrics-1"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.post("/v1/locations", headers=headers,
                              json={"id": "wh", "name": "wh", "kind": "warehouse"})
            await client.get("/v1/inventory/NO-SUCH-SKU", headers=headers)
            await client.get("/nowhere")
            text = (await client.get("/metrics")).text
    assert 'method="POST",route="/v1/locations",status="201"' in text
    assert 'method="GET",route="/v1/inventory/{sku}",status="404"' in text
    assert 'route="unmatched",status="404"' in text
    assert "NO-SUCH-SKU" not in text
