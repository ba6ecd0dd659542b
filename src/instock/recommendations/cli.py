"""`instock recs ...`: the recommendation commands (mounted by instock.cli as `recs`)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

recs_app = typer.Typer(help="Recommendations: offline evaluation against baselines.")


class DataFormat(StrEnum):
    yoochoose = "yoochoose"
    taobao = "taobao"
    rees46 = "rees46"
    csv = "csv"


class TargetKind(StrEnum):
    next = "next"
    purchase = "purchase"


@recs_app.callback()
def _recs() -> None:
    """Recommendation models and their offline evaluation."""


def _table(report: dict[str, Any]) -> Table:
    k = report["k"]
    table = Table(title=f"{report['dataset']}: {report['targets']} targets ({report['target']})",
                  caption=_verdict(report.get("versus_best_baseline", {})))
    for col in ("model", f"HR@{k}", "95% CI", f"MRR@{k}", "95% CI", f"NDCG@{k}", "coverage",
                "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in report["models"].items():
        table.add_row(name, f"{m['hr']:.4f}", _interval(m["hr_ci"]), f"{m['mrr']:.4f}",
                      _interval(m["mrr_ci"]), f"{m['ndcg']:.4f}", f"{m['coverage']:.4f}",
                      f"{m['seconds']}")
    return table


def _interval(bounds: list[float]) -> str:
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _verdict(versus: dict[str, Any]) -> str:
    """One line a metric: instock minus the best baseline, and whether the interval says win."""
    return "\n".join(
        f"{metric.upper()}: instock - {v['baseline']} = {v['difference']:+.4f} "
        f"{_interval(v['ci'])}: {'a win' if v['wins'] else 'not a sure win'}"
        for metric, v in versus.items())


@recs_app.command("evaluate")
def evaluate_command(
    data: Path = typer.Option(..., "--data", help="Folder (yoochoose) or log file (others)."),
    fmt: DataFormat = typer.Option(..., "--format", help="Layout of the data."),
    k: int = typer.Option(20, "--k", min=1, help="Length of the ranked list."),
    target: TargetKind = typer.Option(
        TargetKind.next, "--target", help="next event, or next purchase only."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON report on stdout."),
    budget_seconds: float = typer.Option(
        120.0, "--budget-seconds", min=0.0,
        help="Time for choosing the hybrid's components, hyper-parameters and weights on "
             "validation data (the base configuration is always tuned).",
    ),
) -> None:
    """HR@k, MRR@k, NDCG@k and coverage of instock's hybrid and the baselines on one data set."""
    # imported here: NumPy/SciPy/implicit would slow down every other `instock` command
    from instock.recommendations.evaluate import FormatError, evaluate

    if not data.exists():
        raise typer.BadParameter(f"{data} does not exist", param_hint="--data")
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        try:
            report = evaluate(data, fmt.value, k=k, target=target.value, progress=progress,
                              budget_seconds=budget_seconds)
        except (FormatError, FileNotFoundError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--data/--format") from exc
    if report["skipped_rows"]:
        err.print(f"[yellow]skipped {report['skipped_rows']} malformed row(s)[/yellow]")
        for example in report["skipped_examples"]:
            err.print(f"  {example}", markup=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        Console().print(_table(report))
