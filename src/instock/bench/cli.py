"""The `instock bench` commands."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from instock.bench import drop, events
from instock.bench.buses import default_buses
from instock.bench.drop import queue as drop_queue
from instock.bench.local import run_loop
from instock.bench.plot import (
    analytics_chart,
    checkout_chart,
    drop_chart,
    events_chart,
    graphql_chart,
    privacy_chart,
    queue_chart,
    reconcile_chart,
    recs_chart,
    writes_chart,
)

bench_app = typer.Typer(help="Measure; print JSON on stdout, progress on stderr.",
                        no_args_is_help=True)


@bench_app.command("drop")
def bench_drop(
    units: int = typer.Option(1000, "--units", min=1, help="units of the hot SKU"),
    buyers: int = typer.Option(10_000, "--buyers", min=1, help="buyers released at once"),
    strategy: list[str] | None = typer.Option(
        None, "--strategy", help=f"repeatable, one of {', '.join(drop.STRATEGIES)}. Default: "
        "every one that applies (redis_gate with --redis; only drop_lane with --http)"),
    http: str | None = typer.Option(
        None, "--http", help="a running server's base URL (it must share this "
        "configuration's signing key): the drop lane over HTTP, beside its /livez rate"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend (and PostgreSQL server and login); the bench creates a "
        "fresh database there and never writes into the one named"),
    redis: str | None = typer.Option(
        None, "--redis", envvar="INSTOCK_REDIS_URL",
        help="runs redis_gate, and gives the drop lane its Redis, as the app would"),
    mode: str = typer.Option(
        "drop", "--mode", help="drop: each buyer asks once; sustained: buyers ask again and "
        "again for --seconds while every sell-out is restocked with --units more; queue: "
        "--waiting shoppers hold a waiting room's live standing open on one server, and what "
        "that costs it (memory and CPU each, storefront latency, the admission rate)"),
    seconds: float | None = typer.Option(
        None, "--seconds", min=0.1, help="sustained mode's length (default 10); queue mode: "
        "each storefront measurement's (default 30: its p99 is then the 18th-worst of 1,800 "
        "requests, not the 6th of 600)"),
    waiting: int = typer.Option(10_000, "--waiting", min=1,
                                help="queue mode: shoppers waiting, each with its stream open"),
    rate: float = typer.Option(20.0, "--rate", min=0.01,
                               help="queue mode: the waiting room's admit_per_second"),
    pool: int = typer.Option(20, "--pool", min=1,
                             help="database connections of the per-request strategies "
                             "(and Redis connections of the gate)"),
    connections: int = typer.Option(500, "--connections", min=1,
                                    help="--http: keep-alive connections to the server"),
    gate_crash_after: int | None = typer.Option(
        None, "--gate-crash-after", min=1, help="redis_gate's process dies right after this "
        "many confirmations, its write-behind unflushed: shows what that loses"),
    plot: Path | None = typer.Option(Path("bench-out/drop.png"), "--plot",
                                     help="where to draw throughput and latency CDFs"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """B buyers at once for U units of one SKU: five strategies side by side, checked for
    oversold and lost reservations, not just timed."""
    if mode not in drop.MODES:
        raise typer.BadParameter(f"use one of {', '.join(drop.MODES)}", param_hint="--mode")
    if mode == "queue":
        _bench_queue(drop_queue.QueuePlan(waiting, rate, seconds or drop_queue.SECONDS,
                                          database), plot, json_out)
        return
    seconds = seconds or drop.SUSTAINED_SECONDS
    try:
        chosen = drop.choose(strategy, redis=redis is not None, http=http is not None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from exc
    if gate_crash_after is not None and "redis_gate" not in chosen:
        raise typer.BadParameter("only redis_gate can crash: add --redis",
                                 param_hint="--gate-crash-after")
    plan = drop.Plan(units, buyers, chosen, mode, seconds, pool, database, redis, http,
                     connections, gate_crash_after, tune_gc=True)
    with _progress() as bar:
        result = run_loop(drop.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        drop_chart(report["strategies"], result.latencies_ms,
                   f"instock bench drop: {report['database']}, {units} units, {buyers} buyers, "
                   f"{mode}{' over HTTP' if http else ''}", plot, report.get("livez_rps"))
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


def _bench_queue(plan: drop_queue.QueuePlan, plot: Path | None, json_out: bool) -> None:
    with _progress() as bar:
        result = run_loop(drop_queue.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        queue_chart(report, result.latencies_ms,
                    f"instock bench drop --mode queue: {report['database']}, "
                    f"{report['connected']} waiting, admitting {plan.rate:g}/s", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("checkout")
def bench_checkout(
    orders: int = typer.Option(500, "--orders", min=2, help="orders to check out"),
    skus: int = typer.Option(50, "--skus", min=1, help="SKUs the orders are spread over "
                             "(1: a drop's checkout, every order on the same stock rows)"),
    concurrency: int = typer.Option(20, "--concurrency", min=1, help="buyers at once"),
    provider_latency_ms: float = typer.Option(50.0, "--provider-latency-ms", min=0,
                                              help="the payment sandbox's latency per call"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    plot: Path | None = typer.Option(Path("bench-out/checkout.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Checkout latency end to end (sandbox and API as processes), checked for consistency."""
    from instock.bench import checkout

    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        plan = checkout.Plan(orders, skus, concurrency, provider_latency_ms, database,
                             Path(workdir))
        advance = _Reporter(bar).task("checkouts", orders - 1)
        result = run_loop(checkout.run(plan, advance))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        checkout_chart(result.latencies_ms, f"instock bench checkout: {report['database']}, "
                       f"{orders} orders on {skus} SKUs, {concurrency} buyers, provider "
                       f"{provider_latency_ms:g} ms/call", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("recs")
def bench_recs(
    items: int = typer.Option(100_000, "--items", min=10, help="catalogue items seeded"),
    rate: float = typer.Option(200.0, "--rate", min=1, help="lists asked per second"),
    seconds: float = typer.Option(30.0, "--seconds", min=1, help="how long to ask"),
    shoppers: int = typer.Option(5000, "--shoppers", min=1, help="sessions the lists are for"),
    event_rate: float = typer.Option(20.0, "--event-rate", min=0,
                                     help="view events per second those shoppers send"),
    probes: int = typer.Option(20, "--probes", min=1, help="freshness probes of each kind"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    redis: str | None = typer.Option(None, "--redis",
                                     help="the servers' INSTOCK_REDIS_URL (the list cache)"),
    servers: int = typer.Option(1, "--servers", min=1, help="API processes (`instock serve`); "
                                "each shopper's requests go to one, by a hash of the session"),
    bus: str = typer.Option("memory://", "--bus", help="the servers' INSTOCK_BUS_URL; several "
                            "servers need a shared one (nats://… or redis://…). Each run gets "
                            "its own ?stream=, deleted afterwards"),
    worker: bool = typer.Option(False, "--worker/--no-worker", help="run the outbox relay, "
                                "consumers, sweeper and sagas in their own `instock worker all` "
                                "process, not in the API processes (a fleet's layout; needs a "
                                "shared --bus)"),
    plot: Path | None = typer.Option(Path("bench-out/recs.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Recommendation lists over HTTP at a steady rate on a seeded catalogue (latency, cache
    hits), and how soon an event, and a sold-out, show in the lists (checked, not assumed)."""
    from instock.bench import recs

    if (servers > 1 or worker) and bus.startswith("memory:"):
        raise typer.BadParameter("several processes hear each other only over a shared bus: "
                                 "give --bus nats://127.0.0.1:4222 or redis://…",
                                 param_hint="--bus")
    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        plan = recs.Plan(items, rate, seconds, shoppers, event_rate, probes, database, redis,
                         Path(workdir), servers=servers, bus=bus, worker=worker,
                         tune_gc=True)
        result = run_loop(recs.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        recs_chart(result.latencies_ms, result.freshness_ms,
                   f"instock bench recs: {report['backend']}"
                   f"{' + Redis' if report['redis'] else ''}, {servers} server"
                   f"{'s' if servers > 1 else ''}{' + worker' if worker else ''} on "
                   f"{report['bus']}, {items:,} items, {rate:g} lists/s, "
                   f"{shoppers:,} shoppers", plot, recs.GOAL_P99_MS, recs.GOAL_FRESHNESS_MS)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("events")
def bench_events(
    bus: list[str] | None = typer.Option(
        None, "--bus", help="a bus URL (repeatable). Default: memory:// plus Redis, NATS and "
        "RabbitMQ (INSTOCK_REDIS_URL / INSTOCK_NATS_URL / INSTOCK_RABBITMQ_URL, else their "
        "local standard ports) if they answer. Every run gets its own ?stream=, deleted "
        "afterwards."),
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
    plan = events.Plan(bus or default_buses(), rate, seconds, skus, clients, database,
                       driver, consumers)
    with _progress() as bar:
        result = run_loop(events.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        events_chart(result.latencies_ms, result.memory,
                     f"instock bench events: {report['database']}, {rate:g} changes/s, "
                     f"{clients} clients", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("graphql")
def bench_graphql(
    rate: float = typer.Option(200.0, "--rate", min=0.1,
                               help="product pages per second, each way (query, REST)"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1,
                                  help="how long each way is asked, and changes are made"),
    changes_per_s: float = typer.Option(100.0, "--changes-per-s", min=0.1,
                                        help="stock changes per second for the subscribers"),
    listeners: int = typer.Option(4, "--listeners", min=1,
                                  help="subscribers of the latency part, each on all 20 SKUs"),
    subscribers: int = typer.Option(10_000, "--subscribers", min=0,
                                    help="subscriptions for the capacity part (0 skips it)"),
    quick: bool = typer.Option(False, "--quick", help="a smoke run: rate 20, 1 s, 20 "
                               "changes/s, 50 subscribers (overrides those options)"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend (and PostgreSQL server and login); the bench creates a "
        "fresh database there and never writes into the one named"),
    plot: Path | None = typer.Option(Path("bench-out/graphql.png"), "--plot",
                                     help="where to draw the latency CDFs and memory"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """The product page as one GraphQL query against the REST calls it replaces (same run,
    same rate), commit-to-subscriber latency, and subscribers one process holds."""
    from instock.bench import graphql

    if quick:
        rate, seconds, changes_per_s, subscribers = 20.0, 1.0, 20.0, 50
    plan = graphql.Plan(rate, seconds, changes_per_s, listeners, subscribers, database)
    with _progress() as bar:
        result = run_loop(graphql.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        graphql_chart(result.pages_ms, result.subscription_ms, result.memory,
                      f"instock bench graphql: {report['database']}, {rate:g} pages/s, "
                      f"{changes_per_s:g} changes/s, {report['capacity']['subscribers']:,} "
                      "subscribers", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("writes")
def bench_writes(
    http: str | None = typer.Option(
        None, "--http", help="a running server's base URL (it must share this "
        "configuration's signing key); default: a server of our own on a scratch database"),
    seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="each timed phase: the "
                                  "/livez ceiling, and each case at saturation and at a rate"),
    rate: float | None = typer.Option(
        None, "--rate", min=0.1, help="requests/s offered in every case's fixed-rate phase; "
        "default: half of that case's saturated rate"),
    concurrency: int = typer.Option(32, "--concurrency", min=1,
                                    help="closed-loop clients at saturation and for /livez"),
    skus: int = typer.Option(1000, "--skus", min=1,
                             help="SKUs the adjustments and the reservations spread over"),
    checkout_skus: int = typer.Option(100, "--checkout-skus", min=1,
                                      help="SKUs the checkouts spread over"),
    drop_units: int = typer.Option(1000, "--drop-units", min=1, help="units of the drop's SKU"),
    drop_buyers: int = typer.Option(10_000, "--drop-buyers", min=1,
                                    help="the drop's buyers, released at once"),
    drop_connections: int = typer.Option(500, "--drop-connections", min=1,
                                         help="the drop's keep-alive connections"),
    case: list[str] | None = typer.Option(None, "--case", help="repeatable: adjustment, "
                                          "reservation, checkout, drop. Default: all"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend (and PostgreSQL server and login); the bench creates a "
        "fresh database there and never writes into the one named"),
    plot: Path | None = typer.Option(Path("bench-out/writes.png"), "--plot",
                                     help="where to draw throughput against /livez and the "
                                     "latency CDFs"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Adjustments, reservations + commits, checkouts and the drop over HTTP, each at
    saturation and at a fixed rate, against the same server's /livez: requests/s, latency,
    and the server's own SQL statements, transactions and CPU per request; checked for
    oversold and lost writes, the ledger re-folded."""
    from instock.bench import writes

    unknown = [c for c in case or () if c not in writes.CASES]
    if unknown:
        raise typer.BadParameter(f"use {', '.join(writes.CASES)}", param_hint="--case")
    plan = writes.Plan(seconds, rate, concurrency, skus, checkout_skus, drop_units,
                       drop_buyers, drop_connections,
                       tuple(dict.fromkeys(case)) if case else writes.CASES, database, http)
    with _progress() as bar:
        result = run_loop(writes.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        writes_chart(report["cases"], report["livez_rps"], result.saturated_ms,
                     result.offered_ms, f"instock bench writes: {report['database']}, "
                     f"{concurrency} clients, {seconds:g} s a phase", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("fleet")
def bench_fleet(
    api: int = typer.Option(3, "--api", min=1, help="API processes behind HAProxy"),
    workers: int = typer.Option(2, "--workers", min=0, help="`instock worker all` beside them"),
    seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="each timed phase"),
    concurrency: int = typer.Option(32, "--concurrency", min=1, help="closed-loop clients"),
    skus: int = typer.Option(1000, "--skus", min=1, help="SKUs the workload spreads over"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    bus: str | None = typer.Option(
        None, "--bus", help="the fleet's bus (nats://… or redis://…); default: NATS, else "
        "Redis, whichever answers (INSTOCK_NATS_URL / INSTOCK_REDIS_URL or the standard "
        "ports). The run gets its own ?stream=, deleted afterwards"),
    redis: str | None = typer.Option(None, "--redis", envvar="INSTOCK_REDIS_URL",
                                     help="the processes' INSTOCK_REDIS_URL"),
    plot: Path | None = typer.Option(Path("bench-out/fleet.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Stock reads and reservations + commits over 1,000 SKUs against one API process
    directly and against N of them behind HAProxy: requests/s, latency, the ratio, CPU per
    request by process kind, and what the balancer adds."""
    from instock.bench import fleet
    from instock.fleet.lb import LoadBalancerError, haproxy

    answering = default_buses()
    shared = bus or next((b for scheme in ("nats", "redis") for b in answering
                          if b.startswith(scheme)), None)
    if shared is None or shared.startswith("memory"):
        raise typer.BadParameter("a fleet needs a shared bus: nats://… or redis://…",
                                 param_hint="--bus")
    try:
        haproxy()
    except LoadBalancerError as exc:
        raise typer.BadParameter(str(exc)) from exc
    plan = fleet.BenchPlan(api, workers, seconds, concurrency, skus, database, shared, redis)
    with _progress() as bar:
        result = run_loop(fleet.run(plan, _Reporter(bar)))
    report = result.report
    if plot is not None and plot != Path():  # --plot "" draws nothing
        from instock.bench.plot import fleet_chart

        fleet_chart(report, result.latencies_ms,
                    f"instock bench fleet: {report['database']}, {report['bus']}, {api} API "
                    f"processes + {workers} workers behind HAProxy vs 1 directly, "
                    f"{concurrency} clients, {os.cpu_count()} CPUs", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("reconcile")
def bench_reconcile(
    skus: int = typer.Option(100_000, "--skus", min=1, help="SKUs in the catalogue"),
    changed: float = typer.Option(0.01, "--changed", min=0, max=1,
                                  help="share of the SKUs changed before the second pass"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    plot: Path | None = typer.Option(Path("bench-out/reconcile.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """A reconciliation pass on a large catalogue: the first (every level), after a share
    changed, and with nothing changed: seconds, SQL statements, levels checked."""
    from instock.bench import reconcile

    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        report = run_loop(reconcile.run(database, Path(workdir), skus, changed, _Reporter(bar)))
    if plot is not None and plot != Path():  # --plot "" draws nothing
        reconcile_chart(report["passes"], f"instock bench reconcile: {report['database']}, "
                        f"{skus} SKUs, {report['changed']} changed", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("analytics")
def bench_analytics(
    rate: float = typer.Option(1000, "--rate", min=1,
                               help="sales a second written as a group commit writes them"),
    service_rate: float = typer.Option(
        250, "--service-rate", min=1,
        help="sales a second offered through the inventory service (in the same process)"),
    seconds: float = typer.Option(10, "--seconds", min=1),
    skus: int = typer.Option(1000, "--skus", min=1, help="SKUs the sales are spread over"),
    reads: int = typer.Option(500, "--reads", min=1,
                              help="reads of a SKU with a year of hourly facts"),
    rebuild_skus: int = typer.Option(10_000, "--rebuild-skus", min=0,
                                     help="SKUs with a year of ledger to rebuild (0: skip)"),
    sale_every_days: float = typer.Option(2.0, "--sale-every-days", min=0.01),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates fresh databases there"),
    plot: Path | None = typer.Option(Path("bench-out/analytics.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Analytics: each sale's lag from commit to the facts at a fixed rate of sales (through
    the service, and written in bulk at the full rate), a SKU's measures read with a year of
    hourly facts (ms), and a rebuild of a year of ledger."""
    import numpy as np

    from instock.bench import analytics

    plan = analytics.Plan(database, Path(), rate, service_rate, seconds, skus, reads,
                          rebuild_skus, sale_every_days)
    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        report = run_loop(analytics.run(replace(plan, workdir=Path(workdir)), _Reporter(bar)))
    lags = report.pop("lags_ms")
    if plot is not None and plot != Path():  # --plot "" draws nothing
        analytics_chart(np.array(lags), f"instock bench analytics: {report['database']}, "
                        f"{rate:g} sales/s written over {skus} SKUs", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("privacy")
def bench_privacy(
    profiles: int = typer.Option(1000, "--profiles", min=1),
    rounds: int = typer.Option(3, "--rounds", min=1),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    plot: Path | None = typer.Option(Path("bench-out/privacy.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """What encryption costs per profile read (and save): the read through the service, the
    same rows without opening them, and the unwrap and decryption alone, in µs."""
    from instock.bench import privacy

    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        report = run_loop(privacy.run(database, Path(workdir), profiles, rounds,
                                      _Reporter(bar)))
    if plot is not None and plot != Path():  # --plot "" draws nothing
        privacy_chart(report, f"instock bench privacy: {report['database']}, "
                      f"{profiles} profiles x {rounds} rounds", plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("draws")
def bench_draws(
    entries: int = typer.Option(5000, "--entries", min=1, help="entrants, one by one"),
    units: int = typer.Option(100, "--units", min=0, help="units available: the winners"),
    reads: int = typer.Option(500, "--reads", min=1, help="standings read after the draw"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """A draw drop's cost: entries per second through the service, the draw over them, and an
    entrant's standing afterwards (p50/p99 in ms)."""
    from instock.bench import draws

    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        report = run_loop(draws.run(database, Path(workdir), entries, units, reads,
                                    _Reporter(bar)))
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("notifications")
def bench_notifications(
    count: int = typer.Option(1000, "--count", min=1, help="back-in-stock mails to send"),
    senders: int = typer.Option(1, "--senders", min=1, help="send loops running at once"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """Notifications sent per second into the local SMTP sink (a real process), with the
    p50/p99 of one SMTP send and of queued-to-sent."""
    from instock.bench import notifications

    with tempfile.TemporaryDirectory() as workdir, _progress() as bar:
        report = run_loop(notifications.run(database, Path(workdir), count, senders,
                                            _Reporter(bar)))
    typer.echo(json.dumps(report, indent=2) if json_out else report)


@bench_app.command("ratelimit")
def bench_ratelimit(
    seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="per case and server"),
    concurrency: int = typer.Option(32, "--concurrency", min=1, help="closed-loop clients"),
    database: str = typer.Option(
        "sqlite+aiosqlite:///bench.db", "--database", envvar="INSTOCK_DATABASE_URL",
        help="chooses the backend; the bench creates a fresh database there"),
    redis: str | None = typer.Option(None, "--redis", envvar="INSTOCK_REDIS_URL",
                                     help="also measure counters shared in this Redis"),
    plot: Path | None = typer.Option(Path("bench-out/ratelimit.png"), "--plot"),
    json_out: bool = typer.Option(True, "--json/--no-json"),
) -> None:
    """What the rate limiter costs a request: the same requests to a server with limits off,
    on with counters in the process, and on with counters in Redis; CPU per request of each."""
    from instock.bench import ratelimit

    with _progress() as bar:
        report = run_loop(ratelimit.run(ratelimit.Plan(database, redis, seconds, concurrency),
                                        _Reporter(bar)))
    if plot is not None and plot != Path():  # --plot "" draws nothing
        ratelimit.chart(report, plot)
        report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2) if json_out else report)


def _progress() -> Progress:
    """Progress bars on stderr: stdout holds only the JSON."""
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True))


class _Reporter:
    def __init__(self, bar: Progress) -> None:
        self.bar = bar

    def task(self, description: str, total: int) -> Callable[[int], None]:
        task = self.bar.add_task(description, total=total)
        return lambda n: self.bar.advance(task, n)

    def note(self, text: str) -> None:
        self.bar.console.log(text)
