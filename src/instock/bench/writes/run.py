"""The whole run: a server (ours, or one given), the /livez ceiling, then each case at
saturation and at an offered rate, its checks, the drop, and the ledger audit."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from instock.bench.drop.http import Remote, http_lane, stock
from instock.bench.drop.measure import measure
from instock.bench.local import (
    BENCH_SERVER_ENV,
    Reporter,
    backend_of,
    free_port,
    instock_process,
    logs_to_stderr,
    scratch_database,
    serve,
    wait_answering,
    workdir,
)
from instock.bench.wire import Pool
from instock.bench.writes.cases import Adjustments, Case, Checkouts, Reservations
from instock.bench.writes.load import Phase, offer, saturate, ticks
from instock.bench.writes.plan import (
    SETTLE_MOST_SECONDS,
    WARMUP,
    Client,
    Plan,
    ok,
    seed,
    settled,
)
from instock.platform.auth import Role, TokenAuthority

STAFF_CONNECTIONS = 4
OFFERED_CONNECTIONS = 256  # the open loop's pool: a request waiting for one counts as latency
OFFERED_FIRST = 10_000_000  # the offered phase's operation numbers continue past saturation's
AUDIT_QUERY = "{ audit { ok entries levels problems } }"
# Said in the report: what the per-request counts include.
COUNTERS_NOTE = (
    "statements/transactions/cpu per request: the growth of the server's own counters "
    "(instock_db_statements_total, instock_db_transactions_total, process_cpu_seconds_total on "
    "its /metrics) over the phase and until the server settled after it (settle_s: its "
    "background work died down), divided by the HTTP requests answered in the phase; they "
    "include the work of the relay and consumers the server runs in-process. Statements: what "
    "SQLAlchemy sends through a cursor (SQLite's BEGIN included; PostgreSQL's BEGIN/COMMIT are "
    "the driver's own and counted as transactions only). Rollbacks include read transactions "
    "ended without a commit.")


@dataclass
class Result:
    report: dict[str, Any]
    saturated_ms: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    offered_ms: dict[str, NDArray[np.float64]] = field(default_factory=dict)


async def run(plan: Plan, report: Reporter) -> Result:
    logs_to_stderr()
    load = os.getloadavg()[0]
    if plan.http is not None:
        from instock.app import build

        container = build()  # this configuration's signing key, as `instock token` has it
        tokens = container.tokens
        await container.close()
        result = await measure_server(plan.http, tokens, None, plan, report)
        result.report["server"] = {"http": plan.http}
    else:
        async with own_server(plan, report) as (url, tokens, sandbox):
            result = await measure_server(url, tokens, sandbox, plan, report)
        result.report["server"] = {"processes": 1, "bus": "memory", "relay": "in-process",
                                   "consumers": "in-process", "sweeper": False,
                                   "payment_provider": "sandbox, 0 ms latency",
                                   "rate_limits": BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"]}
    result.report["machine"] = {"cpus": os.cpu_count(), "load_start": round(load, 2),
                                "load_end": round(os.getloadavg()[0], 2)}
    return result


@contextlib.asynccontextmanager
async def own_server(plan: Plan, report: Reporter
                     ) -> AsyncIterator[tuple[str, TokenAuthority, str]]:
    """A scratch database, the payment sandbox at 0 ms, and `instock serve` on them (relay and
    consumers in-process): yields its URL, its tokens and the sandbox's URL."""
    with workdir("instock-bench-writes-") as tmp:
        report.note(f"starting a server on a fresh {backend_of(plan.database)} database")
        async with scratch_database(plan.database, tmp, "instock_bench_writes") as db_url:
            port = free_port()
            sandbox = f"http://127.0.0.1:{port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
            log = tmp / "sandbox.log"
            # Both start at once (the server calls the provider only at a checkout).
            with instock_process(["sandbox", "payments", "--port", str(port), "--latency-ms",
                                  "0"], env, log) as provider:
                async with serve(db_url, "memory://", tmp, consumers=True,
                                 env={"INSTOCK_PAYMENTS_URL": sandbox}) as server:
                    await wait_answering(f"{sandbox}/_sandbox/config", log, 60, provider)
                    yield (server.base_url, TokenAuthority(server.secret, "instock", 3600 * 4),
                           sandbox)


async def measure_server(url: str, tokens: TokenAuthority, sandbox: str | None, plan: Plan,
                         report: Reporter) -> Result:
    client = Client(Pool(url, max(plan.concurrency, OFFERED_CONNECTIONS)),
                    Pool(url, STAFF_CONNECTIONS), tokens)
    try:
        database = str(ok(await client.staff.request("GET", "/readyz")).json().get(
            "database", "unknown"))
        total = 2 * plan.skus + plan.checkout_skus
        await seed(client, plan, report.task("seeding SKUs", total))
        ceiling = await livez(client, plan, report)
        livez_rps = ceiling.row()["throughput_rps"] or 1e-9
        result = Result({"database": database, "livez_rps": livez_rps,
                         "livez": ceiling.row(), "seconds": plan.seconds,
                         "concurrency": plan.concurrency, "skus": plan.skus,
                         "checkout_skus": plan.checkout_skus, "counters": COUNTERS_NOTE,
                         "cases": []})
        cases: list[Case] = [Adjustments(client, plan.skus), Reservations(client, plan.skus),
                             Checkouts(client, plan.checkout_skus, sandbox)]
        for case in cases:
            if case.name in plan.cases:
                row = await measure_case(client, case, plan, livez_rps, report, result)
                result.report["cases"].append(row)
        if "drop" in plan.cases:
            result.report["cases"].append(await drop_case(url, client, plan, livez_rps,
                                                          database, report, result))
        result.report["ledger"] = await audit(client)
        result.report["findings"] = findings(result.report)
        return result
    finally:
        client.close()


async def livez(client: Client, plan: Plan, report: Reporter) -> Phase:
    """The ceiling: `GET /livez` from the same closed-loop clients, on the same connections,
    for as long as each case is measured (after a short untimed warm-up that opens them)."""
    head = client.pool.head("GET", "/livez")

    async def probe(_: int, due: float, phase: Phase) -> None:
        try:
            ok(await client.pool.send(head))
        except Exception as exc:
            phase.fail(exc)
            return
        phase.answer(due)

    await saturate(probe, plan.concurrency, min(0.5, plan.seconds), lambda _: None)
    return await saturate(probe, plan.concurrency, plan.seconds,
                          report.task("/livez (ceiling)", ticks(plan.seconds)))


async def measure_case(client: Client, case: Case, plan: Plan, livez_rps: float,
                       report: Reporter, result: Result) -> dict[str, Any]:
    await case.prepare(report.task(f"{case.name}: reading the record", case.checks()))
    for i in range(WARMUP):  # untimed: the first request of a kind costs more
        await case.operation(i, 0.0, Phase())
    before, waited = await settled(client)
    saturated = await saturate(case.operation, plan.concurrency, plan.seconds,
                               report.task(f"{case.name}: saturation", ticks(plan.seconds)),
                               first=WARMUP)
    middle, settling = await settled(client)
    row: dict[str, Any] = {"name": case.name, **saturated.row()}
    # Half the saturated rate by default: the latency goals are set there.
    rate = plan.rate or max(1.0, row["throughput_rps"] / 2)
    operations_per_s = rate / case.requests_per_operation
    offered = await offer(case.operation, operations_per_s, plan.seconds,
                          report.task(f"{case.name}: {rate:.1f} requests/s",
                                      max(1, round(operations_per_s * plan.seconds))),
                          first=OFFERED_FIRST)
    after, offered_settling = await settled(client)
    row["ratio_to_livez"] = round(row["throughput_rps"] / livez_rps, 3)
    row.update((middle - before).per_request(saturated.answered),
               settle_before_s=round(waited, 2), settle_s=round(settling, 2))
    # Counts taken before the server settled hold others' backlog, or miss some of their own.
    row["unsettled"] = max(waited, settling, offered_settling) >= SETTLE_MOST_SECONDS
    row["offered"] = {"offered_rps": round(rate, 1), **offered.row(),
                      **(after - middle).per_request(offered.answered),
                      "settle_s": round(offered_settling, 2)}
    row.update(await case.check(report.task(f"{case.name}: checking", case.checks())))
    result.saturated_ms[case.name] = saturated.ms
    result.offered_ms[case.name] = offered.ms
    return row


async def drop_case(url: str, client: Client, plan: Plan, livez_rps: float, database: str,
                    report: Reporter, result: Result) -> dict[str, Any]:
    """`bench drop --http`'s case as it is (drop/http.py, drop/measure.py): its buyers all at
    once on one SKU, checked the same way. A drop has no offered rate: everyone comes at once."""
    remote = Remote(Pool(url, plan.drop_connections), Pool(url, 2), client.tokens, database)
    try:
        sku = f"drop-writes-{secrets.token_hex(4)}"
        await stock(remote, sku, plan.drop_units)
        async with http_lane(remote, sku, plan.drop_buyers) as lane:
            before, _ = await settled(client)
            row, ms = await measure(lane, units=plan.drop_units, buyers=plan.drop_buyers,
                                    mode="drop", seconds=plan.seconds,
                                    advance=report.task("drop", plan.drop_buyers))
            after, settling = await settled(client)
    finally:
        remote.pool.close()
        remote.staff.close()
    answered = row["confirmed"] + row["refused"]
    # Like `bench drop --http`: throughput_rps is confirmations/s (release to the last one);
    # the ratio is of every answer per second, refusals included.
    row.update(name="drop", strategy=row["name"],
               ratio_to_livez=round(row["requests_per_s"] / livez_rps, 3),
               units=plan.drop_units, buyers=plan.drop_buyers, settle_s=round(settling, 2),
               **(after - before).per_request(answered))
    result.saturated_ms["drop"] = ms
    return row


async def audit(client: Client) -> dict[str, Any]:
    """The whole ledger re-folded by the server (`instock audit verify`, through GraphQL so
    that it works against any server): it must equal the levels, every chain unbroken."""
    admin = client.bearer(Role.ADMIN, "bench")
    answer = ok(await client.staff.request("POST", "/graphql", admin, {"query": AUDIT_QUERY}))
    body = answer.json()
    if body.get("errors"):
        return {"ok": False, "problems": [str(e.get("message")) for e in body["errors"]]}
    found: dict[str, Any] = body["data"]["audit"]
    return found


def findings(body: dict[str, Any]) -> list[str]:
    """Every bad result, in words."""
    found = [] if body["ledger"].get("ok") else [f"the ledger does not verify: "
                                                 f"{body['ledger'].get('problems', [])[:5]}"]
    for row in body["cases"]:
        name = row["name"]
        for key in ("oversold", "lost", "duplicate_versions", "unexplained"):
            if row.get(key):
                found.append(f"{name}: {row[key]} {key}")
        errors = row["errors"] + row.get("offered", {}).get("errors", 0)
        if errors:
            first = row["first_error"] or row.get("offered", {}).get("first_error")
            found.append(f"{name}: {errors} requests failed, the first: {first}")
        if "provider_captures" in row and row["provider_captures"] != row["db_committed"]:
            found.append(f"{name}: {row['provider_captures']} captures at the provider for "
                         f"{row['db_committed']} units committed")
        if row.get("unsettled"):
            found.append(f"{name}: the server's background work did not settle within "
                         f"{SETTLE_MOST_SECONDS:g} s: its counts per request are approximate")
        if not row.get("requests", row.get("confirmed")):
            found.append(f"{name}: no request was answered")
    return found
