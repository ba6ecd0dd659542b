"""The `instock` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from instock.platform.auth import Role, TokenAuthority
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
