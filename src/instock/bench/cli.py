"""The `instock bench` commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from instock.bench import reservations
from instock.bench.plot import latency_histogram

bench_app = typer.Typer(help="Measure; print JSON on stdout, progress on stderr.",
                        no_args_is_help=True)


@bench_app.command("reservations")
def bench_reservations(
    units: int = typer.Option(100, "--units", min=1),
    buyers: int = typer.Option(500, "--buyers", min=1),
    concurrency: int = typer.Option(500, "--concurrency", min=1,
                                    help="requests in flight at once"),
    http: str | None = typer.Option(None, "--http", help="a running server's base URL"),
    plot: Path | None = typer.Option(Path("bench-out/reservations.png"), "--plot",
                                     help="where to draw the latency histogram"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """B buyers race for U units of one SKU; every buyer wants one unit."""
    scenario = reservations.Scenario(units, buyers, concurrency)
    result = asyncio.run(_run(scenario, http))
    latencies = result.pop("latencies_ms")
    if plot is not None:
        latency_histogram(latencies, f"{buyers} buyers, {units} units, {result['database']}",
                          plot)
        result["plot"] = str(plot)
    typer.echo(json.dumps(result, indent=2) if json_out else result)


async def _run(scenario: reservations.Scenario, http: str | None) -> dict[str, Any]:
    from instock.app import build

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("reserving", total=scenario.buyers)

        def advance(n: int) -> None:
            bar.advance(task, n)

        context = (reservations.in_process() if http is None
                   else reservations.remote(http, build().tokens))
        async with context as target:
            result = await reservations.run(target, scenario, advance)
    database = target.database
    backend = "postgresql" if "postgres" in database else "sqlite" if "sqlite" in database \
        else database
    return {"database": backend, "mode": "http" if http else "in-process", **result}
