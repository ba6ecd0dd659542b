"""The `instock bench` commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from instock.bench import events, reservations
from instock.bench.plot import events_chart, latency_histogram

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


@bench_app.command("events")
def bench_events(
    bus: list[str] | None = typer.Option(
        None, "--bus", help="a bus URL (repeatable). Default: memory:// plus Redis and NATS "
        "(INSTOCK_REDIS_URL / INSTOCK_NATS_URL, else their local standard ports) if they "
        "answer. Every run gets its own ?stream=, deleted afterwards."),
    rate: float = typer.Option(1000.0, "--rate", min=0.1, help="changes per second offered"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="how long to offer them"),
    skus: int = typer.Option(100, "--skus", min=1, help="SKUs the changes spread over"),
    clients: int = typer.Option(10_000, "--clients", min=0,
                                help="SSE clients for the capacity part (0 skips it)"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend (and PostgreSQL server and login); the bench creates fresh "
        "databases there and never writes into the one named"),
    driver: str = typer.Option(
        "http", "--driver", help="http: stock adjustments posted to the server; service: "
        "InventoryService.adjust in this process; outbox: only the version bump and its event, "
        "from this process (the push path alone). The last two wake the server's relay by "
        "NOTIFY on PostgreSQL, only by its 1 s poll on SQLite"),
    consumers: bool = typer.Option(False, "--consumers/--no-consumers",
                                   help="also run the event consumers in the server"),
    plot: Path | None = typer.Option(Path("bench-out/events.png"), "--plot",
                                     help="where to draw latency CDFs and memory"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Commit-to-SSE latency per bus at a steady rate, and SSE clients one process holds."""
    if driver not in events.DRIVERS:
        raise typer.BadParameter(f"use one of {', '.join(events.DRIVERS)}",
                                 param_hint="--driver")
    plan = events.Plan(bus or events.default_buses(), rate, seconds, skus, clients, database,
                       driver, consumers)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        result = events.run_loop(events.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None:
        events_chart(result.latencies_ms, result.memory,
                     f"instock bench events: {report['database']}, {rate:g} changes/s, "
                     f"{clients} clients", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


class _Reporter:
    def __init__(self, bar: Progress) -> None:
        self.bar = bar

    def task(self, description: str, total: int) -> Callable[[int], None]:
        task = self.bar.add_task(description, total=total)
        return lambda n: self.bar.advance(task, n)

    def note(self, text: str) -> None:
        self.bar.console.log(text)
