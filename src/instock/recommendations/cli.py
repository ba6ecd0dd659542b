"""`instock recs ...`: the recommendation commands (mounted by instock.cli as `recs`)."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

recs_app = typer.Typer(
    help="Recommendations: offline evaluation against baselines, training artefacts.")
# Spark's own notation: local mode with two worker threads (a cluster: spark://host:7077, yarn).
SPARK_MASTER = "local[2]"
SPARK_MISSING = ("PySpark is not installed: `make spark` installs it into .venv (pip's "
                 "`instock[spark]` extra; it needs Java 17 or 21)")


class DataFormat(StrEnum):
    yoochoose = "yoochoose"
    taobao = "taobao"
    rees46 = "rees46"
    csv = "csv"


class TrainEngine(StrEnum):
    local = "local"
    spark = "spark"


class StreamEngine(StrEnum):
    spark = "spark"


class TargetKind(StrEnum):
    next = "next"
    purchase = "purchase"


@recs_app.callback()
def _recs() -> None:
    """Recommendation models, their offline evaluation and their training artefacts."""


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
    from instock.recommendations.evaluate import evaluate
    from instock.recommendations.logs import FormatError

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


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console)


def _stored_events(limit: int, err: Console) -> Any:
    """The database's newest behaviour events as a log (RawEvents)."""
    from instock.cli import with_container  # the command that mounts this one: loaded
    from instock.recommendations.training import stored_events

    with err.status("reading the stored behaviour events"):
        rows = with_container(lambda c: c.recommendations.stored_behaviour(limit))
    return stored_events(rows)


def _spark_session(master: str) -> Any:
    """A Spark session, or a clear error when PySpark is not installed."""
    try:
        from instock.recommendations import spark
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("pyspark", "py4j"):
            raise typer.BadParameter(SPARK_MISSING, param_hint="--engine") from exc
        raise
    return spark.session(master)


@recs_app.command("train")
def train_command(
    data: Path | None = typer.Option(None, "--data",
                                     help="A log in the `csv` format of evaluate."),
    from_db: bool = typer.Option(False, "--from-db", help="Read the stored behaviour events "
                                 "of INSTOCK_DATABASE_URL instead of --data."),
    limit: int = typer.Option(5_000_000, "--limit", min=1,
                              help="--from-db: at most this many of the newest events."),
    out: Path = typer.Option(..., "--out", help="The artefact to publish (a symlink, swapped "
                             "atomically onto each new version)."),
    engine: TrainEngine = typer.Option(
        TrainEngine.local, "--engine", help="local: in process (the default); spark: PySpark, "
        "for logs too big for one process."),
    master: str | None = typer.Option(None, "--master", help="Spark master (--engine spark; "
                                      f"default {SPARK_MASTER})."),
) -> None:
    """Fit the served components' statistics (co-occurrence, sequential rules, popularity with
    decay, ALS) from a log and publish them as an artefact (INSTOCK_RECS_ARTEFACTS loads it)."""
    from instock.recommendations.artefacts import ArtefactError, publish
    from instock.recommendations.logs import FormatError
    from instock.recommendations.training import EmptyLog

    if (data is None) == (not from_db):
        raise typer.BadParameter("give a log (--data) or --from-db, one of them",
                                 param_hint="--data/--from-db")
    if master is not None and engine is not TrainEngine.spark:
        raise typer.BadParameter("--master is for --engine spark", param_hint="--master")
    if data is not None and not data.is_file():
        raise typer.BadParameter(f"{data} is not a file", param_hint="--data")
    err = Console(stderr=True)
    began = time.perf_counter()
    try:
        raw = _stored_events(limit, err) if from_db else None
        if engine is TrainEngine.spark:
            session = _spark_session(master or SPARK_MASTER)
            from instock.recommendations import spark

            with _progress(err) as bar:
                task = bar.add_task("spark", total=spark.TRAIN_STEPS)

                def step(label: str, done: int, total: int) -> None:
                    bar.update(task, description=label, completed=done, total=total)

                if raw is not None:
                    events = spark.raw_events(session, raw)
                else:
                    assert data is not None  # one of them, checked above
                    events = spark.parse_rows(spark.csv_rows(session, data))
                artefact = spark.train(session, events, progress=step)
        else:
            from instock.recommendations.logs import read_csv_log
            from instock.recommendations.training import train_local

            if raw is None:
                assert data is not None  # one of them, checked above
                with err.status("local: reading the log"):
                    raw = read_csv_log(data)
            if raw.skipped:
                err.print(f"[yellow]skipped {raw.skipped} malformed row(s)[/yellow]")
            with err.status("local: fitting the statistics and ALS"):
                artefact = train_local(raw)
        version = publish(artefact, out)
    except ArtefactError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from exc
    except (FormatError, EmptyLog, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    typer.echo(json.dumps({"artefact": str(out), "version": str(version),
                           "engine": engine.value, "items": artefact.n_items,
                           "events": artefact.events,
                           "seconds": round(time.perf_counter() - began, 2)}))


@recs_app.command("stream")
def stream_command(
    source: Path = typer.Option(..., "--source", help="Directory where new events land as "
                                "CSV files (header session_id,item_id,timestamp,event_type)."),
    out: Path = typer.Option(..., "--out", help="The published artefact to keep current."),
    state: Path = typer.Option(..., "--state", help="The job's own directory (events it "
                               "counted, Spark's checkpoint)."),
    engine: StreamEngine = typer.Option(..., "--engine", help="spark: Spark Structured "
                                        "Streaming (the only streaming engine)."),
    history: Path | None = typer.Option(None, "--history", help="The log --out was trained "
                                        "on (needed on the first run of a --state)."),
    once: bool = typer.Option(False, "--once", help="Count the files present, then stop."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", min=0,
                                             help="Stop after this long (default: never)."),
    interval: float = typer.Option(10.0, "--interval", min=0.1,
                                   help="Seconds between micro-batches."),
    master: str = typer.Option(SPARK_MASTER, "--master", help="Spark master."),
) -> None:
    """Keep an artefact current: count new events as they land, publish a new version a batch."""
    session = _spark_session(master)
    from instock.recommendations import spark_stream
    from instock.recommendations.logs import FormatError

    err = Console(stderr=True)
    try:
        with err.status(f"{engine.value}: streaming {source} into {out}"):
            batches = spark_stream.run(session, source, out, state, history, once=once,
                                       max_seconds=max_seconds, interval_seconds=interval)
    except (spark_stream.StreamError, FormatError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(json.dumps({"artefact": str(out), "batches": batches}))
