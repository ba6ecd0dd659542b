"""Drop use cases: schedule a drop (stored and published as `drop.scheduled.v1` in one
transaction), take a place in its waiting room, and read a place's standing (with a pass once
admitted). The gate that reservations of drop SKUs pass through is built here (drops/gate.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter

from instock.catalog.service import CatalogService
from instock.drops import bots, declines, model, store
from instock.drops.capacity import CapacityService
from instock.drops.draws import DrawService
from instock.drops.errors import DropEntryRefused, DropTicketInvalid
from instock.drops.gate import DropGate, Gates
from instock.drops.review import ReviewService
from instock.drops.room import Rooms, RoomSettings, Watcher
from instock.drops.tokens import BadToken, DropTokens
from instock.inventory.service import InventoryService
from instock.platform.bus import Envelope, outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.ids import new_id

BOT_DECISIONS = Counter("instock_drop_entry_decisions_total",
                        "Waiting-room tickets scored by the bot rules, by decision "
                        "(admit, review, refuse)", ["decision"])


@dataclass(frozen=True)
class DropSettings:
    pass_ttl_seconds: float = 120.0  # an admission pass is good for this long
    ticket_ttl_seconds: float = 86_400.0  # a ticket is re-issued (same place) on asking again
    gate_refresh_seconds: float = 1.0  # how stale a process's copy of the drops' SKUs may be
    # Proof of work asked of each shopper taking a ticket (drops/bots.py); 0: none asked.
    proof_bits: int = bots.DEFAULT_DIFFICULTY
    challenge_seconds: float = 300.0  # a challenge must be solved and sent within this
    room: RoomSettings = field(default_factory=RoomSettings)  # the live room (drops/room.py)
    # Capacity drops (drops/capacity.py): their rate may change every this many seconds.
    capacity_seconds: float = 10.0


@dataclass(frozen=True)
class Entry:
    """What a ticket (or entry) request brought and showed, for the bot scoring: the solved
    challenge, the payment method or address fingerprint the storefront vouched for (raw: only
    its keyed hash is kept), and, when the shopper's own client is calling (not a service
    acting for them), its headers (lower-cased names) and address."""

    challenge: str | None = None
    solution: str | None = None
    headers: dict[str, str] | None = None
    client_address: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Ticket:
    token: str  # the signed ticket the shopper shows to ask for their standing
    position: int


@dataclass(frozen=True)
class Admission:
    standing: model.Standing
    admission_pass: str | None  # a pass when admitted, good for `pass_ttl_seconds`
    held_for_review: bool = False  # the bot scoring held it: never admitted until staff say
    verdict: dict[str, Any] | None = None


class DropsService:
    def __init__(self, db: Database, catalog: CatalogService, inventory: InventoryService,
                 tokens: DropTokens, settings: DropSettings | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.catalog = catalog
        self.inventory = inventory
        self.tokens = tokens
        self.settings = settings or DropSettings()
        self.clock = clock
        self.gate = DropGate(self._gates, tokens, self.settings.gate_refresh_seconds, clock)
        self.draws = DrawService(db, inventory, tokens, self.get, self._verdict, clock)
        self.review = ReviewService(db, self.get, self._sold_out, clock)
        self.rooms = Rooms(self._sold_out, self._tickets, self._early_keys, self.settings.room,
                           clock, rates=self._rates)
        # A rate change is written this far ahead of its moment: a room reads the rates every
        # tick, a request reads them with the drop, so all have it before it counts.
        self.capacity = CapacityService(db, self.settings.capacity_seconds,
                                        max(1.0, 2 * self.settings.room.tick_seconds), clock)

    async def schedule(self, drop: model.Drop, correlation_id: str | None = None) -> model.Drop:
        """Store a new drop (its id, seed and creation time are ours) and publish it; 422
        naming the bad field, 409 when a SKU is already in another live drop."""
        now = self.clock()
        drop = replace(drop, id=new_id(), seed=secrets.token_hex(16), created_at=now)
        try:
            model.check_drop(drop)
        except model.InvalidDrop as exc:
            raise ValidationFailed(exc.field, exc.reason) from exc
        unknown = await self.catalog.unknown_skus(set(drop.skus))
        if unknown:
            raise ValidationFailed("skus", f"unknown SKU {', '.join(sorted(unknown))}")
        async with self.db.write() as conn:
            taken = model.overlapping(drop, await store.live_drops(conn, now))
            if taken:
                raise Conflict(f"{', '.join(sorted(taken))} already in a live drop",
                               skus=sorted(taken))
            await store.add_drop(conn, drop)
            await outbox.add(conn, [model.scheduled(drop)], correlation_id)
        return drop

    async def get(self, drop_id: str) -> model.Drop:
        async with self.db.read() as conn:
            drop = await store.get_drop(conn, drop_id)
        if drop is None:
            raise NotFound(f"drop {drop_id} does not exist")
        return drop

    async def live_with(self, sku: str) -> model.Drop | None:
        """The live drop (not ended) that gates this SKU, if any: a SKU is in one at a time."""
        async with self.db.read() as conn:
            live = await store.live_drops(conn, self.clock())
        return next((drop for drop in live if sku in drop.skus), None)

    def challenge(self, drop_id: str, customer_id: str) -> tuple[str, int, datetime]:
        """A proof-of-work challenge for this shopper's ticket: (challenge, difficulty, when
        it expires). Signed, not stored: any process checks it."""
        now = self.clock()
        expires = now + timedelta(seconds=self.settings.challenge_seconds)
        token = self.tokens.challenge(drop_id, customer_id, self.settings.proof_bits, now,
                                      expires - now, secrets.token_urlsafe(12))
        return token, self.settings.proof_bits, expires

    def _proof(self, entry: Entry, drop_id: str, customer_id: str, now: datetime) -> bots.Proof:
        if self.settings.proof_bits == 0:
            return bots.Proof.SOLVED  # none asked
        if entry.challenge is None:
            return bots.Proof.MISSING
        try:
            claims = self.tokens.read_challenge(entry.challenge)
        except BadToken:
            return bots.Proof.INVALID
        return bots.judge(claims, entry.challenge, entry.solution, drop_id=drop_id,
                          customer_id=customer_id, now=now)

    async def _verdict(self, conn: Any, drop: model.Drop, customer_id: str, entry: Entry,
                       client_key: str | None, fingerprint: str | None,
                       now: datetime) -> bots.Verdict:
        """The bot scoring of a ticket or (in a draw drop) an entry: the same rules. The keys
        are the keyed hashes of the client address and of the fingerprint."""
        table = store.drop_entries if drop.mode is model.Mode.DRAW else store.drop_tickets
        asks, client_asks, others, since = await store.asking(conn, drop.id, customer_id,
                                                              client_key, table)
        # Across drops, tickets and entries alike: a farm reuses its cards in every drop.
        sharing = 0 if fingerprint is None else await store.shoppers_on_fingerprint(
            conn, fingerprint, customer_id, now - bots.FINGERPRINT_WINDOW,
            bots.FINGERPRINT_COUNT_CAP - 1)
        # Asks per minute since the shopper's first (a person asks once or twice); a minute
        # at least, so the first few asks are never a rate.
        minutes = max(1.0, (now - since).total_seconds() / 60) if since else 1.0
        return bots.score(bots.Signals(
            self._proof(entry, drop.id, customer_id, now),
            client_requests_per_minute=round((client_asks + 1) / minutes),
            shopper_requests_per_minute=round((asks + 1) / minutes),
            shoppers_on_client=others + 1,
            shoppers_on_fingerprint=sharing + 1,
            failed_payments=await declines.failed_payments(conn, customer_id, now),
            headers=entry.headers or {}))

    async def take_ticket(self, drop_id: str, customer_id: str,
                          entry: Entry | None = None) -> Ticket:
        """A place in the drop's waiting room: by arrival, except that those who came before
        the start are shuffled among themselves (model.place). Asking again gives the same
        place (in a fresh ticket); 409 for a drop without a waiting room or one that ended.

        Each ask is scored (drops/bots.py): a refused one is 403 `drop-entry-refused` with the
        rules it tripped and takes no place; one held for review takes its place but is not
        admitted (its standing says so)."""
        now = self.clock()
        entry = entry or Entry()
        drop = await self.get(drop_id)
        if drop.mode is not model.Mode.QUEUE:
            raise Conflict(f"drop {drop_id} is {drop.mode.value}: it has no waiting room")
        if drop.over(now):
            raise Conflict(f"drop {drop_id} has ended")
        ticket_id = new_id()
        client_key = (self.tokens.client_key(entry.client_address)
                      if entry.client_address else None)
        keyed = self.tokens.fingerprint_key(entry.fingerprint) if entry.fingerprint else None
        async with self.db.write() as conn:
            verdict = await self._verdict(conn, drop, customer_id, entry, client_key, keyed,
                                          now)
            if verdict.decision is bots.Decision.REFUSE:
                BOT_DECISIONS.labels(verdict.decision.value).inc()
                raise DropEntryRefused(drop.id, verdict.as_json())
            held = await store.ticket_of(conn, drop.id, customer_id)
            if held is None:
                await store.add_ticket(conn, drop.id, customer_id, ticket_id,
                                       model.place(drop, ticket_id, now), now,
                                       decision=verdict.decision.value,
                                       verdict=verdict.as_json(), client_key=client_key,
                                       fingerprint=keyed)
                BOT_DECISIONS.labels(verdict.decision.value).inc()
            else:
                await store.asked_again(conn, drop.id, customer_id)
            found = await store.ticket_of(conn, drop.id, customer_id)
            assert found is not None  # ours, or the one that was there
            position = await store.position(conn, drop.id, found[1])
        token = self.tokens.ticket(model.TicketClaims(drop.id, customer_id, found[0]), now)
        return Ticket(token, position)

    async def admission(self, drop_id: str, ticket: str,
                        acts_for: Callable[[str], None]) -> Admission:
        """The ticket's standing now, with a fresh pass if admitted. A forged, expired or
        unknown ticket, or one for another drop, is 422 naming `ticket`; `acts_for` refuses
        a caller who may not act for the ticket's customer."""
        claims = self._claims(drop_id, ticket)
        acts_for(claims.customer_id)
        drop = await self.get(drop_id)
        now = self.clock()
        async with self.db.read() as conn:
            found = await store.ticket_of(conn, drop.id, claims.customer_id)
            if found is None or found[0] != claims.ticket_id:
                raise DropTicketInvalid("the waiting room holds no such ticket")
            position = await store.position(conn, drop.id, found[1])
            decided = await store.decision_of(conn, drop.id, claims.customer_id)
        if decided is not None and decided[0] == bots.Decision.REFUSE.value:
            raise DropEntryRefused(drop.id, decided[1] or {"reasons": []})  # staff refused it
        if decided is not None and decided[0] == bots.Decision.REVIEW.value:
            # Held for review: the place stands (no one behind moves up), no pass until staff
            # decide.
            held = replace(model.standing(drop, position, now, sold_out=False), admitted=False)
            return Admission(held, None, held_for_review=True, verdict=decided[1])
        # Stock is asked only of those the room has reached: the rest wait either way.
        reached = position <= model.admitted_through(drop, now)
        standing = model.standing(drop, position, now, reached and await self._sold_out(drop))
        if not standing.admitted:
            return Admission(standing, None)
        granted = self.tokens.pass_for(drop.id, claims.customer_id, now)
        return Admission(standing, self.tokens.admission_pass(granted, now))

    async def watch(self, drop_id: str, ticket: str) -> Watcher:
        """Watch the ticket's standing live (drops/room.py): its place is read once, here; a
        forged, expired or unknown ticket, or one for another drop, is 422 naming `ticket`.

        The signed ticket alone authorises it (EventSource sends no headers): the stream says
        where the ticket stands, never its pass, which only the authenticated GET gives."""
        claims = self._claims(drop_id, ticket)
        drop = await self.get(drop_id)
        async with self.db.read() as conn:
            held = await store.held_by(conn, drop.id, claims.customer_id)
            if held is None or held.ticket_id != claims.ticket_id:
                raise DropTicketInvalid("the waiting room holds no such ticket")
            position = await store.position(conn, drop.id, held.place)
        return await self.rooms.watch(drop, held.place, position,
                                      held.decision == bots.Decision.REVIEW.value,
                                      held.arrived_at)

    def _claims(self, drop_id: str, ticket: str) -> model.TicketClaims:
        try:
            claims = self.tokens.read_ticket(ticket)
        except BadToken as exc:
            raise DropTicketInvalid(exc.reason) from None
        if claims.drop_id != drop_id:
            raise DropTicketInvalid("the ticket is for another drop")
        return claims

    async def _tickets(self, drop_id: str) -> int:
        async with self.db.read() as conn:
            return await store.tickets(conn, drop_id)

    async def _rates(self, drop: model.Drop) -> model.Drop:
        """The drop with its rate segments as stored now (a room's read, once per tick)."""
        async with self.db.read() as conn:
            return (await store.with_rates(conn, [drop]))[0]

    async def _early_keys(self, drop_id: str) -> list[str]:
        async with self.db.read() as conn:
            return await store.early_keys(conn, drop_id)

    async def _sold_out(self, drop: model.Drop) -> bool:
        """Whether none of the drop's SKUs can be sold any more: admission stops then."""
        views = await self.inventory.stocks(drop.skus, cached=True)
        return all(view.available <= 0 for view in views.values())

    async def _gates(self, _: None) -> Gates:
        async with self.db.read() as conn:
            live = await store.live_drops(conn, self.clock())
        return {sku: model.gate_of(drop) for drop in live for sku in drop.skus}

    def heard(self, envelopes: list[Envelope]) -> None:
        self.gate.heard(envelopes)
        self.rooms.heard(envelopes)

    # -- personal data (the privacy registry calls these) ------------------------------------

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return dict(await store.export_customer(conn, customer_id))

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise(conn, customer_id, pseudonym)
