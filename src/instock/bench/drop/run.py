"""The strategies side by side in one run, and the report they make together."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.drop.engine import open_engine
from instock.bench.drop.http import connect, http_lane, livez, stock
from instock.bench.drop.measure import Strategy, measure, ticks
from instock.bench.local import Reporter, backend_of, logs_to_stderr
from instock.platform.runtime import tune_for_throughput

STRATEGIES = ("for_update", "occ_retry", "conditional_update", "redis_gate", "drop_lane")
MODES = ("drop", "sustained", "queue")  # queue: bench/drop/queue.py
SUSTAINED_SECONDS = 10.0


@dataclass(frozen=True)
class Plan:
    units: int
    buyers: int
    strategies: tuple[str, ...]
    mode: str = "drop"
    seconds: float = SUSTAINED_SECONDS  # sustained mode only
    pool: int = 20
    database: str = "sqlite+aiosqlite:///bench.db"  # chooses the backend; never written into
    redis_url: str | None = None
    http: str | None = None
    connections: int = 500  # --http only: keep-alive connections over all client shards
    gate_crash_after: int | None = None
    # In-process: collect garbage as an API process does (`settings.tune_gc`), so the lane is
    # measured as it serves; with Python's default the collector took a third of the run.
    tune_gc: bool = False  # the CLI sets it; tests building many apps leave it off


@dataclass
class Result:
    report: dict[str, Any]
    latencies_ms: dict[str, NDArray[np.float64]]


def choose(requested: list[str] | None, *, redis: bool, http: bool) -> tuple[str, ...]:
    """The strategies asked for (in the order asked), else every one that applies here."""
    applicable = ("drop_lane",) if http else tuple(
        s for s in STRATEGIES if redis or s != "redis_gate")
    if not requested:
        return applicable
    unknown = [s for s in requested if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}: use {', '.join(STRATEGIES)}")
    inapplicable = [s for s in requested if s not in applicable]
    if inapplicable:
        why = "only drop_lane runs over --http" if http else "redis_gate needs --redis"
        raise ValueError(f"{', '.join(inapplicable)} cannot run here: {why}")
    return tuple(dict.fromkeys(requested))


async def run(plan: Plan, report: Reporter) -> Result:
    logs_to_stderr()
    if plan.http is not None:
        return await _over_http(plan.http, plan, report)
    return await _in_process(plan, report)


async def _in_process(plan: Plan, report: Reporter) -> Result:
    rows, latencies = [], {}
    backend = backend_of(plan.database)
    with tempfile.TemporaryDirectory(prefix="instock-bench-drop-") as tmp:
        report.note(f"creating and migrating a fresh {backend} database")
        async with open_engine(plan.database, Path(tmp), pool=plan.pool,
                               redis_url=plan.redis_url,
                               gate_crash_after=plan.gate_crash_after) as engine:
            if plan.tune_gc:
                tune_for_throughput()
            for name in plan.strategies:
                sku = f"drop-{name}-{engine.run_id}"
                await engine.stock(sku, plan.units)
                async with engine.strategy(name, sku, plan.units) as strategy:
                    row, latencies[name] = await _measure(strategy, plan, report)
                rows.append(row)
    body = _report(plan, backend, rows)
    body["pool"] = plan.pool
    return Result(body, latencies)


async def _measure(strategy: Strategy, plan: Plan, report: Reporter
                   ) -> tuple[dict[str, Any], NDArray[np.float64]]:
    total = plan.buyers if plan.mode == "drop" else ticks(plan.seconds)
    return await measure(strategy, units=plan.units, buyers=plan.buyers, mode=plan.mode,
                         seconds=plan.seconds, advance=report.task(strategy.name, total))


async def _over_http(url: str, plan: Plan, report: Reporter) -> Result:
    async with connect(url, plan.connections) as remote:
        sku = f"drop-drop_lane-{secrets.token_hex(4)}"
        await stock(remote, sku, plan.units)
        async with http_lane(remote, sku, plan.buyers) as strategy:
            # Connections opened once, untimed; then the ceiling, then the drop on the same
            # warm connections.
            await livez(remote, plan.connections, report.task("connecting", plan.connections))
            ceiling = await livez(remote, plan.buyers, report.task("livez", plan.buyers))
            row, ms = await _measure(strategy, plan, report)
    livez_rps = round(ceiling.attempts / max(ceiling.finished - ceiling.started, 1e-9), 1)
    row.update(livez_rps=livez_rps, livez_errors=sum(ceiling.errors.values()),
               ratio_to_livez=round(row["requests_per_s"] / livez_rps, 3))
    body = _report(plan, remote.database, [row])
    body.update(http=url, connections=plan.connections, livez_rps=livez_rps,
                ratio_to_livez=row["ratio_to_livez"])
    return Result(body, {strategy.name: ms})


def _report(plan: Plan, database: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"database": database, "units": plan.units, "buyers": plan.buyers,
                            "mode": plan.mode}
    if plan.mode == "sustained":
        body["seconds"] = plan.seconds
    body.update(cpus=os.cpu_count(), strategies=rows, summary=summary(rows, plan))
    return body


def summary(rows: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """The lane's throughput against the per-request strategies, and every bad result."""
    rate = {row["name"]: row["throughput_rps"] for row in rows}

    def times(a: str, b: str) -> float | None:
        return round(rate[a] / rate[b], 2) if a in rate and rate.get(b) else None

    return {"drop_lane_vs_conditional_update": times("drop_lane", "conditional_update"),
            "drop_lane_vs_occ_retry": times("drop_lane", "occ_retry"),
            "findings": [finding for row in rows for finding in findings(row, plan)]}


def findings(row: dict[str, Any], plan: Plan) -> list[str]:
    """What went wrong for one strategy, in words."""
    name, found = row["name"], []
    if row["oversold"]:
        found.append(f"{name} oversold {row['oversold']} units")
    if row["lost"]:
        found.append(f"{name} lost {row['lost']} confirmed reservations")
    if row["duplicate_ids"]:
        found.append(f"{name} confirmed {row['duplicate_ids']} reservation ids twice")
    if row["errors"]:
        found.append(f"{name}: {row['errors']} requests failed {row['error_kinds']}")
    if plan.mode == "drop" and row["confirmed"] < min(plan.units, plan.buyers):
        found.append(f"{name} sold {row['confirmed']} of {plan.units} units to "
                     f"{plan.buyers} buyers")
    return found
