"""The unit of work of one stock command (`StockTx`) and what it answers (`StockView`).

The service opens a write transaction, locks the SKUs and loads their levels into a `StockTx`;
the command moves stock through it; `flush` then writes levels (compare-and-swap on the version
they were read at), ledger entries and outbox events in that same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.inventory import model
from instock.inventory.model import (
    LedgerEntry,
    Movement,
    Reservation,
    ReservationStatus,
    StockLevel,
)
from instock.inventory.store import together
from instock.platform.bus import outbox
from instock.platform.bus.envelope import DomainEvent
from instock.platform.entry_context import EntryContext


@dataclass
class StockTx:
    """The unit of work of one stock command: locked items, their levels, what changed."""

    conn: AsyncConnection
    items: dict[str, model.Item]
    levels: dict[tuple[str, str], StockLevel]
    now: datetime
    versions_before: dict[tuple[str, str], int] = field(default_factory=dict)
    # Each SKU's total availability as read, before any movement: alerts compare against it.
    available_before: dict[str, int] = field(default_factory=dict)
    touched: dict[tuple[str, str], StockLevel] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    # Each event with the correlation id of the request that caused it (a batch has many).
    events: list[outbox.Outgoing] = field(default_factory=list)
    sku_versions: dict[str, int] = field(default_factory=dict)  # after flush
    # The bundles made of the SKUs this transaction changes (their item rows are locked with
    # them; their other components' levels are loaded too, protected by those locks): a kit
    # whose count moves gets its version bumped and its events here, in the same commit.
    kits: model.Recipes = field(default_factory=dict)
    # Per SKU, the request that changed it when a batch of requests shares the transaction
    # (`flush`'s correlation id speaks for every other SKU): its stock events carry that
    # request's correlation id and trace.
    origins: dict[str, EntryContext] = field(default_factory=dict)
    # Reservations the command opened (each with its idempotency scope), written at flush.
    created: list[tuple[Reservation, str | None]] = field(default_factory=list)
    # Reservations the command moved on, each with the status it was read in (its
    # compare-and-swap), written at flush.
    moved: list[tuple[Reservation, ReservationStatus]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.versions_before = {key: level.version for key, level in self.levels.items()}
        self.available_before = {sku: model.sku_sellable(self.sku_levels(sku), self.today)
                                 for sku in {sku for sku, _ in self.levels}}

    @property
    def today(self) -> date:
        return self.now.date()

    def level(self, sku: str, location: str) -> StockLevel:
        key = (sku, location)
        if key not in self.levels:
            self.levels[key] = StockLevel(sku, location)
            self.versions_before[key] = 0
        return self.levels[key]

    def levels_in(self, sku: str, locations: list[str]) -> list[StockLevel]:
        return [self.levels[(sku, loc)] for loc in locations if (sku, loc) in self.levels]

    def sku_levels(self, sku: str) -> list[StockLevel]:
        """Every level of the SKU: the transaction loaded all of them under the SKU's lock."""
        return [level for (s, _), level in sorted(self.levels.items()) if s == sku]

    def move(self, movements: list[Movement], ctx: EntryContext) -> None:
        for movement in movements:
            level = self.level(movement.sku, movement.location)
            level.apply(movement)
            self.entries.append(LedgerEntry.record(level, movement, ctx, self.now))
            self.touched[(level.sku, level.location)] = level

    async def flush(self, correlation_id: str | None) -> None:
        """Write what the command did: one statement on PostgreSQL (store.together)."""
        levels = list(self.touched.values())
        changed = {level.sku for level in levels}
        kits = self._kits_moved(changed)
        # Every SKU whose levels changed and every kit whose count moved gets a new version.
        # Their item rows are locked by this transaction, so each becomes its locked version
        # + 1, known before the write: the events carry it, and the write checks it.
        self.sku_versions = {sku: self._locked(sku).version + 1
                             for sku in sorted(changed | kits.keys())}
        physical = {sku: self.sku_versions[sku] for sku in changed}
        events = outbox.rows_of([
            *(self._origin(sku, event, correlation_id)
              for sku, event in self._stock_events(physical)),
            *((event, correlation_id, None) for event in self._kit_events(kits)),
            *self.events])
        await together.write(self.conn, together.StockWrites(
            levels, self.versions_before, self.entries, self.sku_versions, events, self.created,
            self.moved, self.now))
        if events:
            outbox.announce(self.conn, events)

    def _locked(self, sku: str) -> model.Item:
        item = self.items.get(sku)
        if item is None:  # a writer changed a SKU it did not lock: a bug, never a race
            raise RuntimeError(f"{sku} changed without its item row locked")
        return item

    def _origin(self, sku: str, event: DomainEvent, correlation_id: str | None
                ) -> outbox.Outgoing:
        ctx = self.origins.get(sku)
        if ctx is None:
            return event, correlation_id, None
        return event, ctx.correlation_id, ctx.traceparent

    def sold_out_states(self) -> dict[str, tuple[int, bool]]:
        """Each stocked SKU's version and whether nothing of it is left to sell, as committed."""
        states = {}
        for sku, item in self.items.items():
            own = self.sku_levels(sku)
            if own:  # a bundle has no levels of its own: its components speak for it
                states[sku] = (self.sku_versions.get(sku, item.version),
                               model.sku_sellable(own, self.today) == 0)
        return states

    def emit(self, events: list[model.Event], correlation_id: str | None,
             traceparent: str | None = None) -> None:
        self.events.extend((event, correlation_id, traceparent) for event in events)

    def view(self, sku: str) -> StockView:
        """The SKU as this transaction left it (no re-read: the answer is the state it wrote,
        even if another write has already followed)."""
        own = self.sku_levels(sku)
        item = self.items[sku]
        available = model.available_to_sell(sku, {}, {sku: own}, self.today)
        return stock_view(sku, self.sku_versions.get(sku, item.version), available, own, {},
                          item)

    def _stock_events(self, sku_versions: dict[str, int]) -> list[tuple[str, DomainEvent]]:
        """Per touched SKU: one stock_changed per touched level, then the SKU's alerts.

        The totals come from the levels this transaction holds (all of the SKU's levels,
        loaded under its lock), so they cost no extra query.
        """
        events: list[tuple[str, DomainEvent]] = []
        for sku, version in sorted(sku_versions.items()):
            totals = model.stock_totals(self.sku_levels(sku), self.today)
            events += [(sku, model.stock_changed(level, self._reason(level), version, totals))
                       for level in self.touched.values() if level.sku == sku]
            events += [(sku, alert) for alert in model.sku_alerts(
                sku, version, self.available_before.get(sku, 0), totals.available,
                self.items[sku].low_stock_threshold)]
        return events

    def _kits_moved(self, changed: set[str]) -> dict[str, tuple[int, int]]:
        if not self.kits or not changed:
            return {}
        components = {c for recipe in self.kits.values() for c in recipe}
        after = {c: model.sku_sellable(self.sku_levels(c), self.today) for c in components}
        return model.bundles_moved(self.kits, self.available_before, after, changed)

    def _kit_events(self, kits: dict[str, tuple[int, int]]) -> list[DomainEvent]:
        """Per kit whose count moved: its stock_changed, then its alerts, at its new version."""
        events: list[DomainEvent] = []
        for kit, (before, after) in sorted(kits.items()):
            version = self.sku_versions[kit]
            kinds = [e.kind for e in self.entries if e.sku in self.kits[kit]]
            events.append(model.bundle_changed(kit, version, after,
                                               kinds[-1] if kinds else "change"))
            item = self.items.get(kit)
            events += model.sku_alerts(kit, version, before, after,
                                       item.low_stock_threshold if item else None)
        return events

    def _reason(self, level: StockLevel) -> str:
        kinds = [e.kind for e in self.entries if (e.sku, e.location) == (level.sku, level.location)]
        return kinds[-1] if kinds else "change"


@dataclass(frozen=True)
class StockView:
    sku: str
    version: int
    available: int
    totals: model.Buckets
    levels: list[StockLevel]
    components: dict[str, int]
    per_customer_limit: int | None
    low_stock_threshold: int | None


def stock_view(sku: str, version: int, available: int, own: list[StockLevel],
               components: dict[str, int], item: model.Item | None) -> StockView:
    return StockView(sku, version, available, model.total_buckets(own), own, components,
                     item.per_customer_limit if item else None,
                     item.low_stock_threshold if item else None)
