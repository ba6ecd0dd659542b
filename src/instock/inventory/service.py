"""Inventory use cases: one method per command, each one transaction, each emitting its events.

Every write locks the SKUs it touches (sorted, so two writers never deadlock), reads their levels,
lets the pure model decide, then writes levels (compare-and-swap on version), ledger entries and
outbox events together. Lost races are retried with jittered backoff, then answered with 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from instock.catalog.service import CatalogService
from instock.inventory import adjustment_batch, drift, model, store, transition_batch
from instock.inventory.adjustment_batch import Adjusting
from instock.inventory.errors import (
    InsufficientStockConflict,
    InvalidTransition,
    domain_errors,
)
from instock.inventory.events import SKU_EVENTS, ChannelChanged, DemandRefused, PolicyChanged
from instock.inventory.model import (
    Adjustment,
    AdjustmentKind,
    LedgerEntry,
    Movement,
    Reservation,
    StockLevel,
)
from instock.inventory.port import ReservationGate
from instock.inventory.reservation_batch import Hold, ReserveBatch, ReserveRequest, refused_by_flags
from instock.inventory.transition_batch import Transition
from instock.inventory.unit_of_work import StockTx, StockView, stock_view
from instock.platform import held
from instock.platform.batching import GroupCommit
from instock.platform.bus import Envelope, outbox
from instock.platform.db import Database, utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import (
    AlreadyExists,
    NotFound,
    ValidationFailed,
    VersionConflict,
)
from instock.platform.flags import LocalFlags, VersionedFlags
from instock.platform.keyed_locks import KeyedLocks
from instock.platform.memo import Memo
from instock.platform.readcache import VersionedCache
from instock.platform.retry import retry
from instock.platform.telemetry import OVERSOLD_UNITS, RESERVATIONS, VERSION_CONFLICTS

T = TypeVar("T")

# Resolved once: `labels()` takes a lock and a lookup, on every reservation of a drop.
_CONFIRMED = RESERVATIONS.labels("confirmed")
# How stale a channel's locations may be in a process that did not change them.
CHANNEL_CACHE_SECONDS = 1.0
RESERVATIONS_LANE = "reservations"


@dataclass(frozen=True)
class AuditReport:
    entries: int
    levels: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class InventoryService:
    def __init__(self, db: Database, catalog: CatalogService, *, default_ttl_seconds: int,
                 max_ttl_seconds: int, conflict_retries: int,
                 batch_max: int = 2000, sold_out: VersionedFlags | None = None,
                 read_cache_seconds: float = 0.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.catalog = catalog
        self.default_ttl = default_ttl_seconds
        self.max_ttl = max_ttl_seconds
        self.conflict_retries = conflict_retries
        self.clock = clock
        # Drops' say on who may reserve their SKUs (set by the composition root; None: none).
        self.gate: ReservationGate | None = None
        # Per SKU: nothing left to sell at that version. Refuses a drop's late buyers without
        # the database; written after every stock transaction commits.
        self.sold_out = sold_out or LocalFlags(ttl_seconds=1.0)
        self._channels = Memo(self._load_channel, CHANNEL_CACHE_SECONDS)
        # Stock views per SKU and channel for pages that may read a copy (`stocks(cached=)`).
        self._views: VersionedCache[StockView] = VersionedCache(read_cache_seconds)
        self._sku_locks = KeyedLocks()
        self._known_locations: set[str] = set()
        # References of shelf-life notices this process saw recorded: not looked up again.
        self._noticed: set[str] = set()
        self.stock_transactions = 0  # reservation batches that reached the database
        # Demand this process refused for want of stock, published every few seconds.
        self.refusals = model.Refusals(clock())
        # One lane for every SKU: reservations that arrive together share a transaction
        # whichever SKUs they hold, in arrival order (a drop's hot SKU and the rest alike).
        self._lanes = GroupCommit[str, Hold, Reservation](
            self._reserve_batch, batch_max, name="reservations")
        self._transitions = GroupCommit[str, Transition, Reservation](
            self._transition_batch, batch_max, name="transitions", claims=Transition.claims)
        self._adjustments = GroupCommit[str, Adjusting, StockView](
            self._adjust_batch, batch_max, name="adjustments", claims=Adjusting.claims)

    # -- the write path shared by every stock command ---------------------------------------------

    async def _write(self, skus: set[str], work: Callable[[StockTx], Awaitable[T]],
                     correlation_id: str | None) -> T:
        # The kits made of these SKUs move with them: their rows are locked too (in the same
        # sorted order, so no deadlock), which makes every writer of any component of a kit
        # wait for the others. That is what lets the transaction read the kit's other
        # components without locking them (no one can change them while it holds the kit),
        # and keeps the kit's version, bumped here when its count moves, in commit order.
        kits = await self.catalog.kits_containing(skus)
        locked = skus | kits.keys()
        read = locked | {c for recipe in kits.values() for c in recipe}

        async def attempt() -> tuple[T, StockTx]:
            async with self._sku_locks.hold(locked), self.db.write() as conn:
                items = await store.lock_items(conn, locked)
                tx = StockTx(conn, items, await store.load_levels(conn, read), self.clock(),
                             kits=kits)
                with domain_errors():
                    result = await work(tx)
                await tx.flush(correlation_id)
                return result, tx

        result, tx = await retry(attempt, retry_on=(VersionConflict,),
                                 attempts=self.conflict_retries,
                                 on_retry=lambda _: VERSION_CONFLICTS.inc())
        # After the commit, never before: a flag must not announce stock that could roll back.
        await self.sold_out.record(tx.sold_out_states())
        return result

    def lane_stats(self) -> dict[str, int]:
        """How the group commit has batched reservations in this process."""
        stats, adjusting = self._lanes.stats, self._adjustments.stats
        moving = self._transitions.stats
        return {"batches": stats.batches, "requests": stats.requests,
                "largest_batch": stats.largest, "batch_retries": stats.split,
                "stock_transactions": self.stock_transactions,
                "adjustment_batches": adjusting.batches,
                "adjustment_requests": adjusting.requests,
                "adjustment_batch_retries": adjusting.split,
                "transition_batches": moving.batches, "transition_requests": moving.requests,
                "transition_batch_retries": moving.split}

    # -- locations and channels -------------------------------------------------------------------

    async def create_location(self, id: str, name: str, kind: str) -> dict[str, object]:
        async with self.db.write() as conn:
            if not await store.insert_location(conn, id, name, kind, self.clock()):
                raise AlreadyExists(f"location {id} already exists")
        self._channels.forget()  # the new location joined the web channel
        return {"id": id, "name": name, "kind": kind}

    async def list_locations(self) -> list[dict[str, object]]:
        async with self.db.read() as conn:
            return await store.list_locations(conn)

    async def save_channel(self, channel: model.Channel) -> model.Channel:
        async with self.db.write() as conn:
            unknown = set(channel.locations) - await store.existing_locations(
                conn, channel.locations)
            if unknown:
                raise ValidationFailed("locations", f"unknown locations: {sorted(unknown)}")
            if len(set(channel.locations)) != len(channel.locations):
                raise ValidationFailed("locations", "a location may appear only once")
            if channel.buffer < 0:
                raise ValidationFailed("buffer", "must be 0 or more")
            if channel.cap is not None and channel.cap < 0:
                raise ValidationFailed("cap", "must be 0 or more (or absent: no cap)")
            await store.save_channel(conn, channel)
            # Its ATS may have changed for every SKU it sells: channel connectors re-push.
            await outbox.add(conn, [ChannelChanged(
                channel=channel.id, locations=channel.locations, buffer=channel.buffer,
                cap=channel.cap, min_shelf_life_days=channel.min_shelf_life_days)])
        self._channels.forget(channel.id)
        return channel

    async def channel_ats(self, channel_id: str,
                          skus: set[str]) -> dict[str, tuple[int, int]]:
        """Per SKU: what the channel may sell now (its buffer and cap applied) and the SKU's
        version it was read at. The channel is read fresh, not from the cache: a connector
        must not tell a marketplace what a rule changed a moment ago no longer allows. Unknown
        SKUs and bundles count 0 (marketplaces are told physical SKUs)."""
        channel = await self._load_channel(channel_id)
        today = self.clock().date()
        async with self.db.read() as conn:
            levels = await store.load_levels(conn, skus)
            items = await store.get_items(conn, skus)
        found: dict[str, tuple[int, int]] = {}
        for sku in skus:
            own = [levels[(sku, loc)] for loc in channel.locations if (sku, loc) in levels]
            ats = channel.rules.ats(model.sku_sellable(own, today, channel.min_shelf_life_days))
            found[sku] = (ats, items[sku].version if sku in items else 0)
        return found

    async def skus_stocked_at(self, locations: list[str]) -> set[str]:
        """Every SKU with a stock level at any of the locations (what a channel could list)."""
        async with self.db.read() as conn:
            return await store.skus_at(conn, locations)

    async def channel(self, channel_id: str) -> model.Channel:
        """The channel, from a cache at most CHANNEL_CACHE_SECONDS old (changes made through
        this process are seen at once; other processes see them within that window)."""
        return await self._channels.get(channel_id)

    async def _load_channel(self, channel_id: str) -> model.Channel:
        async with self.db.read() as conn:
            found = await store.get_channel(conn, channel_id)
        if found is None:
            raise NotFound(f"channel {channel_id} does not exist")
        return found

    # -- stock ------------------------------------------------------------------------------------

    async def _require_stocked_skus(self, skus: set[str],
                                    field_name: str) -> dict[str, dict[str, int]]:
        """Refuse unknown SKUs; the recipes of those that are bundles."""
        unknown, recipes = await self.catalog.lookup(skus)
        if unknown:
            raise ValidationFailed(field_name, f"unknown SKU: {', '.join(sorted(unknown))}")
        return recipes

    async def _unknown_locations(self, wanted: set[str]) -> set[str]:
        """Locations are never deleted, so one seen to exist is remembered for good."""
        missing = wanted - self._known_locations
        if missing:
            async with self.db.read() as conn:
                self._known_locations |= await store.existing_locations(conn, missing)
        return wanted - self._known_locations

    async def adjust(self, adj: Adjustment, ctx: EntryContext,
                     expected_version: int | None = None) -> StockView:
        """Apply one adjustment. With `ctx.reference` set it happens at most once per SKU and
        reference (checked under the SKU's lock): a process that resumes a half-done job, such
        as a return, can simply do it again.

        It joins the group commit of adjustments (`adjustment_batch`), unless the request holds
        its writes to store its answer with them (an Idempotency-Key): that needs a transaction
        of its own."""
        await self._validate_adjustment(adj)
        if held.writing() is not None:
            async def work(tx: StockTx) -> StockTx:
                await adjustment_batch.apply(tx, adj, ctx, expected_version)
                return tx

            tx = await self._write({adj.sku}, work, ctx.correlation_id)
            return tx.view(adj.sku)
        kits = await self.catalog.kits_containing({adj.sku})
        request = Adjusting(adj, ctx, expected_version, frozenset({adj.sku, *kits}))
        return await self._adjustments.submit(adjustment_batch.LANE, request)

    async def _adjust_batch(self, _: str, batch: Sequence[Adjusting]
                            ) -> list[StockView | Exception]:
        async def work(tx: StockTx) -> tuple[list[str | Exception], StockTx]:
            return await adjustment_batch.decide(tx, batch), tx

        skus = {request.adjustment.sku for request in batch}
        decided, tx = await self._write(skus, work, None)
        return [tx.view(outcome) if isinstance(outcome, str) else outcome for outcome in decided]

    async def _validate_adjustment(self, adj: Adjustment) -> None:
        await self._require_stocked_skus({adj.sku}, "sku")
        if await self.catalog.recipes([adj.sku]):
            raise ValidationFailed("sku", "a bundle is virtual: adjust its components")
        wanted = {adj.location} | ({adj.to_location} if adj.to_location else set())
        unknown = await self._unknown_locations(wanted)
        if unknown:
            raise ValidationFailed("location", f"unknown location: {', '.join(sorted(unknown))}")
        if adj.kind is AdjustmentKind.TRANSFER and adj.to_location in (None, adj.location):
            raise ValidationFailed("to_location", "a transfer needs another location to go to")
        if adj.kind is not AdjustmentKind.TRANSFER and adj.to_location is not None:
            raise ValidationFailed("to_location", "only a transfer has a destination")
        if adj.kind in (AdjustmentKind.SAFETY_STOCK, AdjustmentKind.EXPECT) and adj.lot:
            raise ValidationFailed("lot", f"{adj.kind.value} is kept per stock level, not per lot")
        if adj.lot_expires_on is not None and adj.kind is not AdjustmentKind.RECEIVE:
            raise ValidationFailed("lot.expires_on", "only a receipt creates a lot")

    async def set_policy(self, sku: str, per_customer_limit: int | None,
                         low_stock_threshold: int | None) -> StockView:
        await self._require_stocked_skus({sku}, "sku")
        async with self.db.write() as conn:
            await store.lock_items(conn, {sku})
            version = await store.set_policy(conn, sku, per_customer_limit, low_stock_threshold)
            # The policy is part of the SKU's state (its ETag moves): published like any other
            # change, so the SKU's sequence has no gap a consumer could wait on.
            await outbox.add(conn, [PolicyChanged(
                sku=sku, sku_version=version, per_customer_limit=per_customer_limit,
                low_stock_threshold=low_stock_threshold)])
        return await self.stock(sku)

    async def stock(self, sku: str, channel_id: str | None = None) -> StockView:
        """The SKU's buckets everywhere; `available` is what the channel (or, without one,
        any location) can still sell."""
        found = await self.stocks([sku], channel_id)
        if sku not in found:
            raise NotFound(f"SKU {sku} does not exist")
        return found[sku]

    async def stocks(self, skus: Iterable[str], channel_id: str | None = None, *,
                     cached: bool = False) -> dict[str, StockView]:
        """`stock` of many SKUs in two reads however many there are (a storefront's page);
        SKUs that do not exist are left out. `cached`: a copy kept fresh by the event stream
        will do (see `platform.readcache`), as for a page a shopper looks at."""
        if not cached:
            return await self._read_stocks(skus, channel_id)
        views: dict[str, StockView] = {}
        missing = []
        for sku in skus:
            view = self._views.get(sku, channel_id)
            if view is None:
                missing.append(sku)
            else:
                views[sku] = view
        if missing:
            read = await self._read_stocks(missing, channel_id)
            for sku, view in read.items():
                self._views.put(sku, view, view.version, channel_id)
            views.update(read)
        return views

    def heard(self, envelopes: Iterable[Envelope]) -> None:
        """Events committed here or heard from the bus: stock copies they made old go."""
        for envelope in envelopes:
            kind = envelope.get("type")
            if kind in SKU_EVENTS and envelope.get("sequence") is not None:
                self._views.heard(str(envelope.get("subject")), int(envelope["sequence"]))
            elif kind == ChannelChanged.type:
                self._views.clear()

    async def _read_stocks(self, skus: Iterable[str],
                           channel_id: str | None) -> dict[str, StockView]:
        asked = set(skus)
        unknown, recipes = await self.catalog.lookup(asked)
        wanted = asked - unknown
        if not wanted:
            return {}
        channel = await self.channel(channel_id) if channel_id else None
        every = wanted.union(*recipes.values())
        async with self.db.read() as conn:
            # The versions first: each read sees what is committed when it runs, so a write
            # between the two makes a version older than the levels, never newer. A live
            # client seeded from this view then takes that write's event (a newer version)
            # instead of dropping it as already seen.
            items = await store.get_items(conn, every)
            levels = await store.load_levels(conn, every)
        by_sku: dict[str, list[StockLevel]] = {}
        for level in levels.values():
            by_sku.setdefault(level.sku, []).append(level)
        today = self.clock().date()
        views: dict[str, StockView] = {}
        for sku in wanted:
            components = recipes.get(sku, {})
            sellable_from = {s: [lv for lv in by_sku.get(s, ()) if (
                channel is None or lv.location in channel.locations)] for s in {sku, *components}}
            available = model.channel_available_to_sell(
                sku, recipes, sellable_from, today,
                channel.min_shelf_life_days if channel else 0,
                channel.rules if channel else model.NO_RULES)
            item = items.get(sku)
            own = sorted(by_sku.get(sku, ()), key=lambda lv: lv.location)
            views[sku] = stock_view(sku, item.version if item else 0, available, own,
                                    components, item)
        return views

    # -- reservations -----------------------------------------------------------------------------

    def _ttl(self, ttl_seconds: int | None) -> timedelta:
        seconds = self.default_ttl if ttl_seconds is None else ttl_seconds
        if not 1 <= seconds <= self.max_ttl:
            raise ValidationFailed("ttl_seconds", f"must be between 1 and {self.max_ttl}")
        return timedelta(seconds=seconds)

    async def reserve(self, request: ReserveRequest, ctx: EntryContext) -> Reservation:
        """Hold stock for the lines, all or nothing.

        The request joins the group commit of the SKUs it touches: requests that arrive while a
        batch is in flight are decided together, in arrival order, in one transaction.
        """
        ttl = self._ttl(request.ttl_seconds)
        lines = model.merge_lines(request.lines)
        line_skus = {line.sku for line in lines}
        recipes = await self._require_stocked_skus(line_skus, "lines.sku")
        components = model.explode(lines, recipes)
        skus = frozenset(line_skus | set(components))
        # A kit made of a drop's SKUs is gated as they are.
        limits = ({} if self.gate is None else
                  await self.gate.admit(skus, request.customer_id, request.drop_pass))
        hold = Hold(request, lines, recipes, await self.channel(request.channel), ttl, ctx, skus,
                    limits)
        try:
            reservation = await self._lanes.submit(RESERVATIONS_LANE, hold)
        except InsufficientStockConflict as refused:
            for short in refused.extensions["short"]:
                self.refusals.add(short["sku"], short["requested"])
            raise
        _CONFIRMED.inc()
        return reservation

    async def sample_oversold(self) -> int:
        """Units held beyond on hand anywhere, now; kept in the instock_oversold_units gauge."""
        async with self.db.read() as conn:
            units = await store.oversold_units(conn)
        OVERSOLD_UNITS.set(units)
        return units

    async def publish_refusals(self) -> int:
        """Publish what this process refused for want of stock since the last time, one
        `inventory.demand_refused.v1` per SKU: the SKUs published."""
        since, taken = self.refusals.take(utcnow())
        if not taken:
            return 0
        until = self.refusals.since
        async with self.db.write() as conn:
            await outbox.add(conn, [DemandRefused(sku=sku, units=units, requests=requests,
                                                  since=since, until=until)
                                    for sku, (units, requests) in sorted(taken.items())])
        return len(taken)

    async def _reserve_batch(self, _: str, holds: Sequence[Hold]
                             ) -> list[Reservation | Exception]:
        """Decide a batch: first against the sold-out flags (one look for the whole batch),
        then what they do not settle in one stock transaction."""
        skus = frozenset().union(*(hold.skus for hold in holds))
        outcomes: list[Reservation | Exception | None] = list(
            await refused_by_flags(self.sold_out, self.db, skus, holds))
        pending = [hold for hold, outcome in zip(holds, outcomes, strict=True) if outcome is None]
        if pending:
            async def work(tx: StockTx) -> list[Reservation | Exception]:
                batch = ReserveBatch(tx, pending)
                await batch.load()
                decided = [batch.decide(hold) for hold in pending]
                tx.created.extend(batch.created)
                return decided

            self.stock_transactions += 1
            decided = iter(await self._write(set(skus), work, None))
            outcomes = [next(decided) if outcome is None else outcome for outcome in outcomes]
        return [outcome for outcome in outcomes if outcome is not None]

    async def get_reservation(self, reservation_id: str) -> Reservation:
        async with self.db.read() as conn:
            found = await store.get_reservation(conn, reservation_id)
        if found is None:
            raise NotFound(f"reservation {reservation_id} does not exist")
        return found

    async def _transition(self, reservation_id: str, ctx: EntryContext,
                          change: transition_batch.Change,
                          check: transition_batch.Check | None = None) -> Reservation:
        """Through the transitions' group commit, unless the request holds its writes to store
        its answer with them (an Idempotency-Key): that needs a transaction of its own."""
        transition = Transition(reservation_id, ctx, change, check)
        if held.writing() is None:
            return await self._transitions.submit(transition_batch.LANE, transition)
        async with self.db.read() as conn:
            skus = await store.reservation_skus(conn, reservation_id)
        if not skus:
            raise transition_batch.missing(reservation_id)

        async def work(tx: StockTx) -> Reservation:
            reservation = await store.get_reservation(tx.conn, reservation_id)
            assert reservation is not None
            transition_batch.apply(tx, reservation, transition)
            return reservation

        return await self._write(skus, work, ctx.correlation_id)

    async def _transition_batch(self, _: str, batch: Sequence[Transition]
                                ) -> list[Reservation | Exception]:
        async with self.db.read() as conn:
            skus = await store.skus_of_reservations(conn, (t.reservation_id for t in batch))
        wanted = set().union(*skus.values())
        if not wanted:  # none of them exists
            return [transition_batch.missing(t.reservation_id) for t in batch]

        async def work(tx: StockTx) -> list[Reservation | Exception]:
            return await transition_batch.decide(tx, batch)  # answers the missing ones too

        return await self._write(wanted, work, None)

    async def commit(self, reservation_id: str, ctx: EntryContext,
                     check: Callable[[Reservation], None] | None = None) -> Reservation:
        return await self._transition(reservation_id, ctx, lambda r, now: r.commit(now), check)

    async def release(self, reservation_id: str, ctx: EntryContext,
                      check: Callable[[Reservation], None] | None = None) -> Reservation:
        return await self._transition(reservation_id, ctx, lambda r, now: r.release(), check)

    async def ship(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        return await self._transition(reservation_id, ctx, lambda r, now: r.ship())

    async def cancel(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        """Give a committed hold's units back (its order was cancelled before shipping)."""
        return await self._transition(reservation_id, ctx, lambda r, now: r.cancel())

    async def extend(self, reservation_id: str, ttl_seconds: int | None, ctx: EntryContext,
                     check: Callable[[Reservation], None] | None = None) -> Reservation:
        ttl = self._ttl(ttl_seconds)

        def change(r: Reservation, now: datetime) -> list[Movement]:
            r.extend(ttl, now)
            return []

        return await self._transition(reservation_id, ctx, change, check)

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return {"reservations": await store.export_customer(conn, customer_id)}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise_customer(conn, customer_id, pseudonym)

    # -- the sweeper ------------------------------------------------------------------------------

    async def sweep(self, batch: int = 200) -> dict[str, int]:
        """Expire overdue holds and expired lots. Safe with many sweepers: each expiry is a
        conditional state change in the same transaction as its stock release."""
        ctx = EntryContext(actor="sweeper", reason="expired")
        expired = 0
        async with self.db.read() as conn:
            due = await store.expired_reservation_ids(conn, self.clock(), batch)
        for reservation_id in due:
            try:
                await self._transition(reservation_id, ctx, lambda r, now: r.expire(now))
                expired += 1
            except InvalidTransition:
                pass  # another sweeper (or a commit) got there first
        # After the holds: units they released from expired lots must be caught too.
        async with self.db.read() as conn:
            lot_skus = await store.skus_with_expired_lots(conn, self.clock().date())
        for sku in lot_skus:
            await self._write({sku}, partial(self._expire_lots, sku), None)
        return {"reservations_expired": expired, "skus_with_expired_lots": len(lot_skus),
                "shelf_life_notices": await self._notice_shelf_life()}

    async def _expire_lots(self, sku: str, tx: StockTx) -> None:
        ctx = EntryContext(actor="sweeper", reason="lot expired")
        levels = tx.sku_levels(sku)
        # The lots left sellable stock at midnight, with no write to say so: compare with what
        # the SKU (and its kits) offered while they were in date, so this write raises the
        # sold-out or low-stock alert the expiry implies, not only the stock_changed.
        tx.available_before[sku] = model.sellable_before_expiry(levels, tx.today)
        for level in levels:
            tx.move(model.expire_lots(level, tx.today), ctx)

    async def _notice_shelf_life(self) -> int:
        """Record each lot that became too short-dated for a channel today, once.

        Nothing moves when that happens, yet what the channel may sell drops: an entry of no
        quantity tells it (its stock_changed makes live clients re-read and channel connectors
        re-push). Reads first, and remembers what it found recorded, so a sweep that has
        nothing new to say (nearly all of them) writes nothing and scans no ledger again.
        """
        today = self.clock().date()
        async with self.db.read() as conn:
            channels = await store.shelf_life_channels(conn)
            if not channels:
                return 0
            longest = max(channel.min_shelf_life_days for channel in channels)
            lots = await store.lots_expiring(
                conn, today, today + timedelta(days=longest),
                {location for channel in channels for location in channel.locations})
        by_sku: dict[str, list[model.ShelfLifeNotice]] = {}
        for notice in model.shelf_life_notices(lots, channels, today):
            if notice.reference not in self._noticed:
                by_sku.setdefault(notice.sku, []).append(notice)
        noticed = 0
        for sku, new in by_sku.items():
            noticed += await self._write(
                {sku}, partial(self._record_notices, sku, new, channels), None)
            # Committed (or found recorded, or no longer due): no second look.
            self._noticed.update(notice.reference for notice in new)
        return noticed

    async def _record_notices(self, sku: str, notices: list[model.ShelfLifeNotice],
                              channels: list[model.Channel], tx: StockTx) -> int:
        recorded = await store.references_of(tx.conn, sku, [n.reference for n in notices])
        # Decided again under the SKU's lock: another sweeper may have recorded them, or a
        # reservation taken the lot's last free units.
        due = {n.reference for n in model.shelf_life_notices(
            model.lots_of(tx.sku_levels(sku)), channels, tx.today)}
        count = 0
        for notice in notices:
            if notice.reference in due and notice.reference not in recorded:
                tx.move([notice.movement()], EntryContext(actor="sweeper", reason=notice.reason,
                                                          reference=notice.reference))
                count += 1
        return count

    # -- the ledger -------------------------------------------------------------------------------

    async def ledger(self, sku: str | None, limit: int, after_version: int | None = None,
                     location: str | None = None) -> list[LedgerEntry]:
        async with self.db.read() as conn:
            return await store.ledger_entries(conn, sku, limit, after_version, location)

    async def ledger_after(self, skus: Iterable[str], after: dict[tuple[str, str], int]
                           ) -> tuple[list[LedgerEntry], dict[str, str]]:
        """The SKUs' entries after each level's version in `after` (all of a level not in it),
        in fold order, and the channel of each reservation they reference: what analytics
        folds into its facts."""
        async with self.db.read() as conn:
            entries = await store.ledger_after(conn, skus, after)
            channels = await store.channels_of(
                conn, {e.context.reference for e in entries if e.context.reference})
        return entries, channels

    async def receipts_expected(self, skus: Iterable[str]) -> dict[tuple[str, str], date]:
        """When each level's incoming units should arrive, where an `expect` said."""
        async with self.db.read() as conn:
            return await store.receipts_expected(conn, skus)

    # -- reconciliation: checked from checkpoints, repaired by reason-coded entries ------------

    async def check(self, skus: set[str], checkpoints: dict[drift.Key, dict[str, Any]]
                    ) -> drift.Checked:
        """The SKUs' levels against their ledgers (folded from `checkpoints`) and their holds
        against the reservations, read from one snapshot."""
        whole = {key for key, state in checkpoints.items() if drift.from_start(state)}
        after = {key: int(state["version"]) for key, state in checkpoints.items()
                 if key[0] in skus and key not in whole}
        async with self.db.snapshot() as conn:
            stored = await store.load_levels(conn, skus)
            entries = await store.ledger_after(conn, skus, after)
            held = await store.holds(conn, skus)
        known = {key: state for key, state in checkpoints.items() if key[0] in skus}
        return drift.check(stored, known, entries, held, whole)

    async def reservations_holding(self, *, skus: set[str] | None = None,
                                   ids: set[str] | None = None, statuses: Sequence[str] = (),
                                   since: datetime | None = None, whenever: Sequence[str] = ()
                                   ) -> dict[str, tuple[str, store.Allocations]]:
        """Reservations on these SKUs or with these ids (status, allocations), in `statuses`
        and changed since `since` unless in a status of `whenever`: for the reconciler's
        comparison with orders."""
        async with self.db.read() as conn:
            return await store.reservations_holding(
                conn, skus=skus or (), ids=ids or (), statuses=statuses, since=since,
                whenever=whenever)

    async def stocked_skus_after(self, after: str | None, limit: int) -> list[str]:
        async with self.db.read() as conn:
            return await store.skus_after(conn, after, limit)

    async def repair(self, kind: str, sku: str, location: str, ctx: EntryContext) -> StockView:
        """Set the level to its ledger's fold and record one `reconcile` entry moving both to
        what the drift's kind says is right (drift.repair_target): never a silent overwrite."""
        async def work(tx: StockTx) -> StockTx:
            level = tx.level(sku, location)
            history = await store.ledger_entries(tx.conn, sku, location=location)
            folded = model.fold(history)[0].get((sku, location)) or model.StockLevel(sku, location)
            holds = (await store.holds(tx.conn, [sku])).get((sku, location), (0, 0))
            target = drift.repair_target(kind, level, folded, holds)
            level.buckets, level.lots = folded.buckets, dict(folded.lots)
            tx.move([model.Movement(sku, location, target - folded.buckets, "reconcile")], ctx)
            return tx

        tx = await self._write({sku}, work, ctx.correlation_id)
        return tx.view(sku)

    async def audit(self) -> AuditReport:
        folder = model.LedgerFold()
        async with self.db.snapshot() as conn:
            async for entry in store.stream_ledger(conn):
                folder.add(entry)
            stored = await store.all_levels(conn)
        problems = folder.problems + model.compare_levels(folder.levels, stored)
        return AuditReport(folder.entries, len(stored), problems)

