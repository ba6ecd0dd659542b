"""`instock bench fleet`: the same workload against one API process directly and against the
fleet of N behind HAProxy.

The fleet: `instock fleet`'s own supervisor (fleet/supervisor.py) on a scratch database and a
stream of its own on the bus: N API processes (worker duties off, rate limits off as in every
bench), M `instock worker all`, HAProxy in front. "Direct" is the first API process's own port,
with the same fleet around it (the others idle but hearing the bus, the workers doing the
relay and consumers), so the two runs differ only in the balancer and the processes serving.

The workload (`bench writes`' cases and helpers, bench/writes/): over `--skus` SKUs, a read of
a SKU's stock (GET /v1/inventory/{sku}), and a reservation of one unit then its commit; each
at saturation by `--concurrency` closed-loop clients for `--seconds`, after the `/livez`
ceiling. Per case and target: requests/s, p50/p95/p99, and where the CPU went per request,
from each process's own counters (/proc: API processes, workers, HAProxy, this bench's client),
counted over the phase and until the fleet's background work settled. HAProxy's added latency:
`/livez` one request at a time, directly and through the balancer (the difference of their
medians), and its own timings (stats page: average queue, connect, response, total).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.buses import bus_label, drop_stream, with_stream
from instock.bench.local import (
    BENCH_SERVER_ENV,
    HOST,
    Reporter,
    backend_of,
    free_port,
    instock_executable,
    log_tail,
    logs_to_stderr,
    own_cpu_seconds,
    process_cpu_seconds,
    scratch_database,
    workdir,
)
from instock.bench.wire import Pool
from instock.bench.writes.cases import Case, Reservations
from instock.bench.writes.load import Phase, saturate, ticks
from instock.bench.writes.plan import WARMUP, Client, ok, reservation_sku, seed
from instock.bench.writes.plan import Plan as WritesPlan
from instock.bench.writes.run import livez
from instock.fleet import TEMPLATE, lb
from instock.fleet.supervisor import Fleet, Plan, pool_size
from instock.platform.auth import Role, TokenAuthority
from instock.workers import api_only_env

QUIET_CPU_SHARE = 0.1  # the fleet has settled when it uses less than this of a core
SETTLE_MOST_SECONDS = 30.0
LATENCY_PROBES = 500  # /livez one at a time, each way


@dataclass(frozen=True)
class BenchPlan:
    apis: int
    workers: int
    seconds: float
    concurrency: int
    skus: int
    database: str
    bus: str
    redis: str | None


@dataclass
class Result:
    report: dict[str, Any]
    latencies_ms: dict[str, NDArray[np.float64]] = field(default_factory=dict)


class Reads:
    """A read of one SKU's stock, spread over the SKUs round-robin (staff token)."""

    name = "read"
    requests_per_operation = 1

    def __init__(self, client: Client, skus: int) -> None:
        self.client, self.skus = client, skus
        self.token = client.bearer(Role.ADMIN, "bench")

    async def operation(self, i: int, due: float, phase: Phase) -> None:
        head = self.client.pool.head("GET", f"/v1/inventory/{reservation_sku(i % self.skus)}",
                                     self.token)
        try:
            ok(await self.client.pool.send(head))
        except Exception as exc:
            phase.fail(exc)
            return
        phase.answer(due)


async def run(plan: BenchPlan, report: Reporter) -> Result:
    logs_to_stderr()
    load = os.getloadavg()[0]
    with workdir("instock-bench-fleet-") as tmp:
        report.note(f"a fresh {backend_of(plan.database)} database, {plan.apis} API processes, "
                    f"{plan.workers} workers and HAProxy")
        async with scratch_database(plan.database, tmp, "instock_bench_fleet") as url:
            from instock.migrate import upgrade
            from instock.privacy.service import load_keyring

            await asyncio.to_thread(upgrade, url)
            secret = secrets.token_urlsafe(32)
            bus = with_stream(plan.bus, f"benchfleet{secrets.token_hex(5)}")
            load_keyring(None, None, tmp / "state")  # one key, before the processes race
            env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
            env.update(INSTOCK_DATABASE_URL=url, INSTOCK_BUS_URL=bus,
                       INSTOCK_JWT_SECRET=secret, INSTOCK_STATE_DIR=str(tmp / "state"),
                       INSTOCK_LOG_LEVEL="warning",
                       INSTOCK_DB_POOL_SIZE=str(pool_size(plan.apis, plan.workers)),
                       **BENCH_SERVER_ENV)
            if plan.redis:
                env["INSTOCK_REDIS_URL"] = plan.redis
            ports = [free_port(HOST) for _ in range(plan.apis + 3)]
            fleet = Fleet(Plan(plan.apis, plan.workers, HOST, ports[0], ports[1], ports[2:],
                               tmp / "fleet", env,
                               {**api_only_env(), "INSTOCK_MIGRATE_ON_START": "false",
                                "INSTOCK_TRUSTED_PROXIES": HOST},
                               instock_executable(), TEMPLATE), report.note)
            try:
                await fleet.start()
                result = await measure(fleet, TokenAuthority(secret, "instock", 3600 * 4),
                                       plan, report)
            except Exception:  # the logs go with the scratch directory: their ends first
                for log in sorted(fleet.plan.logs.glob("*.log")):
                    report.note(f"{log.name}:\n{log_tail(log, 3000)}")
                raise
            finally:
                await fleet.stop()
                await drop_stream(bus)
    result.report.update(
        database=backend_of(plan.database), bus=bus_label(plan.bus), apis=plan.apis,
        workers=plan.workers, redis=plan.redis is not None,
        rate_limits=BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"],
        machine={"cpus": os.cpu_count(), "load_start": round(load, 2),
                 "load_end": round(os.getloadavg()[0], 2)})
    return result


async def measure(fleet: Fleet, tokens: TokenAuthority, plan: BenchPlan, report: Reporter
                  ) -> Result:
    first = fleet.apis[0].slot
    assert first is not None
    targets = {"direct": f"http://{first.address}", "fleet": fleet.plan.lb_url}
    writes = WritesPlan(plan.seconds, None, plan.concurrency, plan.skus, 1, 1, 1, 1,
                        ("reservation",), plan.database)
    result = Result({"seconds": plan.seconds, "concurrency": plan.concurrency,
                     "skus": plan.skus, "targets": {}})
    seeding = Client(Pool(fleet.plan.lb_url, 16), Pool(fleet.plan.lb_url, 4), tokens)
    try:
        await seed(seeding, writes, report.task("seeding SKUs", 2 * plan.skus + 1))
    finally:
        seeding.close()
    for target, url in targets.items():
        client = Client(Pool(url, plan.concurrency), Pool(url, 4), tokens)
        try:
            ceiling = await livez(client, writes, report)
            rows = [await phase(fleet, client, case, plan, report, target)
                    for case in (Reads(client, plan.skus), Reservations(client, plan.skus))]
        finally:
            client.close()
        for row, ms in rows:
            result.latencies_ms[f"{row['name']}, {target}"] = ms
        result.report["targets"][target] = {
            "url": url, "livez_rps": ceiling.row()["throughput_rps"],
            "cases": [row for row, _ in rows]}
    result.report["ratios"] = {
        row["name"]: round(row["throughput_rps"] / max(direct["throughput_rps"], 1e-9), 2)
        for row, direct in zip(result.report["targets"]["fleet"]["cases"],
                               result.report["targets"]["direct"]["cases"], strict=True)}
    result.report["haproxy"] = await balancer_cost(fleet, targets)
    return result


async def phase(fleet: Fleet, client: Client, case: Case | Reads, plan: BenchPlan,
                report: Reporter, target: str) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """One case at saturation against one target: its row, and its latencies (ms)."""
    if isinstance(case, Reservations):
        await case.prepare(report.task(f"{case.name}, {target}: reading the record",
                                       plan.skus))
    for i in range(WARMUP):
        await case.operation(i, 0.0, Phase())
    await settled(fleet)
    before = cpu(fleet)
    done = await saturate(case.operation, plan.concurrency, plan.seconds,
                          report.task(f"{case.name}, {target}", ticks(plan.seconds)),
                          first=WARMUP)
    settling = await settled(fleet)
    used = {kind: cpu(fleet)[kind] - before[kind] for kind in before}
    row: dict[str, Any] = {"name": case.name, **done.row(), "settle_s": round(settling, 2),
                           "cpu_ms_per_request": {
                               kind: round(seconds * 1000 / max(done.answered, 1), 3)
                               for kind, seconds in used.items()}}
    if isinstance(case, Reservations):
        row.update(await case.check(report.task(f"{case.name}, {target}: checking",
                                                case.checks())))
    return row, done.ms


def cpu(fleet: Fleet) -> dict[str, float]:
    """CPU seconds used so far by the API processes, the workers, HAProxy and this bench."""
    def of(children: list[Any]) -> float:
        return sum(process_cpu_seconds(c.pid) for c in children if c.pid is not None)

    return {"api": of(fleet.apis), "workers": of(fleet.workers),
            "haproxy": of([fleet.balancer] if fleet.balancer else []),
            "bench_client": own_cpu_seconds()}


async def settled(fleet: Fleet) -> float:
    """Until the fleet's processes are (nearly) idle: the relay and consumers have caught up
    with what the last phase wrote. Seconds waited."""
    started = time.monotonic()
    last = sum(v for k, v in cpu(fleet).items() if k != "bench_client")
    while time.monotonic() - started < SETTLE_MOST_SECONDS:
        await asyncio.sleep(0.5)
        now = sum(v for k, v in cpu(fleet).items() if k != "bench_client")
        if now - last < QUIET_CPU_SHARE * 0.5:
            break
        last = now
    return time.monotonic() - started


async def balancer_cost(fleet: Fleet, targets: dict[str, str]) -> dict[str, Any]:
    """HAProxy's added latency: `/livez` one request at a time directly and through it."""
    medians: dict[str, float] = {}
    for target, url in targets.items():
        pool = Pool(url, 1)
        head = pool.head("GET", "/livez")
        try:
            for _ in range(50):  # warm: the connection, the balancer's server connections
                await pool.send(head)
            times = []
            for _ in range(LATENCY_PROBES):
                answer = await pool.send(head)
                times.append(time.monotonic() - answer.sent)
        finally:
            pool.close()
        medians[target] = float(np.median(times) * 1000)
    states = await lb.api_states(fleet.plan.stats_url)
    return {"livez_p50_ms": {k: round(v, 3) for k, v in medians.items()},
            "added_p50_ms": round(medians["fleet"] - medians["direct"], 3),
            "servers": {name: {"sessions": s.sessions, "avg_queue_ms": s.queue_ms,
                               "avg_connect_ms": s.connect_ms, "avg_response_ms": s.response_ms,
                               "avg_total_ms": s.total_ms}
                        for name, s in states.items() if s.sessions}}
