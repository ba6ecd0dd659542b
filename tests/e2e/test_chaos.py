"""Chaos (issue 22): the fleet under load while its processes are killed, the bus restarts and
Redis goes away, and afterwards nothing oversold, lost, doubled or stuck.

`instock fleet up --api 3 --workers 2` (HAProxy in front, the supervisor starting again what
dies) on PostgreSQL, a payment sandbox, a Redis of the test's own and the bus in turn: a NATS
server of the test's own, then the machine's RabbitMQ (a stream of the test's own). For
CHAOS_SECONDS, CLIENTS shoppers through the balancer reserve (then commit or release), check
out and receive stock over the SKUs, most of their reservations going for one drop SKU that
sells out; every request carries an Idempotency-Key and is asked again with it until the answer
is definite. Meanwhile a controller, on a seeded schedule, SIGKILLs a random API process or
worker every few seconds, restarts the bus once and kills Redis for REDIS_DOWN seconds, and a
few SSE clients follow the SKUs through the balancer.

Once the fleet has settled (sagas finished, outbox published, consumers caught up): nothing
oversold; the reservations clients were told exist are exactly the direct ones in the database,
in the state they were told; every order's saga completed or compensated and every order is
the one its client heard of; `instock audit verify` passes and a reconciliation pass finds
nothing; recommendations' copy of stock and analytics' units sold equal the truth (every
stock change handled once by each); every SSE client ends on the true state; clients saw few
errors and were served in every 5 s window. What happened is printed and written as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from instock.platform.auth import Role
from tests.e2e.chaos_support import (
    BusServer,
    ChaosWatcher,
    Controller,
    MachineRabbit,
    OwnNats,
    OwnServer,
    Shoppers,
    fleet_up,
    instock_json,
    queries,
    redis_server,
    write_summary,
)
from tests.e2e.harness import (
    Database,
    ServerFactory,
    client,
    create_location,
    create_product,
    receive,
)
from tests.e2e.sandboxes import payments_env, start_payments
from tests.e2e.test_event_backbone import unique_bus
from tests.e2e.test_fleet import Fleet, _stop
from tests.support import NATS_URL, PG_URL, RABBITMQ_URL, migrated_database, rabbitmq_streams

CHAOS_SECONDS = 60.0  # CI runs it as it is
CLIENTS = 200
WATCHERS = 4
APIS, WORKERS = 3, 2
SKUS = [f"CH-{i}" for i in range(20)]
DROP, DROP_UNITS, STOCK = "CH-DROP", 150, 1000
BUS_AT, BUS_DOWN = 18.0, 3.0  # seconds into the chaos; seconds the bus stays down
REDIS_AT, REDIS_DOWN = 36.0, 10.0
SETTLE_SECONDS = 60.0  # the most the fleet gets to catch up afterwards
WINDOW = 5.0  # every window of this many seconds must have served requests
MAX_ERROR_RATE = 0.10
SEED = 22
CONSUMERS = ("recs-availability", "analytics")

# serial: it restarts the machine's RabbitMQ, which the other tests use (make test runs it alone).
pytestmark = [pytest.mark.slow, pytest.mark.serial,
              pytest.mark.skipif(PG_URL is None, reason="the chaos test runs on PostgreSQL "
                                 "only: set INSTOCK_TEST_DATABASE_URL")]

BUSES = [
    pytest.param("nats", id="nats", marks=pytest.mark.skipif(
        NATS_URL is None, reason="NATS is not configured (INSTOCK_TEST_NATS_URL)")),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.skipif(
        RABBITMQ_URL is None, reason="RabbitMQ is not configured (INSTOCK_TEST_RABBITMQ_URL)")),
]


def fleet_env(bus_url: str, redis_url: str, sandbox_env: dict[str, str]) -> dict[str, str]:
    return {
        "INSTOCK_BUS_URL": bus_url, "INSTOCK_REDIS_URL": redis_url,
        # A killed worker's deliveries go to the other one in 10 s (not the default 30: the
        # fleet settles sooner; not less: on a busy machine a batch may take seconds, and
        # redelivering what is being handled only adds work), and a killed API process's
        # checkout saga is taken over by a worker in 10 s (its lease runs out).
        "INSTOCK_CONSUMER_REDELIVER_SECONDS": "10", "INSTOCK_SAGA_LEASE_SECONDS": "10",
        "INSTOCK_LIVE_HEARTBEAT_SECONDS": "1", "INSTOCK_DRAIN_SECONDS": "1",
        # Five processes share the server's connections (PostgreSQL's 100) with the checks.
        "INSTOCK_DB_POOL_SIZE": "4",
        # The limits stay on (their counters live in the Redis that goes away) but high enough
        # that a shopper retrying one SKU is not the bot they are there to stop.
        "INSTOCK_RATE_LIMIT_OVERRIDES": json.dumps(
            {"reservations": "100000/minute", "customer": "100000/minute"}),
        # Nothing is repaired behind the test's back: a lost event must show as a difference.
        "INSTOCK_RECONCILE_AUTO_REPAIR_UNITS": "0",
        # The provider is fine; a busy machine must not make its calls time out.
        **sandbox_env, "INSTOCK_PAYMENTS_TIMEOUT_SECONDS": "5",
        "INSTOCK_PAYMENTS_BREAKER_THRESHOLD": "50",
    }


async def seed(lb_url: str) -> None:
    async with client(lb_url, Role.ADMIN) as admin:
        await create_product(admin, "chaos", [*SKUS, DROP])
        await create_location(admin, "wh-1")
        for sku in SKUS:
            await receive(admin, sku, "wh-1", STOCK)
        await receive(admin, DROP, "wh-1", DROP_UNITS)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Database]:
    """A migrated PostgreSQL database of the test's own (made and dropped outside its loop)."""
    with migrated_database("postgresql", tmp_path) as url:
        yield Database("postgresql", url, tmp_path)


@pytest.mark.parametrize("bus_kind", BUSES)
async def test_chaos_loses_nothing_and_oversells_nothing(bus_kind: str, postgres: Database,
                                                         tmp_path: Path) -> None:
    began, database = time.monotonic(), postgres
    async with contextlib.AsyncExitStack() as stack:
        redis = redis_server(tmp_path)
        stack.callback(redis.stop)
        await redis.start()
        bus: BusServer = (OwnNats(tmp_path) if bus_kind == "nats"
                          else MachineRabbit(rabbitmq_streams(str(RABBITMQ_URL))))
        stack.callback(bus.close)
        await bus.start()
        servers = ServerFactory(database, tmp_path)
        stack.callback(servers.stop_all)
        sandbox = await start_payments(servers)
        bus_url = unique_bus(bus.url)  # a stream of the run's own
        stack.push_async_callback(bus.forget, bus_url)  # once the fleet has stopped
        env = fleet_env(bus_url, f"redis://127.0.0.1:{redis.port}/0", payments_env(sandbox))
        fleet = stack.enter_context(fleet_up(database, tmp_path, APIS, WORKERS, env))
        stack.callback(bus.close)  # a broker left stopped is started before the fleet stops
        await seed(fleet.lb_url)
        up = time.monotonic() - began
        await chaos_and_checks(bus_kind, bus_url, fleet, database, bus, redis, up)


async def chaos_and_checks(bus_kind: str, bus_url: str, fleet: Fleet, database: Database,
                           bus: BusServer, redis: OwnServer, up: float) -> None:
    # -- the chaos ---------------------------------------------------------------------------
    watchers = [ChaosWatcher(fleet.lb_url, skus=[*SKUS, DROP]) for _ in range(WATCHERS)]
    streams = [asyncio.create_task(w.run()) for w in watchers]
    started = time.monotonic()
    shoppers = Shoppers(fleet.lb_url, SKUS, DROP, started)
    controller = Controller(fleet, bus, redis, started, CHAOS_SECONDS, random.Random(SEED),
                            BUS_AT, BUS_DOWN, REDIS_AT, REDIS_DOWN,
                            sa.make_url(database.url).port or 5432)
    lag: list[dict[str, Any]] = []  # the outbox and the consumers, every 5 s
    clients = [asyncio.create_task(shoppers.run(n)) for n in range(CLIENTS)]
    breaking = asyncio.create_task(controller.run())
    sampling = asyncio.create_task(sample_lag(database, started, lag))
    try:
        await asyncio.sleep(CHAOS_SECONDS)  # the length of the run, nothing timed
        shoppers.stop.set()
        await asyncio.wait_for(breaking, 120)
        # Requests under way finish: each is asked again until its answer is definite.
        await asyncio.wait_for(asyncio.gather(*clients), shoppers.retry_for + 60)
        chaos = time.monotonic() - started

        # -- the fleet settles -----------------------------------------------------------------
        settling = time.monotonic()
        deadline = settling + SETTLE_SECONDS
        settled: list[tuple[float, list[str]]] = []  # what was still awaited, as it changed
        while True:
            facts = await look(database)
            waiting = pending(facts, watchers, fleet)
            shown = [w[:100] for w in waiting]
            if not settled or settled[-1][1] != shown:
                settled.append((round(time.monotonic() - settling, 1), shown))
            if not waiting or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        settle = time.monotonic() - settling
    finally:
        shoppers.stop.set()
        for task in [*streams, *clients, breaking, sampling]:
            task.cancel()
        await asyncio.gather(*streams, *clients, breaking, sampling, return_exceptions=True)

    # -- the checks (the fleet stops meanwhile: its work is done, the database says the rest) --
    checking = time.monotonic()
    stopped = asyncio.create_task(asyncio.to_thread(_stop, fleet))
    (audit_code, audit_said, _), (reconcile_code, reconcile_said, report) = await asyncio.gather(
        instock_json(database, "audit", "verify"),
        instock_json(database, "reconcile", "run", "--json"))
    facts = await look(database)
    await stopped
    checks = time.monotonic() - checking
    lost = await evidence(database, facts)

    summary = summarise(bus_kind, fleet, shoppers, controller, watchers, facts, {
        "fleet_up_and_seeded": up, "chaos_and_last_answers": chaos, "settle": settle,
        "checks": checks}, report)
    summary["bus_url"] = bus_url
    summary["lag"] = lag
    summary["settling"] = settled
    summary["unhandled_stock_changes"] = lost
    summary["still_pending_after_settle"] = waiting
    path = fleet.state_dir / "logs" / f"chaos-{bus_kind}.json"
    write_summary(path, summary)
    print_summary(summary, path)

    # -- the assertions ----------------------------------------------------------------------
    assert not waiting, (waiting, fleet.tail())
    truth = {row["sku"]: row for row in facts["truth"]}
    # 0 oversold: no level below zero, the drop's units held or sold within what came in.
    assert facts["negative"] == [], facts["negative"]
    drop = truth[DROP]
    assert drop["committed"] + drop["reserved"] <= drop["on_hand"] == summary["drop"]["received"]
    assert summary["drop"]["sold_to_clients"] <= DROP_UNITS
    assert summary["drop"]["refused"] > 0  # it sold out
    # Every answer was definite and by design.
    assert not shoppers.unknown, shoppers.unknown[:10]
    assert not shoppers.surprises, shoppers.surprises[:10]
    # Every reservation a client was told exists, exists, and there is none more: the direct
    # ones (not a checkout's) are exactly those, in the state each client was told.
    direct = {row["id"]: row for row in facts["reservations"] if row["order_id"] is None}
    assert set(direct) == set(shoppers.held), (
        f"in the database only: {sorted(set(direct) - set(shoppers.held))[:10]}; "
        f"told but missing: {sorted(set(shoppers.held) - set(direct))[:10]}")
    assert all(row["customer_id"].startswith("res-") for row in direct.values())
    assert all(row["customer_id"].startswith("chk-") for row in facts["reservations"]
               if row["order_id"] is not None)
    wrong = [(rid, held.fate, direct[rid]["status"]) for rid, held in shoppers.held.items()
             if held.fate is not None and direct[rid]["status"] != held.fate]
    assert not wrong, wrong[:10]
    # Every order is one a client heard of, as it heard; every saga finished.
    orders = {row["id"]: row for row in facts["orders"]}
    assert set(orders) == set(shoppers.orders), (
        sorted(set(orders) ^ set(shoppers.orders))[:10])
    assert facts["unfinished_sagas"] == [], facts["unfinished_sagas"]
    for order_id, heard in shoppers.orders.items():
        row = orders[order_id]
        assert row["saga"] in ("completed", "compensated"), row
        if heard == "paid":
            assert row["status"] == "paid" and row["saga"] == "completed", row
        elif heard.startswith("failed"):
            assert row["status"] == "cancelled" and row["saga"] == "compensated", row
    # The ledger proves itself, and a reconciliation pass finds nothing.
    assert audit_code == 0, audit_said
    assert reconcile_code == 0 and report is not None, reconcile_said
    assert report["drifts"] == [] and report["suspected"] == [], report
    assert facts["open_drifts"] == [], facts["open_drifts"]
    # Every committed change reached every consumer, once in effect.
    assert facts["dead_letters"] == [], facts["dead_letters"]
    for consumer, missing in summary["consumers"]["missing"].items():
        assert missing == [], (consumer, missing[:10])
    true = {sku: (row["version"], row["available"]) for sku, row in truth.items()}
    recs = {row["sku"]: (row["version"], row["available"]) for row in facts["recs"]}
    assert recs == true, {sku: (recs.get(sku), true[sku]) for sku in true
                          if recs.get(sku) != true[sku]}
    assert summary["analytics"]["sold"] == summary["analytics"]["committed_in_ledger"]
    # Every SSE client ends on the true state.
    for watcher in watchers:
        seen = {sku: (w["version"], w["available"]) for sku, w in watcher.latest.items()}
        assert seen == true, {sku: (seen.get(sku), true[sku]) for sku in true
                              if seen.get(sku) != true[sku]}
    # The fleet was hurt and served throughout; clients saw few errors.
    # A kill is made only while the fleet is whole again (a loaded machine brings a process
    # back in 15-30 s), so how many fit in the minute varies: at least one of each kind.
    kills = [e for e in controller.events if e["what"] == "SIGKILL"]
    assert len(kills) >= 2 and {e["kind"] for e in kills} == {"api", "worker"}, kills
    assert summary["supervisor_restarts"] >= len(kills), fleet.tail()
    assert summary["error_rate"] < MAX_ERROR_RATE, summary["errors_by_kind"]
    assert summary["windows_without_success"] == [], summary["windows_without_success"]


# -- the database's word -----------------------------------------------------------------------

LOOK = {
    "truth": """
        SELECT l.sku, i.version, sum(l.on_hand) AS on_hand, sum(l.reserved) AS reserved,
               sum(l.committed) AS committed,
               sum(l.on_hand - l.reserved - l.committed - l.safety_stock - l.unsellable)
                   AS available
        FROM stock_levels l JOIN inventory_items i ON i.sku = l.sku
        GROUP BY l.sku, i.version""",
    "negative": """
        SELECT sku, location FROM stock_levels
        WHERE on_hand - reserved - committed - safety_stock - unsellable < 0""",
    "received": """
        SELECT sku, sum(on_hand) AS units FROM ledger WHERE kind = 'receive' GROUP BY sku""",
    "ledger_sold": """
        SELECT sku, sum(committed) AS units FROM ledger WHERE kind = 'commit' GROUP BY sku""",
    "facts_sold": "SELECT sku, sum(sold) AS units FROM analytics_facts GROUP BY sku",
    "analytics_levels": "SELECT sku, location, version FROM analytics_levels",
    "levels": "SELECT sku, location, version FROM stock_levels",
    "recs": "SELECT sku, version, available FROM item_availability",
    "unpublished": "SELECT id FROM outbox WHERE published_at IS NULL",
    "changes": "SELECT id FROM outbox WHERE type = 'inventory.stock_changed.v1'",
    "handled": """
        SELECT consumer, event_id FROM inbox WHERE type = 'inventory.stock_changed.v1'
        AND consumer IN ('recs-availability', 'analytics')""",
    "reservations": """
        SELECT r.id, r.status, r.customer_id, o.order_id FROM reservations r
        LEFT JOIN order_reservations o ON o.reservation_id = r.id""",
    "orders": """
        SELECT o.id, o.status, s.status AS saga FROM orders o
        LEFT JOIN sagas s ON s.order_id = o.id AND s.kind = 'checkout'""",
    "unfinished_sagas": """
        SELECT id, kind, status, plan, attempts, failure FROM sagas
        WHERE status NOT IN ('completed', 'compensated')""",
    "open_drifts": "SELECT kind, sku, detail FROM drifts WHERE status = 'open'",
    "drifts": "SELECT kind, status, count(*) AS n FROM drifts GROUP BY kind, status",
    "dead_letters": "SELECT * FROM dead_letters",
}


async def look(database: Database) -> dict[str, list[dict[str, Any]]]:
    return await queries(database, **LOOK)


def pending(facts: dict[str, list[dict[str, Any]]], watchers: list[ChaosWatcher],
            fleet: Fleet) -> list[str]:
    """What the fleet has not caught up with yet (nothing: settled)."""
    waiting = []
    truth = {row["sku"]: (row["version"], row["available"]) for row in facts["truth"]}
    if facts["unfinished_sagas"]:
        waiting.append(f"{len(facts['unfinished_sagas'])} sagas unfinished")
    if facts["unpublished"]:
        waiting.append(f"{len(facts['unpublished'])} outbox rows unpublished")
    recs = {row["sku"]: (row["version"], row["available"]) for row in facts["recs"]}
    if recs != truth:
        behind = sorted(k for k in truth if recs.get(k) != truth[k])
        waiting.append(f"recs-availability behind on {behind}")
    changes = {row["id"] for row in facts["changes"]}
    for consumer in CONSUMERS:
        handled = {r["event_id"] for r in facts["handled"] if r["consumer"] == consumer}
        if changes - handled:
            waiting.append(f"{consumer} has not handled {len(changes - handled)} stock changes")
    levels = {(r["sku"], r["location"]): r["version"] for r in facts["levels"]}
    folded = {(r["sku"], r["location"]): r["version"] for r in facts["analytics_levels"]}
    if folded != levels:
        waiting.append("analytics behind")
    for i, watcher in enumerate(watchers):
        seen = {sku: (w["version"], w["available"]) for sku, w in watcher.latest.items()}
        if seen != truth:
            waiting.append(f"SSE client {i} behind on "
                           f"{sorted(k for k in truth if seen.get(k) != truth[k])}")
    down = [c["name"] for c in fleet.children("api") + fleet.children("worker")
            if not c["alive"]]
    if down:
        waiting.append(f"not running again yet: {down}")
    return waiting


LAG = """
    SELECT (SELECT count(*) FROM outbox WHERE type = 'inventory.stock_changed.v1') AS changes,
           (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,
           (SELECT count(*) FROM inbox WHERE type = 'inventory.stock_changed.v1'
            AND consumer = 'recs-availability') AS recs,
           (SELECT count(*) FROM inbox WHERE type = 'inventory.stock_changed.v1'
            AND consumer = 'analytics') AS analytics"""


async def sample_lag(database: Database, started: float, into: list[dict[str, Any]]) -> None:
    """Every 5 s until cancelled: stock changes made, outbox rows unpublished, and how many
    stock changes each consumer has not handled yet."""
    while True:
        with contextlib.suppress(Exception):  # a sample missed is no failure
            [row] = (await queries(database, wait=0, lag=LAG))["lag"]
            into.append({"at": round(time.monotonic() - started), "changes": row["changes"],
                         "unpublished": row["unpublished"],
                         **{f"{c}_behind": row["changes"] - row[c] for c in ("recs", "analytics")}})
        await asyncio.sleep(WINDOW)


async def evidence(database: Database, facts: dict[str, list[dict[str, Any]]]
                   ) -> list[dict[str, Any]]:
    """For each stock change a consumer has not handled: the event, and who handled it."""
    changes = {row["id"] for row in facts["changes"]}
    missing = set()
    for consumer in CONSUMERS:
        missing |= changes - {r["event_id"] for r in facts["handled"] if r["consumer"] == consumer}
    if not missing:
        return []
    ids = ", ".join(f"'{i}'" for i in sorted(missing)[:50])
    found = await queries(database, events=f"""
        SELECT id, subject, sequence, created_at, published_at, envelope FROM outbox
        WHERE id IN ({ids}) ORDER BY created_at""", inbox=f"""
        SELECT event_id, consumer, outcome, processed_at FROM inbox WHERE event_id IN ({ids})""")
    return [{**event, "handled_by": [{k: v for k, v in r.items() if k != "event_id"}
                                     for r in found["inbox"] if r["event_id"] == event["id"]]}
            for event in found["events"]]


# -- what happened -----------------------------------------------------------------------------


def summarise(bus_kind: str, fleet: Fleet, shoppers: Shoppers, controller: Controller,
              watchers: list[ChaosWatcher], facts: dict[str, list[dict[str, Any]]],
              seconds: dict[str, float], report: dict[str, Any] | None) -> dict[str, Any]:
    attempts = shoppers.attempts
    errors = [a for a in attempts if a.error]
    by_kind = Counter(f"{a.route} {a.status if a.status is not None else 'transport error'}"
                      + (f" {a.slug}" if a.slug else "") for a in errors)
    served = {int(a.at // WINDOW) for a in attempts
              if a.status is not None and 200 <= a.status < 300}
    took = sorted(a.seconds for a in attempts)
    by_window = Counter(int(a.at // WINDOW) for a in attempts)
    failed_by_window = Counter(int(a.at // WINDOW) for a in errors)
    windows = int(-(-CHAOS_SECONDS // WINDOW))
    statuses = Counter(row["status"] for row in facts["orders"])
    direct = [row for row in facts["reservations"] if row["order_id"] is None]
    received = {row["sku"]: int(row["units"]) for row in facts["received"]}
    ledger_sold = {r["sku"]: int(r["units"]) for r in facts["ledger_sold"] if r["units"]}
    facts_sold = {r["sku"]: int(r["units"]) for r in facts["facts_sold"] if r["units"]}
    changes = {row["id"] for row in facts["changes"]}
    handled: dict[str, set[str]] = {c: set() for c in CONSUMERS}
    for row in facts["handled"]:
        handled[row["consumer"]].add(row["event_id"])
    drop_sold = sum(1 for h in shoppers.held.values()
                    if h.sku == DROP and h.fate == "committed")
    log = fleet.state_dir / "logs" / "fleet.log"
    restarts = log.read_text().count("exited with") if log.exists() else 0
    return {
        "bus": bus_kind, "chaos_seconds": CHAOS_SECONDS, "clients": CLIENTS, "seed": SEED,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "back_in_use_after_kill_seconds": controller.back,
        "controller": controller.events,
        "supervisor_restarts": restarts,
        "requests": len(attempts), "errors": len(errors),
        "error_rate": round(len(errors) / max(1, len(attempts)), 4),
        "errors_by_kind": dict(by_kind.most_common()),
        "requests_and_errors_by_window": {
            f"{w * WINDOW:g}": [by_window[w], failed_by_window[w]] for w in sorted(by_window)},
        "latency_seconds": {q: round(took[min(len(took) - 1, int(len(took) * f))], 3)
                            for q, f in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))}
        if took else {},
        "windows_without_success": [
            f"{w * WINDOW:g}-{(w + 1) * WINDOW:g} s" for w in range(windows) if w not in served],
        "answers": dict(sorted(shoppers.outcomes.items())),
        "reservations": {
            "confirmed_to_clients": len(shoppers.held),
            "committed": sum(1 for h in shoppers.held.values() if h.fate == "committed"),
            "released": sum(1 for h in shoppers.held.values() if h.fate == "released"),
            "direct_in_database": len(direct),
            "by_checkouts_in_database": len(facts["reservations"]) - len(direct)},
        "checkouts": {"answered": len(shoppers.orders),
                      "heard": dict(Counter(shoppers.orders.values()).most_common()),
                      "orders_in_database": dict(statuses.most_common())},
        "drop": {"received": received.get(DROP, 0),
                 "committed": next(r["committed"] for r in facts["truth"] if r["sku"] == DROP),
                 "reserved": next(r["reserved"] for r in facts["truth"] if r["sku"] == DROP),
                 # units of the drop clients were told are theirs: commits, paid orders
                 "sold_to_clients": drop_sold + sum(
                     1 for order_id, heard in shoppers.orders.items()
                     if heard == "paid" and DROP in shoppers.order_skus[order_id]),
                 "refused": shoppers.outcomes.get("reserve 409", 0)},
        "units_received_by_clients": sum(shoppers.received.values()),
        "analytics": {"sold": facts_sold, "committed_in_ledger": ledger_sold,
                      "units_sold": sum(facts_sold.values())},
        "consumers": {"stock_changes": len(changes),
                      "missing": {c: sorted(changes - handled[c])[:20] for c in CONSUMERS},
                      "extra": {c: sorted(handled[c] - changes)[:20] for c in CONSUMERS}},
        "dead_letters": len(facts["dead_letters"]),
        "drifts_recorded_by_the_fleet": facts["drifts"],
        "reconcile": None if report is None else {
            k: report.get(k) for k in ("checked", "skus", "entries", "drifts", "suspected")},
        "watchers": [{"connections": w.connections, "errors": len(w.errors),
                      "servers": dict(Counter(w.servers))} for w in watchers],
        "unknown": shoppers.unknown[:20], "surprises": shoppers.surprises[:20],
    }


def print_summary(summary: dict[str, Any], path: Path) -> None:
    s = summary
    print(f"\n[chaos {s['bus']}] {s['clients']} clients for {s['chaos_seconds']:g} s "
          f"(seed {s['seed']}); seconds: {s['seconds']}")
    for event in s["controller"]:
        extra = {k: v for k, v in event.items() if k not in ("at", "what")}
        print(f"[chaos {s['bus']}]   {event['at']:6.2f} s  {event['what']}  {extra or ''}")
    print(f"[chaos {s['bus']}] supervisor restarts: {s['supervisor_restarts']}; seconds from "
          f"each kill to the replacement's being of use: {s['back_in_use_after_kill_seconds']}")
    print(f"[chaos {s['bus']}] requests {s['requests']}, errors {s['errors']} "
          f"(rate {s['error_rate']:.2%}): {s['errors_by_kind']}")
    print(f"[chaos {s['bus']}] windows without a success: {s['windows_without_success']}; "
          f"latency {s['latency_seconds']}")
    print(f"[chaos {s['bus']}] requests and errors per {WINDOW:g} s: "
          f"{s['requests_and_errors_by_window']}")
    print(f"[chaos {s['bus']}] answers: {s['answers']}")
    print(f"[chaos {s['bus']}] reservations: {s['reservations']}")
    print(f"[chaos {s['bus']}] checkouts: {s['checkouts']}")
    print(f"[chaos {s['bus']}] drop: {s['drop']}")
    print(f"[chaos {s['bus']}] analytics units sold: {s['analytics']['units_sold']}; stock "
          f"changes {s['consumers']['stock_changes']}, missing per consumer "
          f"{ {c: len(m) for c, m in s['consumers']['missing'].items()} }; dead letters "
          f"{s['dead_letters']}; drifts recorded by the fleet {s['drifts_recorded_by_the_fleet']}")
    print(f"[chaos {s['bus']}] reconcile: {s['reconcile']}")
    print(f"[chaos {s['bus']}] watchers: {s['watchers']}")
    print(f"[chaos {s['bus']}] unknown: {s['unknown']}; surprises: {s['surprises']}")
    steps = "; ".join(f"{at:g} s: {', '.join(w[:60] for w in waiting) or 'settled'}"
                      for at, waiting in s["settling"])
    print(f"[chaos {s['bus']}] settling: {steps}")
    lags = ", ".join(f"{x['at']} s: {x['changes']} made, {x['unpublished']} unpublished, "
                     f"{x['recs_behind']}/{x['analytics_behind']} behind" for x in s["lag"])
    print(f"[chaos {s['bus']}] stock changes, outbox and recs-availability/analytics lag: {lags}")
    print(f"[chaos {s['bus']}] written to {path}")
