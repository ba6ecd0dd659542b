"""The `instock` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from instock.app import Container
from instock.platform.auth import Role, TokenAuthority
from instock.platform.bus import inbox
from instock.platform.bus.outbox import outbox
from instock.recommendations import store as recs_store
from tests.integration.helpers import stocked
from tests.support import INSTOCK, TEST_SECRET, instock_env


def instock(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INSTOCK, *args], env=instock_env(database_url, tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)


def test_token_prints_only_a_token_for_the_configured_key(database_url: str,
                                                           tmp_path: Path) -> None:
    result = instock(database_url, tmp_path, "token", "--role", "customer", "--subject", "c-7")
    assert result.returncode == 0
    principal = TokenAuthority(TEST_SECRET, "instock", 60).verify(result.stdout.strip())
    assert (principal.role, principal.subject) == (Role.CUSTOMER, "c-7")
    assert instock(database_url, tmp_path, "token", "--role", "pirate").returncode != 0


async def test_audit_verify_passes_on_the_demo_and_fails_loudly_after_tampering(
        database_url: str, tmp_path: Path) -> None:
    assert instock(database_url, tmp_path, "seed", "demo").returncode == 0
    ok = instock(database_url, tmp_path, "audit", "verify")
    assert ok.returncode == 0 and "ledger verified" in ok.stderr

    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(
            "UPDATE ledger SET on_hand = on_hand + 1 WHERE sku = 'HOOD-01-M' AND version = 1"))
    await engine.dispose()
    bad = instock(database_url, tmp_path, "audit", "verify")
    assert bad.returncode == 1
    assert "HOOD-01-M" in bad.stderr and "altered" in bad.stderr


async def test_dead_letters_are_listed_and_replayed_from_the_command_line(
        container: Container, database_url: str, tmp_path: Path) -> None:
    await stocked(container, "DLQ-1", 3)
    async with container.db.write() as conn:
        envelope = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "inventory.stock_changed.v1"))).scalar_one()
        await inbox.bury(conn, "recs-availability", envelope, "RuntimeError('down')", 5)

    listed = instock(database_url, tmp_path, "events", "dlq", "list")
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (letter["event_id"], letter["consumer"]) == (envelope["id"], "recs-availability")
    assert "down" in letter["error"] and letter["replayed_at"] is None

    replayed = instock(database_url, tmp_path, "events", "dlq", "replay", "--id", letter["id"])
    assert [json.loads(line)["outcome"] for line in replayed.stdout.splitlines()] == ["applied"]
    assert instock(database_url, tmp_path, "events", "dlq", "list").stdout == ""
    async with container.db.read() as conn:
        assert await recs_store.availability(conn, ["DLQ-1"]) == {"DLQ-1": (1, 3)}


def test_event_schemas_check_finds_stale_files(database_url: str, tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "events"
    assert instock(database_url, tmp_path, "events", "schemas", "--check",
                   "--dir", str(docs)).returncode == 0
    elsewhere = tmp_path / "events"
    assert instock(database_url, tmp_path, "events", "schemas", "--check",
                   "--dir", str(elsewhere)).returncode == 1
    assert instock(database_url, tmp_path, "events", "schemas", "--dir",
                   str(elsewhere)).returncode == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(p.name for p in docs.iterdir())
