"""The fleet's gate, run by the instock image from a ConfigMap (deploy/k8s/base):

    python schema_gate.py wait      init container of every Deployment: refuse placeholder
                                    secrets, then wait until the database schema is at the
                                    Alembic head this image carries (the migration Job's work)
    python schema_gate.py check     the same once, no waiting: the workers' startup and
                                    readiness probe (a worker serves no HTTP)
    python schema_gate.py secrets   placeholders only: the migration Job's init container

Exit status 0: go on; 1: not yet or never (stderr says which and why). A schema *newer* than
this image's head (a later release migrated, this pod is a rollback or an old replica) is
accepted: migrations add before they take away, so the previous release runs on the next
schema. Nothing here prints a URL: they hold passwords.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import create_async_engine

from instock.migrate import alembic_config

PLACEHOLDER = "CHANGE-ME"  # what deploy/k8s/base/config/secrets.env holds until replaced
POLL_SECONDS = 5.0


def placeholders(environ: Mapping[str, str]) -> list[str]:
    """The settings (and key files they name) still holding the base's placeholder."""
    found = sorted(name for name, value in environ.items()
                   if name.startswith("INSTOCK_") and PLACEHOLDER in value)
    key_file = environ.get("INSTOCK_JWT_PRIVATE_KEY_FILE")
    if key_file and Path(key_file).is_file() and PLACEHOLDER in Path(key_file).read_text(
            errors="replace"):
        found.append(key_file)
    return found


async def _current_revision(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                    ).scalar()
    finally:
        await engine.dispose()


def verdict(url: str) -> tuple[bool, str]:
    """(go, why): whether the schema is at this image's head or past it."""
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    try:
        current = asyncio.run(_current_revision(url))
    except Exception as exc:  # down, unreachable, or never migrated: all of them "not yet"
        return False, f"database not ready ({type(exc).__name__}); this image needs {head}"
    if current == head:
        return True, f"schema at {head}"
    if current is None:
        return False, f"schema not migrated; this image needs {head}"
    try:
        script.get_revision(current)
    except (CommandError, RevisionError):
        return True, f"schema at {current}, past this image's {head} (a later release's)"
    return False, f"schema at {current}; this image needs {head}: the migration Job runs"


def main(argv: list[str], environ: Mapping[str, str]) -> int:
    mode = argv[1] if len(argv) > 1 else ""
    if mode not in ("wait", "check", "secrets"):
        print(__doc__, file=sys.stderr)
        return 2
    if found := placeholders(environ):
        print(f"refusing to start: placeholder values ({PLACEHOLDER}) in {', '.join(found)};"
              " give the real secrets (deploy/k8s/base/kustomization.yaml)", file=sys.stderr)
        return 1
    if mode == "secrets":
        return 0
    url = environ.get("INSTOCK_DATABASE_URL", "")
    deadline = time.monotonic() + float(environ.get("INSTOCK_SCHEMA_WAIT_SECONDS", "900"))
    while True:
        ready, why = verdict(url)
        print(why, file=sys.stderr, flush=True)
        if ready:
            return 0
        if mode == "check" or time.monotonic() >= deadline:
            return 1
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
