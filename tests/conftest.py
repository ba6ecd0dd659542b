from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from instock.app import Container, build
from tests.support import PG_URL, backends, make_settings, migrated_database


@pytest.fixture(params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.node.get_closest_marker("one_backend") and PG_URL and request.param != "postgresql":
        pytest.skip("one backend is enough for this test: PostgreSQL, as it is configured")
    with migrated_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def container(database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    c = build(make_settings(database_url, tmp_path))
    yield c
    await c.close()
