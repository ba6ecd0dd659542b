"""`instock privacy ...`: master key rotation, a person's export and erasure, from a shell
(mounted by instock.cli)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import typer
from fastapi.encoders import jsonable_encoder
from rich.console import Console

if TYPE_CHECKING:
    from instock.app import Container

privacy_app = typer.Typer(help="Personal data: key rotation, export, erasure.",
                          no_args_is_help=True)
err = Console(stderr=True)


def _with_container(work: Callable[[Container], Awaitable[Any]]) -> Any:
    from instock.cli import with_container  # the command that mounts this one: loaded

    return with_container(work)


@privacy_app.command("rotate")
def rotate() -> None:
    """Rewrap every data key under the current (first) master key, then hash every email
    again under it: afterwards the older master keys may leave INSTOCK_PII_MASTER_KEYS."""
    async def work(c: Container) -> tuple[int, int, str]:
        return (await c.privacy.rotate(), await c.customers.rehash_emails(),
                c.privacy.keyring.current.kid)

    moved, rehashed, kid = _with_container(work)
    err.print(f"[green]rotated[/green]: {moved} data keys rewrapped, {rehashed} email hashes "
              f"renewed under {kid}")


@privacy_app.command("export")
def export(customer_id: str) -> None:
    """Print everything instock holds about the person, as JSON."""
    async def work(c: Container) -> dict[str, Any]:
        return await c.privacy.export(customer_id)

    typer.echo(json.dumps(jsonable_encoder(_with_container(work)), indent=2))


@privacy_app.command("erase")
def erase(customer_id: str,
          yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation")) -> None:
    """Forget the person for good (their key is destroyed: nothing sealed opens again)."""
    if not yes:
        typer.confirm(f"Erase {customer_id} for good?", abort=True)

    async def work(c: Container) -> bool:
        return await c.privacy.erase(customer_id)

    done = _with_container(work)
    err.print(f"{customer_id}: " + ("[green]erased[/green]" if done else "already erased"))
