"""Migrations follow expand/contract, so a rolling deploy needs no downtime: while a release
rolls out, the previous release's processes keep running (and restart) on the new schema.

- The previous release's code (the commit in deploy/previous-release), run as a real process
  on a database the current code migrated, serves and writes beside a process of the current
  code, and the ledger still verifies;
- every migration added since that release only expands (adds tables, nullable columns or
  columns with a default, indexes); one that contracts (drops, renames, narrows) must say
  why the previous release no longer needs what it removes (a module-level `CONTRACT`).
"""

from __future__ import annotations

import ast
import asyncio
import io
import os
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    INSTOCK,
    ServerFactory,
    audit_verify,
    bearer,
    client,
    create_location,
    create_product,
    receive,
    stock,
)

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]
ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = (ROOT / "deploy" / "previous-release").read_text().split()[0]
# Operations that take something away from code that still reads or writes it.
CONTRACTING = {"drop_table", "drop_column", "rename_table", "drop_constraint", "drop_index"}



def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False)


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source tree, from git."""
    if _git("cat-file", "-e", f"{PREVIOUS}^{{commit}}").returncode != 0:
        pytest.fail(f"the previous release {PREVIOUS} is not in this clone's history "
                    "(a shallow clone?): fetch it, or move deploy/previous-release")
    archive = _git("archive", "--format=tar", PREVIOUS, "src", "migrations")
    assert archive.returncode == 0, archive.stderr.decode()
    tree = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def test_migrations_since_the_previous_release_only_expand() -> None:
    before = set(_git("ls-tree", "--name-only", f"{PREVIOUS}:migrations/versions").stdout
                 .decode().split())
    for path in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        if path.name in before:
            continue
        tree = ast.parse(path.read_text())
        upgrade = next(node for node in tree.body
                       if isinstance(node, ast.FunctionDef) and node.name == "upgrade")
        taken = sorted({node.func.attr for node in ast.walk(upgrade)
                        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in CONTRACTING}
                       | {"alter_column(nullable=False)" for node in ast.walk(upgrade)
                          if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                          and node.func.attr == "alter_column"
                          and any(k.arg == "nullable" and isinstance(k.value, ast.Constant)
                                  and k.value.value is False for k in node.keywords)})
        says_why = any(isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CONTRACT" for t in node.targets)
            for node in tree.body)
        assert not taken or says_why, (
            f"{path.name} contracts ({', '.join(taken)}) while the previous release may still "
            "use it: split it (expand now, contract in a later release) or set CONTRACT")


async def test_the_previous_release_runs_on_the_new_schema(servers: ServerFactory,
                                                            previous_release: Path) -> None:
    env = {"PYTHONPATH": str(previous_release / "src")}
    which = subprocess.run(
        [str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "python"), "-c",
         "import instock; print(instock.__file__)"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True)
    assert which.stdout.startswith(str(previous_release)), which.stdout  # really the old code

    # The database is at this release's head (the fixture migrated it); both start on it. The
    # old process does not migrate: in a rolling deploy the migration runs once, before (the
    # Kubernetes Job; `instock migrate`), and a release older than its schema's head cannot
    # (that release's `instock serve` always tries: its app runs under uvicorn here).
    new, old = await asyncio.gather(servers.start(), servers.start(
        app_only=True, **env, INSTOCK_MIGRATE_ON_START="false"))
    # Tokens do not cross this boundary: the previous release predates the token rules of
    # issue 20 (`aud` and `kid` required, and PyJWT there refuses an `aud` it was not told
    # of), so each side is called with a token of its own release, and refuses the other's.
    minted = subprocess.run([INSTOCK, "token", "--role", "admin"], capture_output=True,
                            text=True, check=True, env=servers.db.env(**env))
    old_token = minted.stdout.split()[-1]
    async with httpx.AsyncClient(base_url=old.base_url, timeout=60, headers={
            "Authorization": f"Bearer {old_token}"}) as before, \
            client(new.base_url, Role.ADMIN) as after:
        assert (await after.get("/v1/locations", headers={
            "Authorization": f"Bearer {old_token}"})).status_code == 401
        assert (await before.get("/v1/locations", headers=bearer(Role.ADMIN))).status_code == 401
        await create_product(before, "tee", ["TEE-S", "TEE-M"])
        await create_location(before, "wh-1")
        await receive(before, "TEE-S", "wh-1", 10)
        await receive(after, "TEE-M", "wh-1", 10)
        for api, other, sku in ((before, after, "TEE-M"), (after, before, "TEE-S")):
            held = await api.post("/v1/reservations", json={
                "lines": [{"sku": sku, "quantity": 2}], "customer_id": "ann"})
            assert held.status_code == 201, held.text
            committed = await other.post(f"/v1/reservations/{held.json()['id']}/commit")
            assert committed.status_code == 200, committed.text
        for api in (before, after):
            for sku in ("TEE-S", "TEE-M"):
                level = await stock(api, sku)
                assert (level["available"], level["committed"]) == (8, 2), level
    code, report = await audit_verify(servers.db)
    assert code == 0, report
