"""The `instock` command as a user runs it: real processes, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from instock.platform.auth import Role, TokenAuthority
from tests.support import TEST_SECRET

INSTOCK = str(Path(sys.executable).with_name("instock"))


def instock(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_JWT_SECRET=TEST_SECRET,
               INSTOCK_STATE_DIR=str(tmp_path / "state"))
    return subprocess.run([INSTOCK, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


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
