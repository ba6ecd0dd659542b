"""Inventory in GraphQL: stock as a storefront sees it (and, for staff, in buckets, per
location and lot), the ledger, reservations, and the commands of REST's inventory routes.

Resolvers parse with the REST routes' own models, authorise, call the service, render."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, cast

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.experimental.pydantic import type as from_model
from strawberry.scalars import JSON

from instock.inventory import api
from instock.inventory.events import StockBuckets
from instock.inventory.model import Adjustment, Line, Lot, Reservation, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.service import InventoryService
from instock.inventory.unit_of_work import StockView
from instock.platform.auth import STAFF, Role
from instock.platform.etags import parse_if_match
from instock.platform.graphql import (
    Info,
    PageInfo,
    decode_cursor,
    encode_cursor,
    entry_context,
    parse,
    require,
)

strawberry.enum(ReservationStatus, name="ReservationStatus")


def service(info: Info) -> InventoryService:
    svc: InventoryService = info.context.state.inventory
    return svc


def stock_loader(info: Info, channel: str | None) -> DataLoader[str, StockView | None]:
    """This request's loader of SKUs' stock for a channel: every variant on a page is read in
    one batch per channel."""
    inventory = service(info)

    async def load(skus: Sequence[str]) -> list[StockView | None]:
        found = await inventory.stocks(skus, channel)
        return [found.get(sku) for sku in skus]

    return info.context.loader(f"stock:{channel or ''}", load)


async def stock_of(info: Info, sku: str, channel: str | None) -> StockView | None:
    return await stock_loader(info, channel).load(sku)


async def prefetch_stock(info: Info, skus: Sequence[str],
                         channels: set[str | None]) -> list[StockView | None]:
    """Read these SKUs' stock now, so each variant's `stock` field resolves at once instead of
    awaiting the loader (twenty awaits on a product page cost more than the read); returns
    what was read, channel by channel in name order. Not where loaders remember nothing (a
    WebSocket): there the loader batches them, and nothing is returned."""
    read: list[StockView | None] = []
    if not info.context.remember:
        return read
    for channel in sorted(channels, key=lambda name: name or ""):
        # A page may take a copy kept fresh by the event stream (platform.readcache).
        found = await service(info).stocks(skus, channel, cached=True)
        stock_loader(info, channel).prime_many({sku: found.get(sku) for sku in skus})
        read += [found.get(sku) for sku in skus]
    return read


def stock_ready(info: Info, sku: str, channel: str | None) -> tuple[bool, StockView | None]:
    """(True, the stock) when this request has already read it; (False, None) if not."""
    if not info.context.remember:
        return False, None
    future = stock_loader(info, channel).cache_map.get(sku)
    if future is None or not future.done() or future.exception() is not None:
        return False, None
    return True, future.result()


@strawberry.type
class LotStock:
    location: str
    code: str
    expires_on: date
    on_hand: int
    reserved: int
    committed: int
    unsellable: int
    free: int


def _lots(view: StockView) -> list[LotStock]:
    return [LotStock(location=level.location, code=lot.code, expires_on=lot.expires_on,
                     on_hand=lot.buckets.on_hand, reserved=lot.buckets.reserved,
                     committed=lot.buckets.committed, unsellable=lot.buckets.unsellable,
                     free=lot.buckets.free)
            for level in view.levels for lot in sorted(level.lots.values(), key=_fefo)]


def _fefo(lot: Lot) -> tuple[date, str]:
    return lot.expires_on, lot.code


@strawberry.type(description="What a shopper may know of a SKU's stock.")
class Stock:
    sku: str
    available: int
    sold_out: bool
    low: bool = strawberry.field(description="at or under its low-stock threshold")
    version: int
    view: strawberry.Private[StockView]

    @strawberry.field(description="staff only: the lots it is drawn from, first to expire first")
    def lots(self, info: Info) -> list[LotStock]:
        require(info, *STAFF)
        return _lots(self.view)

    @strawberry.field(description="staff only: buckets per location, as `inventory(sku)`")
    def detail(self, info: Info) -> InventoryItem:
        require(info, *STAFF)
        return render_item(self.view, service(info).clock().date())


def render_stock(view: StockView) -> Stock:
    threshold = view.low_stock_threshold
    return Stock(sku=view.sku, available=view.available, sold_out=view.available == 0,
                 low=threshold is not None and view.available <= threshold,
                 version=view.version, view=view)


@from_model(model=StockBuckets, all_fields=True)
class Buckets:
    pass


@strawberry.type
class LocationStock:
    location: str
    version: int
    buckets: Buckets


@strawberry.type
class BundlePart:
    sku: str
    quantity: int


@strawberry.type(description="A SKU's stock in full (staff).")
class InventoryItem:
    sku: str
    version: int
    available: int
    buckets: Buckets
    per_customer_limit: int | None
    low_stock_threshold: int | None
    components: list[BundlePart]
    locations: list[LocationStock]
    lots: list[LotStock]


def render_item(view: StockView, today: date) -> InventoryItem:
    return InventoryItem(
        sku=view.sku, version=view.version, available=view.available,
        buckets=Buckets(available=view.available, **view.totals.as_dict()),
        per_customer_limit=view.per_customer_limit,
        low_stock_threshold=view.low_stock_threshold,
        components=[BundlePart(sku=s, quantity=q) for s, q in sorted(view.components.items())],
        locations=[LocationStock(location=lv.location, version=lv.version,
                                 buckets=Buckets(available=lv.sellable(today),
                                                 **lv.buckets.as_dict()))
                   for lv in view.levels],
        lots=_lots(view))


@strawberry.type
class LedgerEntry:
    sku: str
    location: str
    version: int
    kind: str
    delta: JSON = strawberry.field(description="the non-zero bucket changes")
    lot: str | None
    actor: str
    reason: str
    correlation_id: str | None
    at: datetime
    hash: str


@strawberry.type
class LedgerEdge:
    cursor: str
    node: LedgerEntry


@strawberry.type
class LedgerConnection:
    edges: list[LedgerEdge]
    page_info: PageInfo


@strawberry.type
class Audit:
    ok: bool
    entries: int
    levels: int
    problems: list[str]


@from_model(model=api.AllocationOut, all_fields=True)
class AllocationOut:
    pass


@from_model(model=api.ReservationLineOut, all_fields=True)
class ReservationLine:
    pass


@from_model(model=api.ReservationOut, all_fields=True, name="Reservation")
class ReservationOut:
    pass


def render_reservation(r: Reservation) -> ReservationOut:
    return ReservationOut.from_pydantic(api.render_reservation(r))


@strawberry.input
class LineInput:
    sku: str
    quantity: int


@strawberry.input
class LotInput:
    code: str
    expires_on: date | None = None


@strawberry.input
class AdjustmentInput:
    sku: str
    location: str
    kind: str
    quantity: int
    reason: str = ""
    lot: LotInput | None = None
    to_location: str | None = None


@strawberry.type
class InventoryQuery:
    @strawberry.field(description="staff: a SKU's buckets, locations and lots")
    async def inventory(self, info: Info, sku: str,
                        channel: str | None = None) -> InventoryItem:
        require(info, *STAFF)
        inventory = service(info)
        return render_item(await inventory.stock(sku, channel), inventory.clock().date())

    @strawberry.field(description="staff: the hash-chained ledger, oldest first")
    async def ledger(self, info: Info, sku: str | None = None, first: int = 50,
                     after: str | None = None) -> LedgerConnection:
        require(info, *STAFF)
        page = parse(api.LedgerPage, {"limit": first})
        after_version = decode_cursor("v", after)
        entries = await service(info).ledger(
            sku, page.limit + 1, None if after_version is None else int(after_version))
        shown = entries[:page.limit]
        edges = [LedgerEdge(cursor=encode_cursor("v", e.version), node=LedgerEntry(
            sku=e.sku, location=e.location, version=e.version, kind=e.kind,
            delta=cast(JSON, {k: v for k, v in e.delta.as_dict().items() if v}), lot=e.lot,
            actor=e.context.actor, reason=e.context.reason,
            correlation_id=e.context.correlation_id, at=e.at, hash=e.hash)) for e in shown]
        return LedgerConnection(edges=edges, page_info=PageInfo(
            has_next_page=len(entries) > page.limit,
            end_cursor=edges[-1].cursor if edges else None))

    @strawberry.field(description="staff: re-fold the whole ledger; it must equal the stock "
                                  "levels, every hash chain unbroken (`instock audit verify`)")
    async def audit(self, info: Info) -> Audit:
        require(info, *STAFF)
        report = await service(info).audit()
        return Audit(ok=report.ok, entries=report.entries, levels=report.levels,
                     problems=report.problems[:100])

    @strawberry.field
    async def reservation(self, info: Info, id: strawberry.ID) -> ReservationOut:
        principal = require(info, *api.RESERVER_ROLES)
        found = await service(info).get_reservation(str(id))
        principal.assert_acts_for(found.customer_id)
        return render_reservation(found)


@strawberry.type
class InventoryMutation:
    @strawberry.mutation(description="hold stock: all lines or none (REST POST /v1/reservations)")
    async def reserve(self, info: Info, lines: list[LineInput], channel: str = "web",
                      customer_id: str | None = None,
                      ttl_seconds: int | None = None,
                      drop_pass: Annotated[str | None, strawberry.argument(description=(
                          "the pass a drop's waiting room gave (REST: the Drop-Pass header): "
                          "required for its SKUs"))] = None) -> ReservationOut:
        principal = require(info, *api.RESERVER_ROLES)
        body = parse(api.ReservationIn, {
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in lines],
            "channel": channel, "customer_id": customer_id, "ttl_seconds": ttl_seconds})
        customer = api.reserving_customer(principal, body.customer_id)
        reservation = await service(info).reserve(
            ReserveRequest([Line(line.sku, line.quantity) for line in body.lines], body.channel,
                           customer, body.ttl_seconds, drop_pass),
            entry_context(info, principal, "reservation"))
        return render_reservation(reservation)

    @strawberry.mutation(description="give a hold back")
    async def release(self, info: Info, id: strawberry.ID) -> ReservationOut:
        principal = require(info, *api.RESERVER_ROLES)
        return render_reservation(await service(info).release(
            str(id), entry_context(info, principal, "release"), api.owner_check(principal)))

    @strawberry.mutation(description="staff: receive, count, damage, transfer… (If-Match: "
                                     "`ifMatch`, the SKU's version)")
    async def adjust_stock(self, info: Info, input: AdjustmentInput,
                           if_match: int | None = None) -> InventoryItem:
        principal = require(info, *api.STOCK_WRITER_ROLES)
        body = parse(api.AdjustmentIn, {
            "sku": input.sku, "location": input.location, "kind": input.kind,
            "quantity": input.quantity, "reason": input.reason, "to_location": input.to_location,
            "lot": None if input.lot is None else {"code": input.lot.code,
                                                   "expires_on": input.lot.expires_on}})
        inventory = service(info)
        view = await inventory.adjust(
            Adjustment(body.sku, body.location, body.kind, body.quantity,
                       body.lot.code if body.lot else None,
                       body.lot.expires_on if body.lot else None, body.to_location),
            entry_context(info, principal, body.reason),
            None if if_match is None else parse_if_match(str(if_match)))
        return render_item(view, inventory.clock().date())

    @strawberry.mutation(description="merchandiser, inventory: per-customer limit, low-stock "
                                     "threshold")
    async def set_policy(self, info: Info, sku: str, per_customer_limit: int | None = None,
                         low_stock_threshold: int | None = None) -> InventoryItem:
        require(info, Role.MERCHANDISER, Role.INVENTORY)
        body = parse(api.PolicyIn, {"per_customer_limit": per_customer_limit,
                                    "low_stock_threshold": low_stock_threshold})
        inventory = service(info)
        view = await inventory.set_policy(sku, body.per_customer_limit, body.low_stock_threshold)
        return render_item(view, inventory.clock().date())
