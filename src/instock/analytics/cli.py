"""`instock analytics ...`: inventory analytics commands (mounted by instock.cli as `analytics`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

analytics_app = typer.Typer(help="Inventory analytics: facts rebuilt, SKU reports, demand "
                                 "forecasts and their backtest.")


class SalesFormat(StrEnum):
    taobao = "taobao"
    csv = "csv"


class SeriesLevel(StrEnum):
    category = "category"
    sku = "sku"


@analytics_app.callback()
def _analytics() -> None:
    """Sales facts, velocity, cover and drops; demand forecasts checked on real sales logs."""


@contextmanager
def _bars(err: Console, transient: bool, labels: Mapping[str, str] | None = None
          ) -> Iterator[Callable[[str, int, int | None], None]]:
    """Progress bars on stderr, one per stage as work reports it: `progress(stage, done,
    total)` (a stage shown by its label in `labels`, else by its own name)."""
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err, transient=transient) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task((labels or {}).get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done)

        yield progress


def _since(value: str) -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or a number of days ago ("90d")."""
    if value.endswith("d") and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(value[:-1]))
    try:
        found = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("an ISO date or time, or days ago such as 90d",
                                 param_hint="--since") from exc
    return found if found.tzinfo else found.replace(tzinfo=UTC)


@analytics_app.command("rebuild")
def rebuild_command(
    since: str = typer.Option(..., "--since", help="rebuild the facts from here: an ISO date "
                                                   "or time, or days ago (90d)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Rebuild the hourly facts from `--since` from the ledger (every SKU's, in chunks under
    its lock: safe beside the live consumer) and the behaviour log."""
    from instock.cli import with_container  # the command that mounts this one: loaded

    start = _since(since)
    err = Console(stderr=True)
    with _bars(err, as_json, {"ledger": "SKUs from the ledger",
                              "behaviour": "behaviour events"}) as progress:
        report = with_container(lambda c: c.analytics.rebuild(start, progress))
    report_out = {"since": start.isoformat(), **report}
    if as_json:
        typer.echo(json.dumps(report_out))
    else:
        err.print(f"[green]rebuilt[/green] from {start:%Y-%m-%d %H:%M} UTC: {report['skus']} "
                  f"SKUs, {report['entries']} ledger entries, {report['fact_rows']} fact rows, "
                  f"{report['views_and_carts']} views and add-to-carts")


def _table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"{report['dataset']}: {report['series']} {report['series_level']} series, "
        f"{report['evaluations']} forecasts of {report['horizon_days']} day(s) in "
        f"{report['granularity']} buckets from {len(report['origins'])} origins"
    )
    for col in ("model", "MASE", "bias", "MAE"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in report["models"].items():
        table.add_row(name, f"{m['mase']:.4f}", f"{m['bias']:+.1%}", f"{m['mae']:.4f}")
    return table


def _draw(report: dict[str, Any], path: Path) -> None:
    """Actual demand and each model's forecast, summed over the series evaluated at each origin."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt
    from matplotlib.dates import date2num

    step = timedelta(hours=int(report["granularity"].removesuffix("h")))
    styles = {"actual": "k-", "instock": "C0-", "seasonal_naive": "C1--", "moving_average": "C2:"}
    fig, ax = plt.subplots(figsize=(10, 4))
    for n, segment in enumerate(report["timeline"]):
        origin = datetime.fromisoformat(segment["origin"])
        buckets = len(segment["actual"])
        # one edge more than buckets, the last value repeated: steps-post draws every bucket
        edges = date2num([origin + k * step for k in range(buckets + 1)])
        for name, style in styles.items():
            ax.plot(edges, [*segment[name], segment[name][-1]], style, drawstyle="steps-post",
                    label=name if n == 0 else None)
    ax.xaxis_date(tz=datetime.fromisoformat(report["origins"][0]).tzinfo)  # the shop's clock
    ax.set_ylabel(f"units per {report['granularity']}")
    ax.set_title(f"{report['dataset']}: actual vs forecast ({report['series']} series)")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@analytics_app.command("backtest")
def backtest_command(
    data: Path = typer.Option(..., "--data", help="The sales log."),
    fmt: SalesFormat = typer.Option(..., "--format", help="Layout of the log."),
    horizon: int = typer.Option(1, "--horizon", min=1, help="Days forecast from each origin."),
    bucket_hours: int = typer.Option(6, "--bucket-hours", min=1, max=24,
                                     help="Hours per bucket; must divide 24."),
    by: SeriesLevel | None = typer.Option(None, "--by",
                                          help="One series per category or per SKU "
                                               "[default: category for taobao, sku for csv]."),
    min_purchases: int = typer.Option(5, "--min-purchases", min=1,
                                      help="Purchases a series needs before an origin."),
    utc_offset: float | None = typer.Option(None, "--utc-offset", min=-12, max=14,
                                            help="Hours from UTC of the shop's day "
                                                 "[default: +8 for taobao, 0 for csv]."),
    png: Path | None = typer.Option(None, "--png", help="Also draw actual vs forecast here."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON report on stdout."),
) -> None:
    """Rolling-origin MASE and bias of instock's forecasts and two baselines on a sales log."""
    # imported here: statsforecast (pandas, statsmodels) would slow down every other command
    from instock.analytics.backtest import FormatError, NotEnoughData, backtest

    if not data.is_file():
        raise typer.BadParameter(f"{data} is not a file", param_hint="--data")
    if 24 % bucket_hours:
        raise typer.BadParameter("must divide 24 (1, 2, 3, 4, 6, 8, 12 or 24)",
                                 param_hint="--bucket-hours")
    err = Console(stderr=True)
    with _bars(err, as_json) as progress:
        try:
            report = backtest(data, fmt.value, horizon_days=horizon, bucket_hours=bucket_hours,
                              by=by.value if by else None, min_purchases=min_purchases,
                              utc_offset_hours=utc_offset, progress=progress)
        except (FormatError, NotEnoughData) as exc:
            raise typer.BadParameter(str(exc), param_hint="--data/--format") from exc
        except UnicodeDecodeError as exc:
            raise typer.BadParameter(f"{data} is not UTF-8 text ({exc.reason} at byte "
                                     f"{exc.start})", param_hint="--data") from exc
    if report["skipped_rows"]:
        err.print(f"[yellow]skipped {report['skipped_rows']} malformed row(s)[/yellow]")
        for example in report["skipped_examples"]:
            err.print(f"  {example}", markup=False, soft_wrap=True)
    if png is not None:
        _draw(report, png)
        err.print(f"drew {png}")
    if as_json:
        typer.echo(json.dumps(report))
    else:
        Console().print(_table(report))


@analytics_app.command("report")
def report_command(
    sku: str = typer.Option(..., "--sku", help="the SKU to report on"),
    days: int = typer.Option(56, "--days", min=7, max=730, help="days of history"),
    horizon: int = typer.Option(14, "--horizon", min=1, max=180, help="days forecast"),
    lead_time: float = typer.Option(7, "--lead-time", min=0, help="days a reorder takes"),
    service_level: float = typer.Option(0.95, "--service-level", min=0.5, max=0.999),
    png: Path | None = typer.Option(None, "--png", help="draw the report here"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """A SKU's velocity (time out of stock left out), cover and stock-out day, its last days,
    a forecast of its daily demand with an interval, and a reorder point and quantity."""
    from instock.analytics.charts import report_chart
    from instock.cli import with_container  # the command that mounts this one: loaded
    from instock.platform.errors import NotFound

    try:
        report = with_container(lambda c: c.analytics.report(
            sku, days=days, horizon=horizon, lead_time_days=lead_time,
            service_level=service_level))
    except NotFound as exc:
        raise typer.BadParameter(str(exc), param_hint="--sku") from exc
    err = Console(stderr=True)
    if png is not None:
        report_chart(report, png)
        err.print(f"drew {png}")
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    reorder = report["reorder"]
    err.print(f"{sku}: {report['velocity_7d']:g}/day (7 d), {report['velocity_28d']:g}/day "
              f"(28 d) in stock; {report['available']} available, cover "
              f"{report['days_of_cover']} days, stock-out {report['stockout_on']}; forecast "
              f"{report['forecast']['daily_mean']:g}/day ({report['forecast']['model']}); "
              f"reorder at {reorder['reorder_point']:g}, order {reorder['order_quantity']}")
