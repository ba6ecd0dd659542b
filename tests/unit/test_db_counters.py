"""The database adapter counts its SQL work on the process's /metrics (instock_db_*): what
`bench writes` divides by its requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, Request
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from instock.platform.db import Database
from instock.platform.retry import keep_running
from instock.platform.telemetry import ObserveMiddleware


def _counts() -> dict[str, float]:
    """The counters as /metrics shows them (generate_latest is what the route serves)."""
    found = {"statements": 0.0, "commit": 0.0, "rollback": 0.0}
    for family in text_string_to_metric_families(generate_latest().decode()):
        for sample in family.samples:
            if sample.name == "instock_db_statements_total":
                found["statements"] += sample.value
            elif sample.name == "instock_db_transactions_total":
                found[sample.labels["outcome"]] += sample.value
    return found


def _growth(before: dict[str, float]) -> dict[str, float]:
    return {name: value - before[name] for name, value in _counts().items()}


async def test_statements_and_transactions_are_counted(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'counted.db'}")
    try:
        async with db.write() as conn:  # a migration-free table of its own
            await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
        before = _counts()
        async with db.write() as conn:
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (:n)"), [{"n": 2}, {"n": 3}])
        # SQLite's BEGIN IMMEDIATE is a statement of its own; an executemany counts once.
        assert _growth(before) == {"statements": 3, "commit": 1, "rollback": 0}

        before = _counts()
        try:
            async with db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (4)"))
                raise RuntimeError("the write fails half-way")
        except RuntimeError:
            pass
        assert _growth(before) == {"statements": 2, "commit": 0, "rollback": 1}

        before = _counts()
        async with db.read() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one() == 3
        grown = _growth(before)
        assert grown["statements"] == 2 and grown["commit"] == 0  # the read's BEGIN, its query
    finally:
        await db.dispose()


def _by_origin() -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest().decode()):
        for sample in family.samples:
            if sample.name == "instock_db_statements_total":
                origin = sample.labels["origin"]
                found[origin] = found.get(origin, 0.0) + sample.value
    return found


async def test_statements_are_labelled_by_the_work_they_were_for(tmp_path: Path) -> None:
    """A background loop's statements count under its name, a request's under `request`, and
    the two at once apart."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'origins.db'}")
    try:
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (n INTEGER)"))
        before = _by_origin()
        looped = asyncio.Event()

        async def one_pass() -> None:
            async with db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            looped.set()

        async def page(request: Request) -> dict[str, int]:
            async with db.read() as conn:
                return {"n": (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one()}

        app = FastAPI()
        app.get("/count")(page)
        loop = asyncio.create_task(keep_running(one_pass, "test_loop", pause=60))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(
                    app=ObserveMiddleware(app)), base_url="http://t") as client:
                assert (await client.get("/count")).status_code == 200
            await asyncio.wait_for(looped.wait(), 10)
        finally:
            loop.cancel()
        after = _by_origin()
        grown = {o: n - before.get(o, 0.0) for o, n in after.items() if n != before.get(o, 0.0)}
        # The loop: BEGIN IMMEDIATE and its insert; the request: its read's BEGIN and query.
        assert grown == {"test_loop": 2, "request": 2}
    finally:
        await db.dispose()
