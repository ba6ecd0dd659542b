"""`instock bench recs`: how fast a list is served over HTTP, and how fresh it is.

The catalogue (100,000 items by default), its stock and a synthetic behaviour history are
seeded into the recommender's projections directly (`rec_items`, `item_availability`,
`behaviour_events`), as its consumers would have built them: creating 100,000 products through
the API would take many minutes and measure the catalogue, not the recommender. One API process
(`instock serve`), or several sharing a bus, then start on that database, load them and fit their
models; the bench waits for every fitted model to answer, then measures over HTTP. With several,
each shopper's requests go to one of them (by a hash of the session id, as a load balancer's
consistent hashing would), and each hears the others' events over the bus:

1. steady serving: GET /v1/recommendations at a fixed rate (open loop: request i is due at
   t0 + i/rate and its latency counts from then, so a slow answer never slows the sender), for
   a population of shoppers who also send view events (each drops that shopper's cached lists);
2. cold serving: the same, every request from a shopper never seen: a read of their (empty)
   history, then the list every shopper we know nothing of shares for that context, computed
   by the first of them (so `cached` counts all but the first per context);
3. freshness of an event: a shopper's list, one add_to_cart of an item from another category,
   then the list polled until it changes;
4. freshness of a sold-out: real products (created, stocked and sold out through the API, so
   the change takes the inventory -> outbox -> relay -> bus -> engine path) put into several
   shoppers' cached lists, sold out, and the lists polled until none holds the item; each probe
   is then checked (every list, cached and fresh, without the item), not only timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from instock.bench.buses import bus_label, drop_stream, with_stream
from instock.bench.local import (
    BENCH_SERVER_ENV,
    Reporter,
    backend_of,
    free_port,
    instock_process,
    log_tail,
    logs_to_stderr,
    open_loop,
    process_cpu_seconds,
    scratch_database,
    wait_answering,
)
from instock.platform.auth import Role, TokenAuthority
from instock.platform.db import Database, insert_rows
from instock.platform.runtime import tune_for_throughput
from instock.recommendations.store import behaviour_events, item_availability, rec_items
from instock.workers import api_only_env

SECRET = "bench-recs-secret-0123456789abcdef"  # noqa: S105 - signs the bench's own throwaway servers' tokens
GOAL_P99_MS = 10.0
GOAL_FRESHNESS_MS = 1000.0
LIMIT = 10  # items per list, as a storefront's shelf would ask
CONTEXT_MIX = (("home", 0.6), ("product", 0.3), ("cart", 0.1))
POLL_SECONDS = 0.005
GIVE_UP_SECONDS = 10.0  # a probe whose list has not changed by then counts as never changed
FIT_TIMEOUT = 900.0
VISIBLE_TIMEOUT = 60.0
SHOPPERS_PER_SOLD_OUT = 3
CHUNK = 5000  # rows per insert while seeding
COLD_SECONDS = 5.0
# After the schedule's last request: how long answers may still come. An overloaded server
# would otherwise keep the bench waiting for its whole backlog; what is cut off is counted.
DRAIN_SECONDS = 30.0
READY_TIMEOUT = 120.0  # for /readyz; the model's fit is waited for afterwards
UNLOADED_REQUESTS = 50
# Keep-alive connections to the server, and requests in flight at once. The rest wait for a
# slot here (their latency still counts from when they were due), not in the client's pool.
CONNECTIONS = 64
STOCK_PER_REAL_ITEM = 5

Samples = NDArray[np.float64]

SIZES = ("XS", "S", "M", "L", "XL")
COLOURS = ("black", "white", "navy", "grey", "red", "green", "beige", "blue", "brown", "pink",
           "olive", "yellow")
ADJECTIVES = ("classic", "slim", "relaxed", "cropped", "oversized", "light", "warm", "soft",
              "rugged", "tailored", "vintage", "essential", "technical", "everyday", "summer",
              "winter", "organic", "quilted", "stretch", "washed")
MATERIALS = ("cotton", "linen", "wool", "denim", "leather", "fleece", "nylon", "cashmere",
             "canvas", "suede", "jersey", "silk")
NOUNS = ("jacket", "shirt", "trousers", "sneakers", "boots", "dress", "skirt", "sweater",
         "hoodie", "coat", "shorts", "scarf", "beanie", "backpack", "belt", "blazer", "cardigan",
         "chinos", "parka", "sandals", "loafers", "tshirt", "polo", "vest", "jeans", "gloves",
         "socks", "tote", "wallet", "cap")


@dataclass(frozen=True)
class Plan:
    items: int
    rate: float
    seconds: float
    shoppers: int
    event_rate: float
    probes: int
    database: str
    redis: str | None
    workdir: Path
    seed: int = 7
    servers: int = 1
    bus: str = "memory://"  # several servers need a shared one (nats:// or redis://)
    worker: bool = False  # the relay, consumers, sweeper... in `instock worker all`, not the API
    tune_gc: bool = False  # freeze the bench's own heap once seeded (the CLI; not in tests)
    fit_budget_seconds: float | None = None  # the servers' refit search (None: their default)

    @property
    def history_events(self) -> int:
        return 2 * self.items  # 200,000 events for 100,000 items

    @property
    def history_sessions(self) -> int:
        return max(1, self.items // 5)  # 20,000 sessions of ~10 events


@dataclass
class Result:
    report: dict[str, Any]
    latencies_ms: dict[str, Samples]  # steady, cold
    freshness_ms: dict[str, Samples]  # event, sold_out


# -- the synthetic shop ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    """What the bench knows of the catalogue it seeded: ids, categories, popularity."""

    ids: list[str]
    category: NDArray[np.int64]
    popularity: Samples  # sums to 1; Zipf-like over a random order of the items
    sessions: list[str]

    def popular(self, rng: np.random.Generator, n: int) -> NDArray[np.int64]:
        return rng.choice(len(self.ids), n, p=self.popularity)

    def code(self, product_id: str) -> int | None:
        """The seeded item's index (its id is rec-{index}); None for other products."""
        return int(product_id[4:]) if product_id.startswith("rec-") else None


def zipf(n: int, s: float) -> Samples:
    weights = 1.0 / np.arange(1, n + 1) ** s
    return weights / weights.sum()


def make_shop(plan: Plan) -> Shop:
    rng = np.random.default_rng(plan.seed)
    n = plan.items
    category = rng.choice(60, n, p=zipf(60, 0.7)).astype(np.int64)
    popularity = zipf(n, 1.0)[rng.permutation(n)]  # popularity unrelated to id order
    return Shop([f"rec-{i:06d}" for i in range(n)], category, popularity,
                [f"hist-{s:06d}" for s in range(plan.history_sessions)])


def item_rows(shop: Shop, plan: Plan, now: datetime) -> Iterator[tuple[dict[str, Any],
                                                                        list[dict[str, Any]]]]:
    """(rec_items row, item_availability rows) per item."""
    rng = np.random.default_rng(plan.seed + 1)
    n = len(shop.ids)
    brand = rng.choice(300, n, p=zipf(300, 0.5))
    tag_count = rng.integers(1, 4, n)
    tags = rng.choice(200, (n, 3), p=zipf(200, 0.6))
    colour = rng.integers(len(COLOURS), size=n)
    adjective, material = rng.integers(len(ADJECTIVES), size=n), rng.integers(len(MATERIALS),
                                                                               size=n)
    price = np.clip(np.exp(rng.normal(3.7, 0.7, n)), 3, 900).round(2)
    replenishable = rng.random(n) < 0.05
    size_count = rng.integers(1, 5, n)
    size_start = rng.integers(0, len(SIZES) - size_count + 1)
    available = rng.integers(1, 21, (n, 4))
    for i, pid in enumerate(shop.ids):
        c = int(shop.category[i])
        sizes = SIZES[size_start[i]: size_start[i] + size_count[i]]
        variants = [{"sku": f"{pid}-{size}", "attributes": {"size": size}} for size in sizes]
        yield ({"product_id": pid, "version": 1,
                "title": f"{ADJECTIVES[adjective[i]]} {MATERIALS[material[i]]} "
                         f"{NOUNS[c % len(NOUNS)]}",
                "brand": f"brand-{brand[i]:03d}", "category": f"category-{c:02d}",
                "tags": sorted({f"tag-{t:03d}" for t in tags[i, : tag_count[i]]}),
                "attributes": {"colour": COLOURS[colour[i]]}, "price": float(price[i]),
                "replenishable": bool(replenishable[i]), "variants": variants,
                "updated_at": now},
               [{"sku": v["sku"], "version": 1, "available": int(available[i, j]),
                 "updated_at": now} for j, v in enumerate(variants)])


def history_rows(shop: Shop, plan: Plan, now: datetime) -> list[dict[str, Any]]:
    """Sessions that browse within one category (popular items more often), now and then
    straying; mostly views, some carts and purchases, over the last 30 days."""
    rng = np.random.default_rng(plan.seed + 2)
    n_sessions = len(shop.sessions)
    lengths = 1 + rng.poisson(max(plan.history_events / n_sessions - 1, 0), n_sessions)
    category_mass = np.bincount(shop.category, weights=shop.popularity, minlength=60)
    home = rng.choice(60, n_sessions, p=category_mass / category_mass.sum())
    picks = _browse(shop, rng, np.repeat(home, lengths))
    stray = rng.random(len(picks)) < 0.1
    picks[stray] = shop.popular(rng, int(stray.sum()))
    kinds = rng.choice(["view", "add_to_cart", "purchase"], len(picks), p=[0.86, 0.10, 0.04])
    # A session starts 1 h to 30 days ago; ~40 s between its events keeps it in the past.
    ago = rng.uniform(3600, 30 * 86400, n_sessions)
    gaps = rng.exponential(40.0, len(picks))
    rows, k = [], 0
    for s, length in enumerate(lengths):
        at = now - timedelta(seconds=float(ago[s]))
        for _ in range(length):
            at += timedelta(seconds=float(gaps[k]))
            item = shop.ids[picks[k]]
            rows.append({"id": str(uuid.uuid4()), "kind": str(kinds[k]),
                         "session_id": shop.sessions[s], "customer_id": None, "product_id": item,
                         "sku": None, "query": None, "attribute": None, "value": None,
                         "occurred_at": at, "received_at": at})
            k += 1
    return rows


def _browse(shop: Shop, rng: np.random.Generator, categories: NDArray[np.int64]
            ) -> NDArray[np.int64]:
    """One item per entry, drawn by popularity within the entry's category."""
    picks = np.zeros(len(categories), np.int64)
    for c in np.unique(categories):
        members = np.flatnonzero(shop.category == c)
        where = np.flatnonzero(categories == c)
        weights = shop.popularity[members]
        picks[where] = rng.choice(members, len(where), p=weights / weights.sum())
    return picks


async def seed(url: str, shop: Shop, plan: Plan, report: Reporter) -> int:
    """Write the projections the recommender loads when it starts; the history's length."""
    now = datetime.now(UTC)
    db = Database(url)
    try:
        advance = report.task("seeding items and stock", plan.items)
        items: list[dict[str, Any]] = []
        stock: list[dict[str, Any]] = []
        for row, levels in item_rows(shop, plan, now):
            items.append(row)
            stock += levels
            if len(items) == CHUNK:
                await _insert(db, [(rec_items, items), (item_availability, stock)])
                advance(len(items))
                items, stock = [], []
        await _insert(db, [(rec_items, items), (item_availability, stock)])
        advance(len(items))
        history = history_rows(shop, plan, now)
        advance = report.task("seeding behaviour history", len(history))
        for start in range(0, len(history), CHUNK):
            chunk = history[start: start + CHUNK]
            await _insert(db, [(behaviour_events, chunk)])
            advance(len(chunk))
        return len(history)
    finally:
        await db.dispose()


async def _insert(db: Database, batches: list[tuple[sa.Table, list[dict[str, Any]]]]) -> None:
    async with db.write() as conn:
        for table, rows in batches:
            await insert_rows(conn, table, rows)


# -- the server --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _servers(plan: Plan, database_url: str) -> AsyncIterator[list[tuple[str, int]]]:
    """`plan.servers` processes of `instock serve` on the seeded database, sharing the run's own
    stream of the bus; yields their base URLs and process ids once each /readyz answers."""
    bus = with_stream(plan.bus, f"instock_bench_recs_{uuid.uuid4().hex[:10]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    env.update(INSTOCK_DATABASE_URL=database_url, INSTOCK_JWT_SECRET=SECRET,
               INSTOCK_STATE_DIR=str(plan.workdir / "state"), INSTOCK_LOG_LEVEL="warning",
               INSTOCK_BUS_URL=bus, **BENCH_SERVER_ENV)
    if plan.redis:
        env["INSTOCK_REDIS_URL"] = plan.redis
    if plan.fit_budget_seconds is not None:
        env["INSTOCK_RECS_FIT_BUDGET_SECONDS"] = str(plan.fit_budget_seconds)
    api_env = {**env, **api_only_env()} if plan.worker else env
    with contextlib.ExitStack() as running:
        started = []
        for i in range(plan.servers):
            port = free_port()
            log = plan.workdir / f"api-{i}.log"
            process = running.enter_context(instock_process(["serve", "--port", str(port)],
                                                            api_env, log))
            started.append((f"http://127.0.0.1:{port}", log, process))
        worker_log = plan.workdir / "worker.log"
        worker = running.enter_context(instock_process(["worker", "all"], env, worker_log)
                                       ) if plan.worker else None
        try:
            await asyncio.gather(*(wait_answering(f"{base}/readyz", log, READY_TIMEOUT, process)
                                   for base, log, process in started))
            if worker is not None and worker.poll() is not None:
                raise RuntimeError(f"instock worker all exited: {log_tail(worker_log)}")
            yield [(base, process.pid) for base, _, process in started]
        finally:
            running.close()
            await drop_stream(bus)




# -- talking to it -----------------------------------------------------------------------------


@dataclass
class Client:
    """The storefront's view of the servers: lists and events, every failure counted.

    A shopper's requests all go to one server, chosen by a hash of the session id (a load
    balancer's consistent hashing); staff's go to the first."""

    http: list[aiohttp.ClientSession]  # one per server; aiohttp costs a third of what httpx
    # does per request: the bench shares the server's cores, and a client's own time would
    # count in every latency measured
    service: dict[str, str]
    admin: dict[str, str]
    errors: Counter[str] = field(default_factory=Counter)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONNECTIONS))

    def server_of(self, session: str) -> int:
        return zlib.crc32(session.encode()) % len(self.http)

    def session_on(self, server: int, name: str) -> str:
        """A session id, starting with `name`, whose requests go to `server`."""
        return next(f"{name}-{k}" for k in range(10**6)
                    if self.server_of(f"{name}-{k}") == server)

    async def recommendations(self, session: str, context: str = "home",
                              limit: int = LIMIT) -> dict[str, Any] | None:
        return await self._call(self.server_of(session), "GET", "/v1/recommendations",
                                self.service, params={"session_id": session,
                                                      "context": context, "limit": limit})

    async def events(self, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A batch of events, to the server of its first event's shopper (the others hear of
        them over the bus)."""
        return await self._call(self.server_of(events[0]["session_id"]), "POST", "/v1/events",
                                self.service, json={"events": events})

    async def admin_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self._call(0, "POST", path, self.admin, json=body)
        if answer is None:
            raise RuntimeError(f"POST {path} failed: {dict(self.errors)}")
        return answer

    async def _call(self, server: int, method: str, path: str, headers: dict[str, str],
                    **kwargs: Any) -> dict[str, Any] | None:
        try:
            async with self.slots, self.http[server].request(method, path, headers=headers,
                                                             **kwargs) as response:
                if response.status >= 300:
                    self.errors[f"{method} {path} {response.status}"] += 1
                    return None
                answer: dict[str, Any] = await response.json()
                return answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[f"{method} {path} {type(exc).__name__}"] += 1
            return None


def products_of(answer: dict[str, Any] | None) -> list[str]:
    return [item["product_id"] for item in (answer or {}).get("items", [])]


async def wait_fitted(client: Client, timeout: float = FIT_TIMEOUT) -> float:
    """Seconds until every server's fitted model answers: until then lists come from the
    starting model, whose every reason is "new" (the newest items). A new shopper each time:
    no cached list."""
    started = time.perf_counter()
    for server in range(len(client.http)):
        for attempt in range(10**9):
            answer = await client.recommendations(client.session_on(server,
                                                                    f"bench-fit-{attempt}"))
            reasons = {item["reason"]["code"] for item in (answer or {}).get("items", [])}
            if reasons - {"new"}:
                break
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the model was not fitted in {timeout:.0f} s")
            await asyncio.sleep(0.5)
    return time.perf_counter() - started


# -- steady and cold serving -------------------------------------------------------------------


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    cached: int = 0
    answered: int = 0
    late_ms: float = 0.0  # the sender's worst delay behind its schedule
    started: float = 0.0
    finished: float = 0.0
    event_post_ms: list[float] = field(default_factory=list)


def contexts(shop: Shop, rng: np.random.Generator, n: int) -> list[str]:
    """home 60%, product:{a popular item} 30%, cart 10%."""
    kinds = rng.choice(len(CONTEXT_MIX), n, p=[share for _, share in CONTEXT_MIX])
    products = shop.popular(rng, n)
    return [f"product:{shop.ids[products[i]]}" if CONTEXT_MIX[k][0] == "product"
            else CONTEXT_MIX[k][0] for i, k in enumerate(kinds)]


async def serve_lists(client: Client, shop: Shop, plan: Plan, sessions: list[str],
                      seconds: float, advance: Callable[[int], None], *,
                      events: bool, each_once: bool = False) -> Load:
    """GETs at plan.rate for the given shoppers, picked at random (or `each_once`, in
    order); with `events`, those shoppers also view popular items at plan.event_rate."""
    rng = np.random.default_rng(plan.seed + 3)
    count = max(1, round(plan.rate * seconds))
    who = np.arange(count) % len(sessions) if each_once else rng.integers(len(sessions),
                                                                          size=count)
    where = contexts(shop, rng, count)
    load = Load()

    async def one(i: int, due: float) -> None:
        answer = await client.recommendations(sessions[who[i]], where[i])
        if answer is not None:
            load.latencies_ms.append((time.monotonic() - due) * 1000)
            load.answered += 1
            load.cached += bool(answer["cached"])

    sender = asyncio.create_task(_view_events(client, shop, plan, sessions, seconds, load)) \
        if events and plan.event_rate > 0 else None
    schedule = await open_loop(plan.rate, seconds, one, DRAIN_SECONDS, advance)
    load.started, load.late_ms, load.finished = (schedule.started, schedule.late_ms,
                                                 time.monotonic())
    if unanswered := schedule.unfinished:
        client.errors[f"GET /v1/recommendations unanswered {DRAIN_SECONDS:g} s after the "
                      "schedule ended"] += unanswered
    if sender is not None:
        await sender
    return load


async def _view_events(client: Client, shop: Shop, plan: Plan, sessions: list[str],
                       seconds: float, load: Load) -> None:
    rng = np.random.default_rng(plan.seed + 4)
    count = max(1, round(plan.event_rate * seconds))
    who = rng.integers(len(sessions), size=count)
    items = shop.popular(rng, count)

    async def one(i: int, due: float) -> None:
        if await client.events([{"type": "view", "session_id": sessions[who[i]],
                                 "product_id": shop.ids[items[i]]}]) is not None:
            load.event_post_ms.append((time.monotonic() - due) * 1000)

    if unanswered := (await open_loop(plan.event_rate, seconds, one, DRAIN_SECONDS)).unfinished:
        client.errors[f"POST /v1/events unanswered {DRAIN_SECONDS:g} s after the schedule "
                      "ended"] += unanswered


async def one_at_a_time(client: Client, shop: Shop, plan: Plan, sessions: list[str]) -> Samples:
    """Lists asked one after another (one in flight): the service time, without queueing."""
    where = contexts(shop, np.random.default_rng(plan.seed + 6), len(sessions))
    ms = []
    for session, context in zip(sessions, where, strict=True):
        started = time.perf_counter()
        if await client.recommendations(session, context) is not None:
            ms.append((time.perf_counter() - started) * 1000)
    return np.array(ms)


# -- freshness ---------------------------------------------------------------------------------


@dataclass
class EventProbe:
    session: str
    product_id: str
    cached_before: bool
    post_ms: float
    ms: float | None  # None: the list never changed


async def event_probe(client: Client, shop: Shop, session: str,
                      rng: np.random.Generator) -> EventProbe:
    """A list (asked twice: the second from the cache), one add_to_cart of an item from a
    category the list does not show, then the list polled until it differs."""
    await client.recommendations(session)
    before = await client.recommendations(session)
    shown = {shop.category[code] for code in map(shop.code, products_of(before))
             if code is not None}
    candidates = [int(c) for c in shop.popular(rng, 200) if shop.category[c] not in shown]
    product = shop.ids[candidates[0] if candidates else int(shop.popular(rng, 1)[0])]
    sent = time.perf_counter()
    await client.events([{"type": "add_to_cart", "session_id": session, "product_id": product}])
    answered = time.perf_counter()
    changed = await _poll(lambda: client.recommendations(session),
                          lambda answer: products_of(answer) != products_of(before))
    return EventProbe(session, product, bool((before or {}).get("cached")),
                      (answered - sent) * 1000,
                      None if changed is None else (changed - answered) * 1000)


async def _poll(ask: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]
                ) -> float | None:
    """perf_counter() when an answer satisfied `done`; None after GIVE_UP_SECONDS."""
    deadline = time.perf_counter() + GIVE_UP_SECONDS
    while time.perf_counter() < deadline:
        answer = await ask()
        if answer is not None and done(answer):
            return time.perf_counter()
        await asyncio.sleep(POLL_SECONDS)
    return None


@dataclass
class SoldOutProbe:
    product_id: str
    listed_before: bool  # in every shopper's list before the sell-out
    cached_before: bool  # and those lists came from the cache
    ms: float | None  # adjustment answered -> no list holds it; None: still listed
    gone: bool  # checked afterwards: in no shopper's list, cached or fresh


def real_product(i: int) -> dict[str, Any]:
    pid = f"bench-recs-real-{i:03d}"
    return {"id": pid, "title": "real bench parka", "brand": "brand-000",
            "category": "category-00", "tags": ["tag-000"], "attributes": {"colour": "black"},
            "price": "89.00", "variants": [{"sku": f"{pid}-M", "attributes": {"size": "M"}}]}


async def create_real_products(client: Client, count: int) -> list[str]:
    """Products, a location and stock through the API (and so through outbox, relay, bus)."""
    await client.admin_post("/v1/locations", {"id": "bench-recs-wh", "name": "bench",
                                              "kind": "warehouse"})
    ids = []
    for i in range(count):
        product = real_product(i)
        await client.admin_post("/v1/products", product)
        await client.admin_post("/v1/inventory/adjustments", {
            "sku": product["variants"][0]["sku"], "location": "bench-recs-wh", "kind": "receive",
            "quantity": STOCK_PER_REAL_ITEM, "reason": "bench"})
        ids.append(product["id"])
    return ids


async def wait_visible(client: Client, product_ids: list[str]) -> None:
    """Until every server's engine lists every real product (it heard of it and of its stock):
    a new shopper carts it each time, and a list must then hold it."""
    for pid, server in ((p, s) for p in product_ids for s in range(len(client.http))):
        deadline = time.perf_counter() + VISIBLE_TIMEOUT
        for attempt in range(10**9):
            session = client.session_on(server, f"bench-visible-{pid}-{attempt}")
            await client.events([{"type": "add_to_cart", "session_id": session,
                                  "product_id": pid}])
            if pid in products_of(await client.recommendations(session, limit=50)):
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{pid} not recommended {VISIBLE_TIMEOUT:.0f} s after "
                                   "it was created and stocked")
            await asyncio.sleep(0.2)


async def sold_out_probe(client: Client, pid: str, i: int) -> SoldOutProbe:
    sessions = [f"bench-sold-{i}-{k}" for k in range(SHOPPERS_PER_SOLD_OUT)]
    await client.events([{"type": "add_to_cart", "session_id": s, "product_id": pid}
                         for s in sessions])
    await asyncio.gather(*(client.recommendations(s) for s in sessions))  # now cached
    before = await asyncio.gather(*(client.recommendations(s) for s in sessions))
    listed = all(pid in products_of(answer) for answer in before)
    cached = all(bool((answer or {}).get("cached")) for answer in before)
    stock = await client.admin_post("/v1/inventory/adjustments", {
        "sku": f"{pid}-M", "location": "bench-recs-wh", "kind": "damage",
        "quantity": STOCK_PER_REAL_ITEM, "reason": "bench sell-out"})
    answered = time.perf_counter()
    if stock["available"] != 0:
        raise RuntimeError(f"{pid} still has {stock['available']} available after the damage")

    async def ask() -> list[dict[str, Any] | None]:
        return await asyncio.gather(*(client.recommendations(s) for s in sessions))

    gone_at = await _poll(ask, lambda answers: all(
        a is not None and pid not in products_of(a) for a in answers))
    return SoldOutProbe(pid, listed, cached,
                        None if gone_at is None else (gone_at - answered) * 1000,
                        await _gone_everywhere(client, pid, sessions))


async def _gone_everywhere(client: Client, pid: str, sessions: list[str]) -> bool:
    """Counted, not assumed: the probe's shoppers' lists (home and cart, from the cache or
    not) and a new shopper who just carted it: none may hold the sold-out item."""
    fresh = f"bench-after-{pid}"
    await client.events([{"type": "add_to_cart", "session_id": fresh, "product_id": pid}])
    asks = [client.recommendations(s, where) for s in [*sessions, fresh]
            for where in ("home", "cart")]
    answers = await asyncio.gather(*asks)
    return all(a is not None and pid not in products_of(a) for a in answers)


# -- the run -----------------------------------------------------------------------------------


async def run(plan: Plan, report: Reporter) -> Result:
    logs_to_stderr()  # stdout holds only the JSON
    shop = make_shop(plan)
    tokens = TokenAuthority(SECRET, "instock", 3600 * 4)
    async with scratch_database(plan.database, plan.workdir, "instock_bench_recs") as url:
        from instock.migrate import upgrade

        report.note(f"migrating a fresh {backend_of(plan.database)} database")
        await asyncio.to_thread(upgrade, url)
        began = time.perf_counter()
        history = await seed(url, shop, plan, report)
        seed_seconds = time.perf_counter() - began
        if plan.tune_gc:
            # The bench's own full collections took ~120 ms here (this process holds about a
            # million objects by now); one during the measurement counted as the server's.
            tune_for_throughput()
        report.note(f"starting {plan.servers} instock serve; waiting for the models to be "
                    "fitted")
        async with _servers(plan, url) as started, contextlib.AsyncExitStack() as sessions:
            http = [await sessions.enter_async_context(aiohttp.ClientSession(
                base, timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(limit=CONNECTIONS))) for base, _ in started]
            client = Client(http, {"Authorization": f"Bearer {tokens.mint(Role.SERVICE, 'shop')}"},
                            {"Authorization": f"Bearer {tokens.mint(Role.ADMIN, 'bench')}"})
            fit_seconds = await wait_fitted(client)
            real = await create_real_products(client, plan.probes)
            await wait_visible(client, real)
            measured = await _measure(client, shop, plan, real, report,
                                      [pid for _, pid in started])
    body = {
        "catalogue_items": plan.items, "history_events": history,
        "history_sessions": plan.history_sessions,
        "seeded": "catalogue, stock and history written into the recommender's projections "
                  "(rec_items, item_availability, behaviour_events) directly, as its "
                  "consumers would have built them; the sold-out probes' products go through "
                  "the API",
        "backend": backend_of(plan.database), "redis": plan.redis is not None,
        "servers": plan.servers, "bus": bus_label(plan.bus), "worker": plan.worker,
        "rate_limits": BENCH_SERVER_ENV["INSTOCK_RATE_LIMITS"],
        "routing": "one server per shopper, by a hash of the session id",
        "seed_seconds": round(seed_seconds, 1), "fit_seconds": round(fit_seconds, 1),
        **measured.report,
        "goals": {"p99_ms": GOAL_P99_MS, "freshness_ms": GOAL_FRESHNESS_MS},
    }
    body["goals_met"] = _goals_met(body)
    return Result(body, measured.latencies_ms, measured.freshness_ms)


@dataclass
class Measured:
    report: dict[str, Any]
    latencies_ms: dict[str, Samples]
    freshness_ms: dict[str, Samples]


async def _measure(client: Client, shop: Shop, plan: Plan, real: list[str],
                   report: Reporter, pids: list[int]) -> Measured:
    population = shop.sessions[: plan.shoppers]
    population += [f"bench-shopper-{i}" for i in range(plan.shoppers - len(population))]
    await serve_lists(client, shop, plan, [f"bench-warm-{i}" for i in range(20)], 20 / plan.rate,
                      lambda _: None, events=False)  # first-request costs are not what we ask
    unloaded = await one_at_a_time(client, shop, plan, _unloaded_sessions(shop, plan))
    server_before, cost_before = await _server_views(client.http, pids)
    steady = await serve_lists(client, shop, plan, population, plan.seconds,
                               report.task("steady lists", round(plan.rate * plan.seconds)),
                               events=True)
    server_after, cost_after = await _server_views(client.http, pids)
    cold_seconds = min(COLD_SECONDS, plan.seconds)
    cold_count = round(plan.rate * cold_seconds)
    cold = await serve_lists(client, shop, plan, [f"bench-cold-{i}" for i in range(cold_count)],
                             cold_seconds, report.task("cold lists (never-seen shoppers)",
                                                       cold_count),
                             events=False, each_once=True)
    rng = np.random.default_rng(plan.seed + 5)
    advance = report.task("event freshness probes", plan.probes)
    event_probes = []
    for i in range(plan.probes):
        event_probes.append(await event_probe(client, shop, _probe_session(shop, plan, i), rng))
        advance(1)
    advance = report.task("sold-out freshness probes", len(real))
    sold_out = []
    for i, pid in enumerate(real):
        sold_out.append(await sold_out_probe(client, pid, i))
        advance(1)
    return _summarise(plan, steady, cold, unloaded, event_probes, sold_out,
                      _histogram_diffs(server_before, server_after),
                      cost_after.minus(cost_before), client.errors)


def _unloaded_sessions(shop: Shop, plan: Plan) -> list[str]:
    """Shoppers with a history, outside the steady population, seen for the first time."""
    spare = shop.sessions[plan.shoppers:][:UNLOADED_REQUESTS]
    return spare + [f"bench-unloaded-{i}" for i in range(UNLOADED_REQUESTS - len(spare))]


def _probe_session(shop: Shop, plan: Plan, i: int) -> str:
    """Shoppers with a history, outside the steady population (else new ones)."""
    spare = shop.sessions[plan.shoppers:]
    return spare[-(i + 1)] if i < len(spare) else f"bench-event-{i}"


def _summarise(plan: Plan, steady: Load, cold: Load, unloaded: Samples,
               event_probes: list[EventProbe],
               sold_out: list[SoldOutProbe], servers: list[Histogram], cost: ServerCost,
               errors: Counter[str]) -> Measured:
    steady_ms = np.array(steady.latencies_ms)
    cold_ms = np.array(cold.latencies_ms)
    event_ms = np.array([p.ms for p in event_probes if p.ms is not None])
    sold_ms = np.array([p.ms for p in sold_out if p.ms is not None])
    elapsed = max(steady.finished - steady.started, 1e-9)
    body: dict[str, Any] = {
        "rate": plan.rate, "seconds": plan.seconds, "shoppers": plan.shoppers,
        "event_rate": plan.event_rate, "limit": LIMIT,
        "context_mix": {name: share for name, share in CONTEXT_MIX},
        "requests": steady.answered, "achieved_rate": round(steady.answered / elapsed, 1),
        "sender_late_ms": round(steady.late_ms, 1),
        "latency_ms": quantiles(steady_ms, (50, 90, 99)),
        "latency_covers": "answered requests, from when each was due",
        "unloaded_latency_ms": {**quantiles(unloaded, (50, 99)), "requests": len(unloaded),
                                "note": "one list at a time before the steady phase: the "
                                        "service time without queueing"},
        "server_side_ms": server_quantiles(_summed(servers)),
        "requests_per_server": [int(h.get(float("inf"), 0.0)) for h in servers],
        "server_cpu": cost.per_list(steady.answered),
        "cache_hit_share": round(steady.cached / max(steady.answered, 1), 3),
        "event_post_ms": quantiles(np.array(steady.event_post_ms), (50, 99)),
        "cold_latency_ms": {**quantiles(cold_ms, (50, 99)), "requests": cold.answered,
                            "cached": cold.cached},
        "freshness_ms": {
            "event": {**quantiles(event_ms, (50, 99)), "probes": len(event_probes),
                      "changed": len(event_ms),
                      "cached_before": sum(p.cached_before for p in event_probes),
                      "post_ms": quantiles(np.array([p.post_ms for p in event_probes]),
                                           (50, 99))},
            "sold_out": {**quantiles(sold_ms, (50, 99)), "probes": len(sold_out),
                         "gone": sum(p.gone for p in sold_out),
                         "listed_before": sum(p.listed_before for p in sold_out),
                         "cached_before": sum(p.cached_before for p in sold_out),
                         "shoppers_per_probe": SHOPPERS_PER_SOLD_OUT}},
        "sold_out_probes": [vars(p) | {"ms": _round(p.ms)} for p in sold_out],
        "errors": sum(errors.values()), "error_kinds": dict(errors),
    }
    return Measured(body, {"steady": steady_ms, "cold (never-seen shoppers)": cold_ms,
                           "one at a time": unloaded},
                    {"event": event_ms, "sold out": sold_ms})


def _goals_met(body: dict[str, Any]) -> dict[str, bool]:
    fresh = body["freshness_ms"]
    return {
        "p99_ms": (body["latency_ms"]["p99"] or float("inf")) <= GOAL_P99_MS,
        "event_freshness": fresh["event"]["changed"] == fresh["event"]["probes"]
        and (fresh["event"]["max"] or float("inf")) <= GOAL_FRESHNESS_MS,
        "sold_out_freshness": fresh["sold_out"]["gone"] == fresh["sold_out"]["probes"]
        and (fresh["sold_out"]["max"] or float("inf")) <= GOAL_FRESHNESS_MS,
    }


def quantiles(ms: Samples, percents: tuple[int, ...]) -> dict[str, float | None]:
    if not len(ms):
        return {**{f"p{p}": None for p in percents}, "max": None}
    return {**{f"p{p}": round(float(np.percentile(ms, p)), 2) for p in percents},
            "max": round(float(ms.max()), 2)}


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 2)


# -- the server's own view ---------------------------------------------------------------------

_BUCKET = re.compile(r'^instock_http_request_duration_seconds_bucket\{(?P<labels>[^}]*)\} '
                     r'(?P<count>\S+)$')


_COUNTER = re.compile(r'^(?P<name>instock_recs_blend_cpu_seconds_total|'
                      r'instock_recs_cache_requests_total)(?:\{(?P<labels>[^}]*)\})? '
                      r'(?P<value>\S+)$')


Histogram = dict[float, float]  # cumulative count per upper bound (s)


@dataclass(frozen=True)
class ServerCost:
    """What the servers spent, summed: their processes' CPU (/proc), their serving threads' CPU
    ranking fresh lists and how many (their /metrics)."""

    cpu_seconds: float
    blend_cpu_seconds: float
    fresh_lists: float

    def minus(self, before: ServerCost) -> ServerCost:
        return ServerCost(self.cpu_seconds - before.cpu_seconds,
                          self.blend_cpu_seconds - before.blend_cpu_seconds,
                          self.fresh_lists - before.fresh_lists)

    def per_list(self, answered: int) -> dict[str, Any]:
        return {"ms_per_list": round(1000 * self.cpu_seconds / max(answered, 1), 2),
                "blend_ms_per_fresh_list": round(
                    1000 * self.blend_cpu_seconds / max(self.fresh_lists, 1), 2),
                "fresh_lists": int(self.fresh_lists),
                "note": "the steady phase: the servers' whole CPU per list answered (events, "
                        "relay and consumers included), and of it their serving threads' "
                        "ranking of each list not from the cache"}


async def _server_views(servers: list[aiohttp.ClientSession], pids: list[int]
                        ) -> tuple[list[Histogram], ServerCost]:
    """Per server, its own timing of 200-answered GET /v1/recommendations (from its /metrics):
    what the server spent, without the client and the network; and their costs, summed."""
    histograms, blend, fresh = [], 0.0, 0.0
    for http in servers:
        async with http.get("/metrics") as response:
            text = await response.text()
        histograms.append(_buckets(text))
        for line in text.splitlines():
            match = _COUNTER.match(line)
            if match is None:
                continue
            if match["name"] == "instock_recs_blend_cpu_seconds_total":
                blend += float(match["value"])
            elif 'result="miss"' in (match["labels"] or ""):
                fresh += float(match["value"])
    return histograms, ServerCost(sum(map(process_cpu_seconds, pids)), blend, fresh)


def _buckets(text: str) -> Histogram:
    buckets: Histogram = {}
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if (labels.get("route"), labels.get("method"), labels.get("status")) == (
                "/v1/recommendations", "GET", "200"):
            bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + float(match["count"])
    return buckets


def _histogram_diffs(before: list[Histogram], after: list[Histogram]) -> list[Histogram]:
    return [{bound: count - old.get(bound, 0.0) for bound, count in new.items()}
            for old, new in zip(before, after, strict=True)]


def _summed(histograms: list[Histogram]) -> Histogram:
    total: Histogram = {}
    for histogram in histograms:
        for bound, count in histogram.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def server_quantiles(buckets: Histogram) -> dict[str, Any]:
    """p50/p99 interpolated within the histogram's buckets (coarse: 1, 2.5, 5, 10, 25 ms...),
    and the share answered within the 10 ms goal."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {"p50": None, "p99": None, "within_10ms": None}

    def at(q: float) -> float:
        lower, below = 0.0, 0.0
        for bound in bounds:
            if buckets[bound] >= q * total:
                if bound == float("inf"):
                    return lower * 1000
                share = (q * total - below) / max(buckets[bound] - below, 1e-9)
                return (lower + share * (bound - lower)) * 1000
            lower, below = bound, buckets[bound]
        return lower * 1000

    return {"p50": round(at(0.5), 2), "p99": round(at(0.99), 2),
            "within_10ms": round(buckets.get(0.01, 0.0) / total, 4),
            "note": "the server's own timing (from /metrics buckets), no client or network"}
