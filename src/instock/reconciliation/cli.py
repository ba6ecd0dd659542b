"""`instock reconcile ...`: a reconciliation pass on demand (mounted by instock.cli)."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

reconcile_app = typer.Typer(help="Reconciliation: stock against its ledger, reservations and "
                                 "outbox.", no_args_is_help=True)
err = Console(stderr=True)


@reconcile_app.command("run")
def run(sku: str | None = typer.Option(None, "--sku", help="check this SKU only"),
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="report drifts; record and repair nothing"),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """One pass now: what changed since the last pass, what triggers marked, and the next
    stretch of the sweep. Exits 0 whether or not it found drift."""
    from instock.app import build

    async def main() -> dict[str, object]:
        container = build()
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err, transient=as_json) as bars:
                task = bars.add_task("checking SKUs", total=None)
                report = await container.reconciliation.run_pass(
                    sku, dry_run, progress=lambda done, total: bars.update(
                        task, completed=done, total=total))
            return report.as_json()
        finally:
            await container.close()

    report = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    drifts = report["drifts"]
    assert isinstance(drifts, list)
    colour = "green" if not drifts else "red"
    err.print(f"[{colour}]{len(drifts)} drift(s)[/{colour}] in {report['checked']} stock levels "
              f"of {report['skus']} SKUs ({report['entries']} ledger entries folded, "
              f"{report['repaired']} repaired, {report['seconds']} s)")
    for drift in drifts:
        err.print(f"  - {drift['kind']}: {drift['detail']}")
