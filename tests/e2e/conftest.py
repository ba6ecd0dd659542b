"""End-to-end fixtures: real `instock serve` processes on a fresh database, talked to over HTTP.

`database` gives a fresh, migrated database per test (SQLite always, PostgreSQL when
INSTOCK_TEST_DATABASE_URL is set); `servers` starts server processes on it (as many as a test
asks for), waits for /readyz and stops them afterwards. Throughput measured by the load tests is
collected in `throughput` and printed at the end of the session and written to
`<pytest basetemp>/e2e-throughput.json`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Database, ServerFactory
from tests.support import PG_URL, backends, migrated_database

THROUGHPUT_KEY = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(params=backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.node.get_closest_marker("one_backend") and PG_URL and request.param != "postgresql":
        pytest.skip("one backend is enough for this test: PostgreSQL, as it is configured")
    if request.node.get_closest_marker("postgresql_only") and request.param != "postgresql":
        pytest.skip("several processes on one database: PostgreSQL only "
                    "(set INSTOCK_TEST_DATABASE_URL)")
    # Migrated before any server starts, so several can start at once without racing.
    with migrated_database(request.param, tmp_path) as url:
        yield Database(request.param, url, tmp_path)


@pytest.fixture
async def servers(database: Database, tmp_path: Path) -> AsyncIterator[ServerFactory]:
    factory = ServerFactory(database, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def throughput(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    request.config.stash[THROUGHPUT_KEY] = records
    yield records
    if records:
        path = tmp_path_factory.getbasetemp() / "e2e-throughput.json"
        path.write_text(json.dumps(records, indent=2))
        print(f"\n[e2e throughput] {len(records)} runs written to {path}")
        for record in records:
            print(f"[e2e throughput] {_describe(record)}")


def _describe(record: dict[str, Any]) -> str:
    return (f"{record['scenario']:<28} {record['backend']:<10} servers={record['servers']} "
            f"requests={record['requests']} confirmed={record['confirmed']} "
            f"in {record['seconds']:.2f}s -> {record['requests_per_second']:.0f} reservation "
            f"requests/s ({record['confirmed_per_second']:.0f} confirmed/s)")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    records = config.stash.get(THROUGHPUT_KEY, [])
    if records:
        terminalreporter.section("e2e reservation throughput (measured, not asserted)")
        for record in records:
            terminalreporter.write_line(_describe(record))
