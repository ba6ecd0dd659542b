"""The group commit of reservations, the path a drop's hot SKUs take.

`InventoryService.reserve` turns a `ReserveRequest` into a validated `Hold` and queues it on the
one reservations lane; the holds that arrive while a batch is in flight, on whatever SKUs, form
the next batch. A batch is decided first against the sold-out flags (`refused_by_flags`: one look
for the whole batch), then, for what they do not settle, in one stock transaction in arrival order
(`ReserveBatch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from instock.inventory import model, store
from instock.inventory.errors import translated
from instock.inventory.model import Line, Reservation
from instock.inventory.unit_of_work import StockTx
from instock.platform.db import Database
from instock.platform.entry_context import EntryContext
from instock.platform.flags import VersionedFlags
from instock.platform.ids import new_id


@dataclass(frozen=True)
class ReserveRequest:
    lines: list[Line]
    channel: str = "web"
    customer_id: str | None = None
    ttl_seconds: int | None = None
    drop_pass: str | None = None  # the pass a drop's waiting room gave (port.ReservationGate)


@dataclass(frozen=True)
class Hold:
    """One reservation request, validated, waiting for its batch."""

    request: ReserveRequest
    lines: list[Line]
    recipes: model.Recipes
    channel: model.Channel
    ttl: timedelta
    ctx: EntryContext
    skus: frozenset[str]  # its lines' SKUs and their components: what its batch locks
    # Per-customer limits a drop sets on its SKUs (the gate's answer), beside the SKUs' own.
    drop_limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def scope(self) -> str | None:
        return self.ctx.idempotency_scope()

    def limit_of(self, sku: str, items: dict[str, model.Item]) -> int | None:
        """The tighter of the SKU's own per-customer limit and its drop's (None: neither)."""
        limits = [n for n in (items[sku].per_customer_limit, self.drop_limits.get(sku))
                  if n is not None]
        return min(limits) if limits else None

    def limited(self, items: dict[str, model.Item]) -> list[Line]:
        """The lines a per-customer limit applies to (none for an anonymous buyer)."""
        if self.request.customer_id is None:
            return []
        return [line for line in self.lines if self.limit_of(line.sku, items) is not None]


class ReserveBatch:
    """Decides a batch of holds in arrival order inside one stock transaction.

    Each decision sees the stock, the customer holdings and the idempotency keys left by every
    earlier one, exactly as if the requests had run one after the other.
    """

    def __init__(self, tx: StockTx, holds: Sequence[Hold]) -> None:
        self.tx = tx
        self.holds = holds
        self.created: list[tuple[Reservation, str | None]] = []
        self.by_scope: dict[str, Reservation] = {}
        self.held: dict[tuple[str, str], int] = {}
        # Shortages found per (channel, lines), valid until the next hold is made (holds only
        # take stock): once a drop is sold out, the rest of its batch is refused at a glance.
        self.refused: dict[tuple[str, tuple[Line, ...]], list[model.Shortage]] = {}

    async def load(self) -> None:
        """What earlier transactions decided: keys already used, units customers hold."""
        conn, now = self.tx.conn, self.tx.now
        scopes = {scope for hold in self.holds if (scope := hold.scope) is not None}
        for scope, reservation_id in (await store.reservation_ids_for(conn, scopes)).items():
            found = await store.get_reservation(conn, reservation_id)
            assert found is not None
            self.by_scope[scope] = found
        limited = {(customer, line.sku) for hold in self.holds
                   if (customer := hold.request.customer_id) is not None
                   for line in hold.limited(self.tx.items)}
        if limited:
            self.held = await store.held_by_customers(conn, limited, now)

    def decide(self, hold: Hold) -> Reservation | Exception:
        scope = hold.scope
        if scope is not None and scope in self.by_scope:
            return self.by_scope[scope]  # the same request again: its first outcome, nothing new
        try:
            reservation = self._reserve(hold)
        except (model.StockShortfall, model.LimitExceeded) as exc:
            return translated(exc)  # this caller's answer; the batch goes on
        self.created.append((reservation, scope))
        if scope is not None:
            self.by_scope[scope] = reservation
        return reservation

    def _reserve(self, hold: Hold) -> Reservation:
        """Stock first, then the customer's limit: a request that fails both is told the SKU
        is short, the answer the sold-out flags give without the database."""
        tx, customer = self.tx, hold.request.customer_id
        signature = (hold.channel.id, tuple(hold.lines))
        if (short := self.refused.get(signature)) is not None:
            raise model.StockShortfall(short)
        levels = {sku: tx.levels_in(sku, hold.channel.locations)
                  for sku in {*(line.sku for line in hold.lines),
                              *model.explode(hold.lines, hold.recipes)}}
        try:
            # The channel's buffer and cap first: a marketplace is never sold more than its
            # ATS, decided under the same SKU locks as the stock itself.
            model.check_channel_rules(hold.lines, hold.recipes, levels, tx.today,
                                      hold.channel.min_shelf_life_days, hold.channel.rules)
            allocations = model.allocate(hold.lines, hold.recipes, levels, tx.today,
                                         hold.channel.min_shelf_life_days)
        except model.StockShortfall as exc:
            self.refused[signature] = exc.shortages
            raise
        limited = hold.limited(tx.items)
        for line in limited:
            model.check_customer_limit(line.sku, hold.limit_of(line.sku, tx.items),
                                       self.held.get((customer or "", line.sku), 0),
                                       line.quantity)
        self.refused.clear()
        reservation = Reservation.open(new_id(), hold.channel.id, customer, hold.lines,
                                       allocations, tx.now, hold.ttl)
        tx.move(reservation.movements(model.delta(reserved=1)),
                replace(hold.ctx, reference=reservation.id))
        tx.emit(reservation.events, hold.ctx.correlation_id, hold.ctx.traceparent)
        for line in limited:
            key = (customer or "", line.sku)
            self.held[key] = self.held.get(key, 0) + line.quantity
        return reservation


async def refused_by_flags(sold_out: VersionedFlags, db: Database, skus: frozenset[str],
                           holds: Sequence[Hold]) -> list[Reservation | Exception | None]:
    """Per hold: refused without the database when a line needs a SKU flagged as having
    nothing left anywhere (see `sold_out_ttl_seconds` for how fresh flags are), else None.

    A retried request (same idempotency key) still gets the reservation it made before.
    """
    gone = await sold_out.raised(skus)
    if not gone:
        return [None] * len(holds)
    outcomes: list[Reservation | Exception | None] = []
    for hold in holds:
        short = [model.Shortage(line.sku, line.quantity, 0) for line in hold.lines
                 if gone & model.components(line.sku, hold.recipes).keys()]
        outcomes.append(translated(model.StockShortfall(short)) if short else None)
    retried: dict[str, list[int]] = {}  # one key may come several times in a batch
    for i, hold in enumerate(holds):
        if outcomes[i] is not None and (scope := hold.scope) is not None:
            retried.setdefault(scope, []).append(i)
    if retried:
        async with db.read() as conn:
            for scope, reservation_id in (
                    await store.reservation_ids_for(conn, retried)).items():
                earlier = await store.get_reservation(conn, reservation_id)
                for i in retried[scope]:
                    outcomes[i] = earlier
    return outcomes
