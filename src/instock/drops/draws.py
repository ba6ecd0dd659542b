"""Draw (raffle) use cases of a drop in `draw` mode: enter while the entry window is open
(scored for bots exactly as a waiting-room ticket is), draw the winners once the window closes
(one stored draw, whoever asks and however often), read an entry's standing (with a pass while
its right is open), publish the draw with its seed, hear inventory's reservations as claims of
rights, and announce the rights that roll over.

Who holds a right at a moment is arithmetic (draw_model.rights) on the stored draw, the claims and
the clock: no process advances a shared cursor, so every process answers the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import bots, model, store
from instock.drops.errors import (
    DropEntriesClosed,
    DropEntryDuplicate,
    DropEntryRefused,
    DropEntryUnknown,
    DropNotDrawn,
)
from instock.drops.events import DropWon
from instock.drops.model import draws as draw_model
from instock.drops.store import draws as draw_store
from instock.drops.tokens import DropTokens
from instock.inventory.service import InventoryService
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.db import Database, utcnow
from instock.platform.ids import new_id

ENTRIES = Counter("instock_drop_draw_entries_total",
                  "Draw entry asks scored by the bot rules, by decision: admit and review "
                  "take an entry, refuse takes none",
                  ["decision"])
WINNERS = Counter("instock_drop_draw_winners_total", "Entrants drawn as winners of a draw")
ROLLOVERS = Counter("instock_drop_draw_rollovers_total",
                    "Rights to reserve that passed to the next entrant, one lapsed unused")
RESERVED = "reservation.created.v1"
_RESERVATIONS = "drops.claims.reservations"  # the consumer transaction's (`gathered`)
AUTO_DRAWER = "worker:draw-at-close"  # who drew, in the stored draw, when no one asked
log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from instock.drops.service import Entry

# (conn, drop, customer, entry, client address key, fingerprint key, now): the service's scoring.
Score = Callable[[AsyncConnection, model.Drop, str, "Entry", str | None, str | None, datetime],
                 Awaitable[bots.Verdict]]


@dataclass(frozen=True)
class Entered:
    entry_id: str
    held_for_review: bool


@dataclass(frozen=True)
class EntryStanding:
    entry_id: str
    status: draw_model.EntryStatus
    rank: int | None  # in the draw's order, once reached by a right
    admission_pass: str | None
    claim_until: datetime | None
    claimed: bool


@dataclass(frozen=True)
class Published:
    drop_id: str
    seed: str
    drawn_at: datetime
    slots: int
    claim_seconds: float
    entries: list[str]
    order: list[str]

    @property
    def winners(self) -> list[str]:
        return self.order[:self.slots]


class DrawService:
    def __init__(self, db: Database, inventory: InventoryService, tokens: DropTokens,
                 get: Callable[[str], Awaitable[model.Drop]], score: Score,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.inventory = inventory
        self.tokens = tokens
        self.get = get
        self.score = score
        self.clock = clock
        # A stored draw never changes: each process keeps the ones it has read.
        self._draws: dict[str, draw_store.DrawRow] = {}

    # -- entering ------------------------------------------------------------------------

    async def enter(self, drop_id: str, customer_id: str, entry: Entry) -> Entered:
        """The customer's entry in the draw (the same one on asking again). Scored as tickets
        are (the shoppers on its fingerprint across drops among the signs): refused is 403
        `drop-entry-refused` and enters nothing; held for review enters, but is left out of
        the draw. A fingerprint another customer entered this draw with is 409
        `drop-entry-duplicate`; a closed window (or a drop that is no draw) 409."""
        now = self.clock()
        drop = await self.get(drop_id)
        if drop.mode is not model.Mode.DRAW or drop.entries_close_at is None:
            raise DropEntriesClosed(drop.id, f"a {drop.mode.value} drop takes no entries")
        if now >= drop.entries_close_at:
            raise DropEntriesClosed(
                drop.id, f"entries closed at {drop.entries_close_at.isoformat()}")
        client_key = (self.tokens.client_key(entry.client_address)
                      if entry.client_address else None)
        keyed = self.tokens.fingerprint_key(entry.fingerprint) if entry.fingerprint else None
        async with self.db.write() as conn:
            verdict = await self.score(conn, drop, customer_id, entry, client_key, keyed, now)
            if verdict.decision is bots.Decision.REFUSE:
                ENTRIES.labels(verdict.decision.value).inc()
                raise DropEntryRefused(drop.id, verdict.as_json())
            held = await draw_store.entry_of(conn, drop.id, customer_id)
            if held is not None:
                await store.asked_again(conn, drop.id, customer_id, store.drop_entries)
                return Entered(held.entry_id, held.decision == bots.Decision.REVIEW.value)
            if keyed is not None and await draw_store.fingerprint_taken(conn, drop.id, keyed):
                raise DropEntryDuplicate(drop.id)
            entry_id = new_id()
            if not await draw_store.add_entry(conn, drop.id, customer_id, entry_id, now,
                                         fingerprint=keyed, decision=verdict.decision.value,
                                         verdict=verdict.as_json(), client_key=client_key):
                # A concurrent ask of this customer entered first (theirs stands), or another
                # customer's took the fingerprint.
                found = await draw_store.entry_of(conn, drop.id, customer_id)
                if found is None:
                    raise DropEntryDuplicate(drop.id)
                return Entered(found.entry_id, found.decision == bots.Decision.REVIEW.value)
        ENTRIES.labels(verdict.decision.value).inc()
        return Entered(entry_id, verdict.decision is bots.Decision.REVIEW)

    # -- the draw ------------------------------------------------------------------------

    async def draw(self, drop_id: str, drawn_by: str, correlation_id: str | None = None
                   ) -> Published:
        """Draw the winners, once: asking again (or two processes at once) gives the one stored
        draw. 409 before the entry window closes. The seed is made here and published only
        with the stored draw; winners are as many as the drop names, or as units available."""
        drop = await self.get(drop_id)
        now = self.clock()
        if drop.mode is not model.Mode.DRAW or drop.entries_close_at is None:
            raise DropNotDrawn(drop.id, f"a {drop.mode.value} drop has no draw")
        if now < drop.entries_close_at:
            raise DropNotDrawn(drop.id, "entries are open until "
                                        f"{drop.entries_close_at.isoformat()}: draw after")
        stored = await self._stored(drop.id)
        if stored is not None:
            return self._published(drop, stored)
        slots = drop.draw_winners or await self._units(drop)
        seed = secrets.token_hex(32)
        async with self.db.write() as conn:
            entries = await draw_store.eligible_entries(conn, drop.id)
            row = draw_store.DrawRow(drop.id, seed, now, drawn_by, slots, entries,
                                draw_model.draw_order(seed, entries))
            if await draw_store.add_draw(conn, row):
                rights = draw_model.rights(row.order, slots, draw_model.claim_opens(drop, now),
                                      timedelta(seconds=drop.claim_seconds), {}, now)
                events = await self._announce(conn, drop, rights, slots, now)
            else:  # drawn by another at the same moment: theirs stands
                found = await draw_store.get_draw(conn, drop.id)
                assert found is not None
                row, events = found, []
            await outbox.add(conn, events, correlation_id)
        WINNERS.inc(len(events))
        self._draws[drop.id] = row
        return self._published(drop, row)

    async def draw_closed(self) -> list[str]:
        """Draw every live draw drop whose entries have closed and that has no draw yet (the
        workers, every few seconds: "at close, winners are drawn" without staff asking); the
        ids drawn. `draw` itself makes two processes doing this at once one stored draw. A
        drop that fails to draw is logged and tried again next time; the others go on."""
        async with self.db.read() as conn:
            due = await draw_store.closed_undrawn_drops(conn, self.clock())
        drawn = []
        for drop in due:
            try:
                await self.draw(drop.id, AUTO_DRAWER)
            except Exception:
                log.exception("drop_auto_draw_failed", drop_id=drop.id)
                continue
            drawn.append(drop.id)
        return drawn

    async def _units(self, drop: model.Drop) -> int:
        views = await self.inventory.stocks(drop.skus)
        return sum(max(0, view.available) for view in views.values())

    async def published(self, drop_id: str) -> Published:
        """The stored draw with its seed; 409 `drop-not-drawn` before it is made."""
        drop = await self.get(drop_id)
        stored = await self._stored(drop.id)
        if stored is None:
            raise DropNotDrawn(drop.id, "not drawn yet: the seed is published with the draw")
        return self._published(drop, stored)

    def _published(self, drop: model.Drop, row: draw_store.DrawRow) -> Published:
        return Published(drop.id, row.seed, row.drawn_at, row.slots, drop.claim_seconds,
                         row.entries, row.order)

    async def _stored(self, drop_id: str) -> draw_store.DrawRow | None:
        if drop_id in self._draws:
            return self._draws[drop_id]
        async with self.db.read() as conn:
            row = await draw_store.get_draw(conn, drop_id)
        if row is not None:
            self._draws[drop_id] = row
        return row

    # -- standing --------------------------------------------------------------------------

    async def standing(self, drop_id: str, entry_id: str,
                       acts_for: Callable[[str], None]) -> EntryStanding:
        """Where the entry stands now, with a pass (the Drop-Pass header of a reservation)
        while its right is open. An unknown entry is 404 `drop-entry-unknown`; `acts_for`
        refuses a caller who may not act for the entry's customer."""
        drop = await self.get(drop_id)
        async with self.db.read() as conn:
            entry = await draw_store.get_entry(conn, drop.id, entry_id)
            if entry is None:
                raise DropEntryUnknown(drop.id)
            acts_for(entry.customer_id)
            claims = await draw_store.claims(conn, drop.id)
        now = self.clock()
        if entry.decision != bots.Decision.ADMIT.value:  # held, or refused on review
            status = (draw_model.EntryStatus.HELD if entry.decision == bots.Decision.REVIEW.value
                      else draw_model.EntryStatus.REFUSED)
            return EntryStanding(entry.entry_id, status, None, None, None, False)
        stored = await self._stored(drop.id)
        rights = None if stored is None else self._rights(drop, stored, claims, now)
        status = draw_model.entry_status(entry.entry_id, rights, now)
        right = None if rights is None else rights.granted.get(entry.entry_id)
        if right is None:
            return EntryStanding(entry.entry_id, status, None, None, None, False)
        open_now = now < right.until and not drop.over(now)
        granted = (self.tokens.admission_pass(
            model.PassClaims(drop.id, entry.customer_id, right.until), now)
            if open_now else None)
        return EntryStanding(entry.entry_id, status, right.rank, granted, right.until,
                             right.claimed)

    def _rights(self, drop: model.Drop, row: draw_store.DrawRow, claims: dict[str, datetime],
                now: datetime) -> draw_model.Rights:
        return draw_model.rights(row.order, row.slots, draw_model.claim_opens(drop, row.drawn_at),
                            timedelta(seconds=drop.claim_seconds), claims, now)

    # -- rollovers ---------------------------------------------------------------------------

    async def announce(self, drop_id: str | None = None) -> int:
        """Tell each entrant a right has rolled over to (drop.won.v1, once each): for one drop,
        or every drawn live drop. How many were told. Run by the workers every few seconds;
        a right holds whether or not it has been announced."""
        now = self.clock()
        if drop_id is None:
            async with self.db.read() as conn:
                ids = [drop.id for drop in await draw_store.drawn_live_drops(conn, now)]
        else:
            ids = [drop_id]
        told = 0
        for one in ids:
            drop = await self.get(one)
            stored = await self._stored(drop.id)
            if stored is None or drop.over(now):
                continue
            async with self.db.write() as conn:
                rights = self._rights(drop, stored, await draw_store.claims(conn, drop.id), now)
                events = await self._announce(conn, drop, rights, stored.slots, now)
                await outbox.add(conn, events, None)
            ROLLOVERS.inc(len(events))
            told += len(events)
        return told

    async def _announce(self, conn: AsyncConnection, drop: model.Drop, rights: draw_model.Rights,
                        slots: int, now: datetime) -> list[DropWon]:
        """drop.won.v1 for each open right not announced yet (marked in this transaction)."""
        opened = [r for r in rights.granted.values() if not r.claimed and now < r.until]
        customers = await draw_store.customers_of(conn, [r.entry_id for r in opened])
        events = []
        for right in opened:
            if await draw_store.mark_won(conn, right.entry_id, now):
                events.append(DropWon(
                    drop_id=drop.id, entry_id=right.entry_id,
                    customer_id=customers[right.entry_id], rank=right.rank,
                    rolled_over=right.rank > slots, skus=list(drop.skus),
                    claim_until=right.until))
        return events

    # -- claims, heard from inventory ----------------------------------------------------------

    def claims_consumer(self) -> ConsumerSpec:
        # Unordered: each reservation is news of its own (a subject is one reservation).
        # The transaction's events are gathered by the handler and claimed by `finish`, with
        # one read of the drawn drops for all of them (not one an event).
        return ConsumerSpec("drops-claims", frozenset({RESERVED}), self.on_reservation,
                            ordered=False,
                            wants=lambda e: bool((e.get("data") or {}).get("customer_id")),
                            finish=self.write_claims)

    async def on_reservation(self, conn: AsyncConnection, envelope: Envelope) -> None:
        if (envelope.get("data") or {}).get("customer_id"):
            heard: list[Envelope] = gathered(_RESERVATIONS, list)
            heard.append(envelope)

    async def write_claims(self, conn: AsyncConnection) -> None:
        """A reservation by an entrant of a drawn drop, of that drop's SKUs, claims their
        right, at the moment inventory wrote it (the envelope's time), whenever we hear it;
        the transaction's reservations in the order they came."""
        heard: list[Envelope] = gathered(_RESERVATIONS, list)
        if not heard:
            return
        events = [(envelope, datetime.fromisoformat(str(envelope["time"]))) for envelope in heard]
        heard.clear()
        # The few drawn drops not over at the earliest of these moments first, each event's
        # own moment then, then the entry by its unique key: never a scan of the entries by
        # customer for each of inventory's reservations.
        drops = await draw_store.drawn_live_drops(conn, min(at for _, at in events))
        if not drops:
            return
        for envelope, at in events:
            data = envelope["data"]
            customer = str(data["customer_id"])
            skus = {str(line["sku"]) for line in data.get("lines", [])}
            for drop in drops:
                if (not drop.over(at) and skus & set(drop.skus)
                        and await draw_store.entry_of(conn, drop.id, customer) is not None):
                    await draw_store.add_claim(conn, drop.id, customer, at,
                                               str(data["reservation_id"]))
