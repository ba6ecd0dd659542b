"""Recommendation use cases against the live system (offline: evaluate.py and logs.py).

Behaviour events are stored and published in one transaction; every API process's engine hears
them (and stock, product and order events) from the bus and learns within a second. Lists are
cached per shopper and dropped when the shopper does something; a list read from the cache is
checked against live stock, so a sold-out item is gone from every cached list at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.events import PRODUCT_EVENTS
from instock.customers.events import ProfileUpdated
from instock.experiments.service import Assignment
from instock.inventory.events import StockChanged
from instock.orders.events import OrderPaid
from instock.platform.bus import Bus, Envelope
from instock.platform.bus import outbox as events_out
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.bus.envelope import DomainEvent, event_time
from instock.platform.cache import GroupedCache
from instock.platform.db import Database, utcnow
from instock.platform.errors import ValidationFailed
from instock.platform.ids import new_id
from instock.platform.memo import Memo
from instock.platform.retry import keep_running
from instock.platform.runtime import keep_out_of_collections
from instock.platform.telemetry import RECS_BLEND_CPU, RECS_CACHE, RECS_FRESHNESS
from instock.polls.events import PollAnswered
from instock.recommendations import artefacts, store
from instock.recommendations import engine as eng
from instock.recommendations.events import BehaviourRecorded, SessionMerged

log = structlog.get_logger(__name__)
_CACHE_HIT, _CACHE_MISS = RECS_CACHE.labels("hit"), RECS_CACHE.labels("miss")

# Every shopper we know nothing of shares one cached list per context (their own group holds
# none); it is made again this often, so that new products, refits and restocks reach them
# at once, as they reach a new shopper.
BLANK_SHOPPERS = "blank"
BLANK_LIST_SECONDS = 1.0
# A cached list holds this many times the asked length: picks that sell out meanwhile are
# skipped on read without a recompute.
OVERFETCH = 2
# Shops' clocks drift: an event a little ahead of ours is fine, one from next week is a bug.
CLOCK_LEEWAY = timedelta(minutes=5)


async def on_stock_changed(conn: AsyncConnection, envelope: Envelope) -> None:
    """Keep the in-stock projection: the consumer framework already drops older sequences,
    and each SKU's newest state in a batch is written once, by `save_availabilities`."""
    data = envelope["data"]
    newest: dict[str, tuple[int, int]] = gathered("recs.availability", dict)
    version, available = int(data["sku_version"]), int(data["totals"]["available"])
    if version >= newest.get(data["sku"], (-1, 0))[0]:
        newest[data["sku"]] = (version, available)


async def save_availabilities(conn: AsyncConnection) -> None:
    """The batch's SKUs, one statement (an adjustment's share was one statement of its own)."""
    newest: dict[str, tuple[int, int]] = gathered("recs.availability", dict)
    await store.save_availability(conn, dict(sorted(newest.items())), utcnow())


async def on_product(conn: AsyncConnection, envelope: Envelope) -> None:
    """Keep the catalogue projection (what the engine loads when a process starts)."""
    await store.save_items(conn, [item_row(envelope["data"])])


def item_row(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"product_id": data["id"], "version": int(data["version"]), "title": data["title"],
            "brand": data["brand"], "category": data["category"], "tags": list(data["tags"]),
            "attributes": dict(data["attributes"]), "price": float(data["price"]),
            "replenishable": bool(data["replenishable"]),
            "variants": list(data.get("variants") or [{"sku": s} for s in data["skus"]]),
            "updated_at": utcnow()}


def preference_rows(session_id: str | None, customer_id: str | None,
                    stated: Sequence[tuple[str, str]],
                    occurred_at: datetime) -> list[dict[str, Any]]:
    """Behaviour rows of preference answers the shopper gave elsewhere (a poll, a profile)."""
    now = utcnow()
    return [{"id": new_id(), "kind": "preference", "session_id": session_id,
             "customer_id": customer_id, "product_id": None, "sku": None, "query": None,
             "attribute": attribute, "value": value[:128], "occurred_at": occurred_at,
             "received_at": now}
            for attribute, value in dict.fromkeys(stated) if attribute in eng.PREFERENCES]


async def _record_new(conn: AsyncConnection, rows: list[dict[str, Any]],
                      envelope: Envelope) -> None:
    """Store preference rows and publish them as behaviour, in the consumer's transaction:
    every process's engine then learns them from the bus, as it learns `POST /v1/events`.
    A known customer's answer is recorded once: a poll answer also comes back in their
    profile's next event, and every profile event carries the whole profile."""
    customer_id = rows[0]["customer_id"] if rows else None
    if customer_id:
        known = await store.stated_by(conn, customer_id)
        rows = [r for r in rows if (r["attribute"], r["value"]) not in known]
    if rows:
        await store.add_behaviour(conn, rows)
        await events_out.add(conn, [recorded(row) for row in rows],
                             envelope.get("correlationid"))


async def on_poll_answered(conn: AsyncConnection, envelope: Envelope) -> None:
    """A poll answer's mapped attributes are the shopper's stated preferences (cold start)."""
    data = envelope["data"]
    stated = [(a["attribute"], a["value"]) for a in data["attributes"]]
    await _record_new(conn, preference_rows(data.get("session_id"), data.get("customer_id"),
                                            stated, datetime.fromisoformat(data["answered_at"])),
                      envelope)


def _stated_in_profile(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    stated = [("size", str(size)) for _, size in sorted(data["sizes"].items())]
    for attribute, value in sorted(data["preferences"].items()):
        values = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        stated += [(attribute, str(v)) for v in values]
    return [(a, v) for a, v in stated if v]


async def on_profile_updated(conn: AsyncConnection, envelope: Envelope) -> None:
    """Sizes and preferences stated in a profile become preference answers, each (customer,
    attribute, value) once (a value stated again after another is not recorded again)."""
    data = envelope["data"]
    await _record_new(conn, preference_rows(None, data["customer_id"],
                                            _stated_in_profile(data), utcnow()), envelope)


AVAILABILITY = ConsumerSpec("recs-availability", frozenset({StockChanged.type}),
                            on_stock_changed, finish=save_availabilities)
CATALOGUE = ConsumerSpec("recs-catalogue", PRODUCT_EVENTS, on_product)
POLL_ANSWERS = ConsumerSpec("recs-poll-answers", frozenset({PollAnswered.type}),
                            on_poll_answered, ordered=False,
                            wants=lambda envelope: bool(envelope["data"]["attributes"]))
PROFILES = ConsumerSpec("recs-profiles", frozenset({ProfileUpdated.type}), on_profile_updated)


@dataclass(frozen=True)
class RecsSettings:
    cache_ttl_seconds: float = 60.0
    refit_seconds: float = 600.0
    history_limit: int = 500_000
    artefacts: Path | None = None  # published by `instock recs train`, read at every refit
    fit_budget_seconds: float = eng.FIT_BUDGET_SECONDS  # a refit's search for variants


Assign = Callable[[str], Awaitable[Assignment | None]]


@dataclass
class Served:
    items: list[dict[str, Any]]
    assignment: Assignment | None
    cached: bool


class RecommendationsService:
    def __init__(self, db: Database, cache: GroupedCache, settings: RecsSettings,
                 assign: Assign | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.cache = cache
        self.settings = settings
        self.assign = assign
        self.engine = eng.Engine()
        self._loading: Memo[str, eng.Shopper] = Memo(self._load_shopper, ttl_seconds=0)

    # -- behaviour events ----------------------------------------------------------------

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await store.export_customer(conn, customer_id)

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise_customer(conn, customer_id, pseudonym)

    async def sessions_of(self, customer_id: str) -> list[str]:
        """The anonymous sessions merged into the customer (ids they went by)."""
        async with self.db.read() as conn:
            return await store.sessions_of(conn, customer_id)

    async def record(self, events: Sequence[Mapping[str, Any]],
                     correlation_id: str | None = None) -> list[str]:
        """Store and publish a batch; a session seen with its customer is merged into it.
        An event from the future (beyond our clock's leeway) refuses the whole batch."""
        now = self.clock()
        for i, event in enumerate(events):
            occurred_at = event.get("occurred_at")
            if occurred_at is not None and occurred_at > now + CLOCK_LEEWAY:
                raise ValidationFailed(f"events[{i}].occurred_at", "is in the future")
        rows = []
        for event in events:
            row = {"id": new_id(), "kind": event["kind"], "session_id": event.get("session_id"),
                   "customer_id": event.get("customer_id"), "product_id": event.get("product_id"),
                   "sku": event.get("sku"), "query": event.get("query"),
                   "attribute": event.get("attribute"), "value": event.get("value"),
                   "occurred_at": event.get("occurred_at") or now, "received_at": now}
            if row["session_id"] and not row["customer_id"]:
                row["customer_id"] = self.engine.customer_of(row["session_id"])
            rows.append(row)
        logins = {(r["session_id"], r["customer_id"]) for r in rows
                  if r["session_id"] and r["customer_id"]
                  and self.engine.customer_of(r["session_id"]) != r["customer_id"]}
        merged: list[tuple[str, str]] = []
        async with self.db.write() as conn:
            for session_id, customer_id in sorted(logins):
                if await store.merge_session(conn, session_id, customer_id, now):
                    merged.append((session_id, customer_id))
            await store.add_behaviour(conn, rows)
            published: list[DomainEvent] = [recorded(row) for row in rows]
            published += [SessionMerged(session_id=s, customer_id=c) for s, c in merged]
            await events_out.add(conn, published, correlation_id)
        for session_id, customer_id in merged:
            await self.merged(session_id, customer_id)
        for row in rows:  # this process need not wait for the bus
            await self.learn(row)
        return [row["id"] for row in rows]

    async def learn(self, row: Mapping[str, Any]) -> None:
        subject = eng.subject_of(row.get("customer_id"), row.get("session_id"))
        if self.engine.observe(subject, row):
            await self.cache.drop([subject])

    async def actions_of(self, shoppers: Sequence[str], kinds: Sequence[str],
                         since: datetime) -> list[dict[str, Any]]:
        """Stored behaviour events of those kinds by shoppers with those session or customer
        ids, at or after `since`, oldest first (kind, session_id, customer_id, occurred_at…)."""
        async with self.db.read() as conn:
            return await store.actions_of(conn, shoppers, kinds, since)

    async def item_actions_since(self, kinds: Sequence[str], since: datetime
                                 ) -> AsyncIterator[tuple[str, str, datetime]]:
        """(sku, kind, when) of every stored event of those kinds on a known SKU from `since`:
        what analytics rebuilds its views and add-to-carts from (one snapshot: a stream is a
        cursor, which lives in a transaction)."""
        async with self.db.snapshot() as conn:
            async for action in store.item_actions_since(conn, kinds, since):
                yield action

    async def merged(self, session_id: str, customer_id: str) -> None:
        """A session now belongs to its customer: both shoppers' memories and lists go."""
        self.engine.merge(session_id, customer_id)
        subjects = [eng.subject_of(None, session_id), eng.subject_of(customer_id, None)]
        for subject in subjects:
            self.engine.forget(subject)
        await self.cache.drop(subjects)

    # -- what the bus tells every process ----------------------------------------------

    async def follow(self, bus: Bus) -> None:
        """Learn from the bus for the life of the process (every process hears everything)."""
        await keep_running(lambda: self._follow(bus), "recs_listener")

    async def _follow(self, bus: Bus) -> None:
        async for envelope in bus.listen():
            try:
                await self.hear(envelope)
            except Exception:  # one bad event must not deafen the recommender
                log.exception("recs_event_failed", event_id=envelope.get("id"))
            else:  # how far behind the stream the live model is: the promise is < 1 s
                RECS_FRESHNESS.set(max(0.0, time.time() - event_time(envelope)))

    async def hear(self, envelope: Envelope) -> None:
        kind, data = envelope.get("type"), envelope.get("data") or {}
        if kind == BehaviourRecorded.type:
            await self.learn({**data, "id": data["event_id"]})
        elif kind == SessionMerged.type:
            await self.merged(data["session_id"], data["customer_id"])
        elif kind == StockChanged.type:
            self.engine.set_stock(data["sku"], int(data["sku_version"]),
                                  int(data["totals"]["available"]))
        elif kind in PRODUCT_EVENTS:
            self.engine.add_items([eng.item_of(data)])
        elif kind == OrderPaid.type and data.get("customer_id"):
            subject = eng.subject_of(data["customer_id"], None)
            self.engine.bought(subject, [line["sku"] for line in data["lines"]])
            await self.cache.drop([subject])

    # -- the model's life ----------------------------------------------------------------

    async def run(self, bus: Bus) -> None:
        """Listen, load what the projections hold, fit, and refit now and then."""
        listener = asyncio.create_task(self.follow(bus))
        try:
            await self.load()
            await self.refit()
            last_fit = time.monotonic()
            while True:
                await asyncio.sleep(0.5)
                self.engine.share_catalogue()
                if time.monotonic() - last_fit >= self.settings.refit_seconds:
                    try:
                        await self.refit()
                    except Exception:  # the current model keeps serving
                        log.exception("recs_refit_failed")
                    last_fit = time.monotonic()
        finally:
            listener.cancel()

    async def stock_view(self, skus: set[str]) -> dict[str, tuple[int, int]]:
        """What the in-stock projection holds of these SKUs: sku -> (version, available)."""
        async with self.db.read() as conn:
            return await store.availability(conn, sorted(skus))

    async def load(self) -> None:
        async with self.db.read() as conn:
            items = await store.items(conn)
            stock = await store.availability(conn)
            merges = await store.merges_since(conn, utcnow() - eng.SESSION_MEMORY)
        for session_id, customer_id in merges:
            self.engine.merge(session_id, customer_id)
        self.engine.add_items(eng.item_of(row) for row in items)
        for sku, (version, available) in stock.items():
            self.engine.set_stock(sku, version, available)
        self.engine.share_catalogue()
        keep_out_of_collections()

    async def stored_behaviour(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` behaviour events, oldest first (what `recs train` reads)."""
        async with self.db.read() as conn:
            return await store.recent_behaviour(conn, limit)

    async def refit(self) -> eng.FitReport:
        """Fit on stored history in a thread; the live model serves (and learns) meanwhile."""
        snapshot = self.engine.start_fit()
        async with self.db.read() as conn:
            history = await store.recent_behaviour(conn, self.settings.history_limit)
        trained = None
        if self.settings.artefacts is not None and self.settings.artefacts.exists():
            trained = await asyncio.to_thread(artefacts.load, self.settings.artefacts)
        hybrid, report = await asyncio.to_thread(eng.fit, snapshot, history, trained=trained,
                                                 budget_seconds=self.settings.fit_budget_seconds)
        self.engine.install(hybrid)
        keep_out_of_collections()
        log.info("recs_fitted", events=report.events, seconds=report.seconds,
                 tuned_on=report.tuned_on, weights=report.weights)
        return report

    # -- serving -------------------------------------------------------------------------

    async def recommend(self, customer_id: str | None, session_id: str | None, where: str,
                        limit: int) -> Served:
        if not customer_id and session_id:
            customer_id = self.engine.customer_of(session_id)
        subject = eng.subject_of(customer_id, session_id)
        # experiments hash the shopper's own id (a merged session counts as its customer)
        unit = customer_id or session_id or subject
        assignment = await self.assign(unit) if self.assign else None
        variant = f"{assignment.experiment_id}:{assignment.variant}" if assignment else "-"
        key = f"{where}|{limit}|{variant}"
        cached = self._still_sellable(await self.cache.get(subject, key), limit)
        if cached is not None:
            _CACHE_HIT.inc()
            return Served(cached, assignment, True)
        shopper = self.engine.shopper(subject) or await self._loading.get(subject)
        if shopper.blank:  # a drop brings thousands we know nothing of: they share one list
            shared = await self.cache.get(BLANK_SHOPPERS, key)
            if shared is not None and time.time() - shared["at"] < BLANK_LIST_SECONDS:
                cached = self._still_sellable(shared["items"], limit)
                if cached is not None:
                    _CACHE_HIT.inc()
                    return Served(cached, assignment, True)
        _CACHE_MISS.inc()
        started = time.thread_time()  # this thread's CPU: what ranking costs, not waiting
        picks = self.engine.recommend(shopper, where, OVERFETCH * limit,
                                      assignment.config if assignment else None)
        RECS_BLEND_CPU.inc(time.thread_time() - started)
        items = [self._render(pick) for pick in picks]
        if shopper.blank:
            await self.cache.put(BLANK_SHOPPERS, key, {"at": time.time(), "items": items})
        else:
            await self.cache.put(subject, key, items)
        return Served(items[:limit], assignment, False)

    def _still_sellable(self, cached: list[dict[str, Any]] | None,
                        limit: int) -> list[dict[str, Any]] | None:
        """A cached list without what sold out since; None if too few are left."""
        if cached is None:
            return None
        sellable = [pick for pick in cached if self._sellable(pick)]
        return sellable[:limit] if len(sellable) >= min(limit, len(cached)) else None

    def _sellable(self, pick: Mapping[str, Any]) -> bool:
        sku = pick.get("sku")
        return sku is not None and self.engine.catalogue.available.get(sku, 0) > 0

    def _render(self, pick: eng.Pick) -> dict[str, Any]:
        item = self.engine.catalogue.items[self.engine.catalogue.code[pick.product_id]]
        return {"product_id": pick.product_id, "sku": pick.sku, "title": item.title,
                "brand": item.brand, "category": item.category, "in_your_size": pick.in_size,
                "score": pick.score, "reason": {"code": pick.reason, "text": pick.text}}

    async def _load_shopper(self, subject: str) -> eng.Shopper:
        kind, _, key = subject.partition(":")
        self.engine.begin_loading(subject)  # events heard while we read are kept, not lost
        ids = {"customer_id": key if kind == "c" else None,
               "session_id": key if kind == "s" else None}
        async with self.db.read() as conn:
            # what they told us may be older than their last clicks
            history = await store.history(conn, **ids, limit=eng.HISTORY_PER_SHOPPER,
                                          answers=eng.ANSWERS_PER_SHOPPER)
        return self.engine.remember(subject, history)


def recorded(row: Mapping[str, Any]) -> BehaviourRecorded:
    return BehaviourRecorded(
        event_id=row["id"], kind=row["kind"], session_id=row["session_id"],
        customer_id=row["customer_id"], product_id=row["product_id"], sku=row["sku"],
        query=row["query"], attribute=row["attribute"], value=row["value"],
        occurred_at=row["occurred_at"])
