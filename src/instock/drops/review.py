"""The staff side of drops: the live drops with their rooms' figures (the ops console's panel),
and review of the asks the bot scoring held (drops/bots.py): list them with the scoring's
reasons, and decide each one, admit or refuse. A waiting-room ticket or a draw entry alike; the
decision and who made it are stored beside the scoring's verdict, so every decision can be
explained afterwards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from instock.drops import bots, model, store
from instock.platform.db import Database
from instock.platform.errors import Conflict, NotFound

REVIEWS = Counter("instock_drop_reviews_total",
                  "Held drop asks (tickets and draw entries) staff decided, by decision",
                  ["decision"])


@dataclass(frozen=True)
class HeldAsk:
    kind: str  # "ticket" (waiting room) or "entry" (draw)
    id: str
    customer_id: str
    arrived_at: datetime
    decision: str
    verdict: dict[str, Any] | None


@dataclass(frozen=True)
class LiveDrop:
    drop: model.Drop
    figures: model.RoomFigures
    sold_out: bool


class ReviewService:
    def __init__(self, db: Database, get: Callable[[str], Awaitable[model.Drop]],
                 sold_out: Callable[[model.Drop], Awaitable[bool]],
                 clock: Callable[[], datetime]) -> None:
        self.db = db
        self.get = get
        self.sold_out = sold_out
        self.clock = clock

    async def live(self) -> list[LiveDrop]:
        """Every drop not ended, soonest first, with its room's figures now."""
        now = self.clock()
        async with self.db.read() as conn:
            live = sorted(await store.live_drops(conn, now, rates=True), key=lambda d: d.starts_at)
            counts = [await store.decisions(conn, drop.id, _asks(drop)[1]) for drop in live]
        return [LiveDrop(drop, model.room_figures(drop, by_decision, now),
                         await self.sold_out(drop))
                for drop, by_decision in zip(live, counts, strict=True)]

    async def held(self, drop_id: str) -> list[HeldAsk]:
        """The drop's asks waiting for staff, oldest first."""
        drop = await self.get(drop_id)
        kind, table = _asks(drop)
        async with self.db.read() as conn:
            rows = await store.held(conn, drop.id, table)
        return [_held(kind, row) for row in rows]

    async def decide(self, drop_id: str, customer_id: str, decision: bots.Decision,
                     by: str) -> HeldAsk:
        """Admit or refuse the customer's held ask: 404 if they made none in this drop, 409
        if it was not held (or another member of staff decided it first)."""
        drop = await self.get(drop_id)
        kind, table = _asks(drop)
        async with self.db.write() as conn:
            row = await store.ask_of(conn, drop.id, customer_id, table)
            if row is None:
                raise NotFound(f"{customer_id} has no {kind} in drop {drop.id}")
            try:
                decided = bots.review(bots.Decision(row.decision), decision)
            except bots.NotHeld as exc:
                raise Conflict(str(exc), errors=[{"field": "decision",
                                                  "reason": str(exc)}]) from None
            verdict = bots.reviewed(row.verdict, decided, by, self.clock())
            if not await store.decide(conn, drop.id, customer_id, table, decided.value,
                                      verdict):
                raise Conflict("another review decided it first",
                               errors=[{"field": "decision", "reason": "decided already"}])
        REVIEWS.labels(decided.value).inc()
        return HeldAsk(kind, row.id, customer_id, row.arrived_at, decided.value, verdict)


def _asks(drop: model.Drop) -> tuple[str, Any]:
    return (("entry", store.drop_entries) if drop.mode is model.Mode.DRAW
            else ("ticket", store.drop_tickets))


def _held(kind: str, row: store.HeldRow) -> HeldAsk:
    return HeldAsk(kind, row.id, row.customer_id, row.arrived_at, row.decision, row.verdict)
