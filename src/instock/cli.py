"""The `instock` command: serve, migrate, seed, token, audit, worker."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from instock.app import Container, build
from instock.bench.cli import bench_app
from instock.platform.auth import Role
from instock.recommendations.cli import recs_app

T = TypeVar("T")

app = typer.Typer(help="instock: inventory that is never oversold, live.", no_args_is_help=True)
seed_app = typer.Typer(help="Load data.", no_args_is_help=True)
audit_app = typer.Typer(help="Prove the ledger.", no_args_is_help=True)
worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)
app.add_typer(seed_app, name="seed")
app.add_typer(audit_app, name="audit")
app.add_typer(worker_app, name="worker")
app.add_typer(recs_app, name="recs")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)


def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run one async command against freshly built adapters, disposing of them after."""
    async def main() -> T:
        container = build()
        try:
            return await work(container)
        finally:
            await container.db.dispose()

    return asyncio.run(main())


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from instock.config import get_settings
    from instock.migrate import upgrade

    upgrade(get_settings().database_url)
    err.print("[green]database migrated[/green]")


@seed_app.command("demo")
def seed_demo() -> None:
    """Load the demo catalogue (a streetwear drop and a cosmetics line in lots). Idempotent."""
    from instock.config import get_settings
    from instock.migrate import upgrade
    from instock.seed import seed_demo as seed

    upgrade(get_settings().database_url)
    created = with_container(seed)
    err.print("[green]demo data loaded[/green]" if created else "demo data already present")


@app.command()
def token(role: Role = typer.Option(..., "--role", help="the role the token carries"),
          subject: str | None = typer.Option(None, "--subject", help="user or customer id")
          ) -> None:
    """Print a bearer token for the configured key (the bare token alone on stdout)."""
    container = build()
    typer.echo(container.tokens.mint(role, subject))


@app.command()
def serve(host: str | None = typer.Option(None, "--host"),
          port: int | None = typer.Option(None, "--port"),
          demo: bool = typer.Option(False, "--demo", help="load the demo catalogue first"),
          workers: int = typer.Option(1, "--workers", help="API processes")) -> None:
    """Serve the API (migrating first)."""
    import uvicorn

    from instock.config import get_settings

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    if demo:
        seed_demo()
    else:
        migrate()
    container = build()
    admin = container.tokens.mint(Role.ADMIN, "admin")
    err.print(f"instock on [bold]http://{host}:{port}[/bold]  ·  API docs: "
              f"[bold]http://{host}:{port}/docs[/bold]  ·  database: {container.db.backend}",
              soft_wrap=True)
    err.print(f"admin token (valid {settings.jwt_ttl_seconds // 3600} h):")
    typer.echo(admin, err=True)  # unwrapped, so it can be copied whole
    uvicorn.run("instock.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


@audit_app.command("verify")
def audit_verify() -> None:
    """Re-fold the whole ledger: it must equal the stock levels, every chain unbroken."""
    report = with_container(lambda c: c.inventory.audit())
    if report.ok:
        err.print(f"[green]ledger verified[/green]: {report.entries} entries, "
                  f"{report.levels} stock levels, every chain intact")
        return
    err.print(f"[red]ledger check FAILED[/red]: {len(report.problems)} problems")
    for problem in report.problems[:200]:
        err.print(f"  - {problem}")
    sys.exit(1)


@worker_app.command("sweeper")
def worker_sweeper(interval: float = typer.Option(1.0, "--interval")) -> None:
    """Expire overdue reservations and lots, forever (several may run)."""
    from instock.app import run_sweeper

    with_container(lambda c: run_sweeper(c.inventory, interval))


def main() -> None:
    app()
