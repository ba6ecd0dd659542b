"""`instock bench ratelimit`: what the rate limiter costs a request.

One scratch database, and on it `instock serve` three times in turn: limits off, limits on with
counters in the process, and (with `--redis`) limits on with counters in Redis. Against each,
closed-loop clients send the same requests for `--seconds`:
- `customer read`: a customer's `GET /v1/products/{id}` (one counter: the customer's);
- `reservation attempt`: a customer's `POST /v1/reservations` for a SKU with nothing left (the
  customer's counter and the per-SKU one, whose key comes from the body; the answer is a 409);
- `anonymous`: `GET /v1/inventory/{sku}` with no token (the address's counter; a 401).
Every limit is raised far above what the run sends, so everything is counted and nothing is
refused: the difference between the servers is the counting. Reported per case and server:
requests/s, the server's CPU per request, p50/p99, and the limiter's CPU per request (on minus
off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instock.bench.drop.measure import percentiles
from instock.bench.local import Reporter, backend_of, scratch_database, serve, workdir
from instock.bench.wire import Pool
from instock.bench.writes.load import Phase, saturate, ticks
from instock.platform.auth import Role, TokenAuthority
from instock.rate_limits import POLICIES

SKU, EMPTY_SKU, LOCATION = "bench-rl-1", "bench-rl-empty", "bench-rl-wh"
CUSTOMERS = 50  # the clients take turns with these tokens
NEVER_REACHED = "1000000000/minute"


@dataclass(frozen=True)
class Plan:
    database: str
    redis: str | None
    seconds: float
    concurrency: int


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    role: Role | None
    body: bytes
    expect: int


CASES = (
    Case("customer read", "GET", "/v1/products/bench-rl", Role.CUSTOMER, b"", 200),
    Case("reservation attempt", "POST", "/v1/reservations", Role.CUSTOMER,
         json.dumps({"lines": [{"sku": EMPTY_SKU, "quantity": 1}]}).encode(), 409),
    Case("anonymous", "GET", f"/v1/inventory/{SKU}", None, b"", 401),
)


def servers(plan: Plan) -> list[tuple[str, dict[str, str]]]:
    raised = json.dumps({p.name: NEVER_REACHED for p in POLICIES})
    on = {"INSTOCK_RATE_LIMITS": "on", "INSTOCK_RATE_LIMIT_OVERRIDES": raised}
    found = [("off", {"INSTOCK_RATE_LIMITS": "off"}), ("memory", on)]
    if plan.redis:
        found.append(("redis", {**on, "INSTOCK_REDIS_URL": plan.redis}))
    return found


async def run(plan: Plan, report: Reporter) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with workdir("instock-bench-ratelimit-") as tmp:
        report.note(f"starting servers on a fresh {backend_of(plan.database)} database")
        async with scratch_database(plan.database, tmp, "instock_bench_ratelimit") as db_url:
            for label, env in servers(plan):
                async with serve(db_url, "memory://", tmp, env=env) as server:
                    tokens = TokenAuthority(server.secret, "instock", 3600)
                    pool = Pool(server.base_url, plan.concurrency)
                    try:
                        await _stock(pool, tokens)
                        for case in CASES:
                            advance = report.task(f"{label}: {case.name}", ticks(plan.seconds))
                            phase, cpu = await _measure(pool, tokens, case, plan,
                                                        server.cpu_seconds, advance)
                            rows.append(_row(label, case, phase, cpu))
                    finally:
                        pool.close()
    return {"database": backend_of(plan.database), "seconds": plan.seconds,
            "concurrency": plan.concurrency, "limits_raised_to": NEVER_REACHED,
            "rows": rows, "limiter_cpu_ms_per_request": _costs(rows)}


async def _stock(pool: Pool, tokens: TokenAuthority) -> None:
    admin = {"Authorization": f"Bearer {tokens.mint(Role.ADMIN, 'bench')}"}
    for path, body in (
            ("/v1/products", {"id": "bench-rl", "title": "Bench", "brand": "b", "category": "c",
                              "price": "10.00", "variants": [
                                  {"sku": SKU, "attributes": {"n": "1"}},
                                  {"sku": EMPTY_SKU, "attributes": {"n": "2"}}]}),
            ("/v1/locations", {"id": LOCATION, "name": "bench", "kind": "warehouse"}),
            ("/v1/inventory/adjustments", {"sku": SKU, "location": LOCATION, "kind": "receive",
                                           "quantity": 10, "reason": "bench"})):
        answer = await pool.request("POST", path, admin, body)
        if answer.status >= 300 and answer.status != 409:  # 409: there from the last server
            raise RuntimeError(f"{path}: {answer.status} {answer.body[:300]!r}")


async def _measure(pool: Pool, tokens: TokenAuthority, case: Case, plan: Plan,
                   cpu_seconds: Any, advance: Any) -> tuple[Phase, float]:
    heads = [pool.head(case.method, case.path,
                       {"Authorization": f"Bearer {tokens.mint(case.role, f'rl-{i}')}"}
                       if case.role is not None else {}, json_body=bool(case.body))
             for i in range(CUSTOMERS)]

    async def one(i: int, since: float, phase: Phase) -> None:
        try:
            answer = await pool.send(heads[i % CUSTOMERS], case.body)
        except Exception as exc:
            phase.fail(exc)
            return
        if answer.status == case.expect:
            phase.answer(since)
        else:
            phase.fail(RuntimeError(f"HTTP {answer.status}"))

    await saturate(one, plan.concurrency, min(0.5, plan.seconds), lambda _: None)  # warm-up
    before = cpu_seconds()
    phase = await saturate(one, plan.concurrency, plan.seconds, advance)
    return phase, cpu_seconds() - before


def _row(server: str, case: Case, phase: Phase, cpu: float) -> dict[str, Any]:
    row = phase.row()
    return {"server": server, "case": case.name, "requests": row["requests"],
            "throughput_rps": row["throughput_rps"],
            "cpu_ms_per_request": round(cpu * 1000 / max(phase.answered, 1), 4),
            **percentiles(phase.ms), "errors": row["errors"], "first_error": row["first_error"]}


def _costs(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    off = {r["case"]: r["cpu_ms_per_request"] for r in rows if r["server"] == "off"}
    costs: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["server"] != "off":
            costs.setdefault(row["server"], {})[row["case"]] = round(
                row["cpu_ms_per_request"] - off[row["case"]], 4)
    return costs


def chart(report: dict[str, Any], path: Path) -> None:
    """Server CPU per request, per case, off and on."""
    from instock.bench.plot import grouped_bars

    cases = [c.name for c in CASES]
    series = {server: [next(r["cpu_ms_per_request"] for r in report["rows"]
                            if r["server"] == server and r["case"] == case) for case in cases]
              for server in dict.fromkeys(r["server"] for r in report["rows"])}
    grouped_bars(cases, series, "server CPU ms per request",
                 f"instock bench ratelimit: {report['database']}, limits off and on", path)
