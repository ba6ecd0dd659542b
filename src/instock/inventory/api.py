"""Inventory HTTP routes: locations, channels, stock, adjustments, reservations, the ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from instock.inventory import model
from instock.inventory.events import StockBuckets
from instock.inventory.model import Adjustment, AdjustmentKind, Line, Reservation
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.service import InventoryService
from instock.inventory.unit_of_work import StockView
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.etags import etag, parse_if_match
from instock.platform.http import CallerId, DropPass, LineIn, entry_context

router = APIRouter(tags=["inventory"],
                   responses=problem_responses(400, 401, 403, 404, 409, 412, 422))

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Quantity = Annotated[int, Field(ge=0, le=1_000_000_000)]

STOCK_READERS = requires(*STAFF)
STOCK_WRITER_ROLES = (Role.INVENTORY, Role.FULFILMENT)
STOCK_WRITERS = requires(*STOCK_WRITER_ROLES)
RESERVER_ROLES = (Role.CUSTOMER, Role.SERVICE, Role.SUPPORT)
RESERVERS = requires(*RESERVER_ROLES)
OwnerCheck = Callable[[Reservation], None]


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> InventoryService:
    svc: InventoryService = request.app.state.inventory
    return svc


# -- locations and channels ------------------------------------------------------------------


class LocationIn(BaseModel):
    id: CallerId
    name: Name
    kind: Literal["warehouse", "store", "marketplace"]


class ChannelIn(BaseModel):
    name: Name
    locations: list[CallerId] = Field(max_length=100)
    min_shelf_life_days: int = Field(default=0, ge=0, le=3650)
    buffer: int = Field(default=0, ge=0, le=1_000_000_000,
                        description="units of its locations' stock held back from the channel")
    cap: int | None = Field(default=None, ge=0, le=1_000_000_000,
                            description="the most it is shown and sold at once; null: no cap")


class ChannelOut(ChannelIn):
    id: str


@router.post("/v1/locations", status_code=201, response_model=LocationIn)
async def create_location(body: LocationIn,
                          principal: Principal = Depends(requires(Role.INVENTORY)),
                          inventory: InventoryService = Depends(service)) -> LocationIn:
    await inventory.create_location(body.id, body.name, body.kind)
    return body


@router.get("/v1/locations", response_model=list[LocationIn])
async def list_locations(principal: Principal = Depends(STOCK_READERS),
                         inventory: InventoryService = Depends(service)) -> list[LocationIn]:
    return [LocationIn.model_validate(row) for row in await inventory.list_locations()]


@router.put("/v1/channels/{channel_id}", response_model=ChannelOut)
async def save_channel(channel_id: CallerId, body: ChannelIn,
                       principal: Principal = Depends(requires(Role.MERCHANDISER)),
                       inventory: InventoryService = Depends(service)) -> ChannelOut:
    channel = await inventory.save_channel(model.Channel(channel_id, body.name,
                                                         body.min_shelf_life_days,
                                                         body.locations, body.buffer, body.cap))
    return ChannelOut(id=channel.id, **body.model_dump())


@router.get("/v1/channels/{channel_id}", response_model=ChannelOut)
async def get_channel(channel_id: str, principal: Principal = Depends(STOCK_READERS),
                      inventory: InventoryService = Depends(service)) -> ChannelOut:
    c = await inventory.channel(channel_id)
    return ChannelOut(id=c.id, name=c.name, locations=c.locations,
                      min_shelf_life_days=c.min_shelf_life_days, buffer=c.buffer, cap=c.cap)


# -- stock -----------------------------------------------------------------------------------


class LotOut(BaseModel):
    code: str
    expires_on: date
    on_hand: int
    reserved: int
    committed: int
    unsellable: int
    free: int


class LevelOut(StockBuckets):
    location: str
    version: int
    lots: list[LotOut]


class StockOut(StockBuckets):
    sku: str
    version: int
    per_customer_limit: int | None
    low_stock_threshold: int | None
    components: dict[str, int] = Field(description="for a bundle: component SKU -> quantity")
    locations: list[LevelOut]


def render_stock(view: StockView, today: date) -> StockOut:
    return StockOut(
        sku=view.sku, available=view.available, **view.totals.as_dict(), version=view.version,
        per_customer_limit=view.per_customer_limit,
        low_stock_threshold=view.low_stock_threshold, components=view.components,
        locations=[LevelOut(location=lv.location, available=lv.sellable(today),
                            version=lv.version, **lv.buckets.as_dict(),
                            lots=[LotOut(code=lot.code, expires_on=lot.expires_on,
                                         free=lot.buckets.free,
                                         on_hand=lot.buckets.on_hand,
                                         reserved=lot.buckets.reserved,
                                         committed=lot.buckets.committed,
                                         unsellable=lot.buckets.unsellable)
                                  for lot in sorted(lv.lots.values(),
                                                    key=lambda x: (x.expires_on, x.code))])
                   for lv in view.levels])


def stock_response(view: StockView, response: Response, inventory: InventoryService) -> StockOut:
    response.headers["ETag"] = etag(view.version)
    return render_stock(view, inventory.clock().date())


@router.get("/v1/inventory/{sku}", response_model=StockOut)
async def get_stock(sku: str, response: Response,
                    channel: str | None = Query(default=None,
                                                description="count only what it may sell"),
                    principal: Principal = Depends(STOCK_READERS),
                    inventory: InventoryService = Depends(service)) -> StockOut:
    return stock_response(await inventory.stock(sku, channel), response, inventory)


class LotIn(BaseModel):
    code: CallerId
    expires_on: date | None = Field(default=None, description="required when the lot is new")


class AdjustmentIn(BaseModel):
    sku: CallerId
    location: CallerId
    kind: AdjustmentKind
    quantity: Quantity
    reason: Annotated[str, StringConstraints(max_length=500)] = ""
    lot: LotIn | None = None
    to_location: CallerId | None = Field(default=None, description="for a transfer")
    expected_on: date | None = Field(
        default=None, description="for an expect: when the incoming units should arrive "
                                  "(analytics warns when stock runs out before)")

    @field_validator("expected_on")
    @classmethod
    def _only_for_expect(cls, value: date | None, info: ValidationInfo) -> date | None:
        if value is not None and info.data.get("kind") is not AdjustmentKind.EXPECT:
            raise ValueError("is only for an expect")
        return value


@router.post("/v1/inventory/adjustments", response_model=StockOut)
async def adjust(body: AdjustmentIn, request: Request, response: Response,
                 if_match: str | None = Header(default=None),
                 principal: Principal = Depends(STOCK_WRITERS),
                 inventory: InventoryService = Depends(service)) -> StockOut:
    adjustment = Adjustment(body.sku, body.location, body.kind, body.quantity,
                            body.lot.code if body.lot else None,
                            body.lot.expires_on if body.lot else None, body.to_location,
                            body.expected_on)
    view = await inventory.adjust(adjustment, entry_context(request, principal, body.reason),
                                  parse_if_match(if_match))
    return stock_response(view, response, inventory)


class PolicyIn(BaseModel):
    per_customer_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    low_stock_threshold: int | None = Field(default=None, ge=0, le=1_000_000_000)


@router.put("/v1/inventory/{sku}/policy", response_model=StockOut)
async def set_policy(sku: str, body: PolicyIn, response: Response,
                     principal: Principal = Depends(requires(Role.MERCHANDISER, Role.INVENTORY)),
                     inventory: InventoryService = Depends(service)) -> StockOut:
    view = await inventory.set_policy(sku, body.per_customer_limit, body.low_stock_threshold)
    return stock_response(view, response, inventory)


# -- reservations ----------------------------------------------------------------------------


class ReservationIn(BaseModel):
    lines: list[LineIn] = Field(min_length=1, max_length=100)
    channel: CallerId = "web"
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    ttl_seconds: int | None = Field(default=None, ge=1)


class ExtendIn(BaseModel):
    ttl_seconds: int | None = Field(default=None, ge=1)


class AllocationOut(BaseModel):
    sku: str
    location: str
    lot: str | None
    quantity: int


class ReservationLineOut(BaseModel):
    sku: str
    quantity: int


class ReservationOut(BaseModel):
    id: str
    status: model.ReservationStatus
    channel: str
    customer_id: str | None
    created_at: datetime
    expires_at: datetime
    lines: list[ReservationLineOut]
    allocations: list[AllocationOut]


def render_reservation(r: Reservation) -> ReservationOut:
    return ReservationOut(
        id=r.id, status=r.status, channel=r.channel, customer_id=r.customer_id,
        created_at=r.created_at, expires_at=r.expires_at,
        lines=[ReservationLineOut(sku=line.sku, quantity=line.quantity) for line in r.lines],
        allocations=[AllocationOut(sku=a.sku, location=a.location, lot=a.lot,
                                   quantity=a.quantity) for a in r.allocations])


def reserving_customer(principal: Principal, customer_id: str | None) -> str | None:
    """Whom a hold is for: a customer holds for itself; staff name the customer (or none)."""
    if principal.is_customer:
        customer_id = customer_id or principal.subject
        principal.assert_acts_for(customer_id)
    return customer_id


@router.post("/v1/reservations", status_code=201, response_model=ReservationOut)
async def reserve(body: ReservationIn, request: Request,
                  principal: Principal = Depends(RESERVERS),
                  inventory: InventoryService = Depends(service),
                  drop_pass: DropPass = None) -> ReservationOut:
    reservation = await inventory.reserve(
        ReserveRequest([Line(line.sku, line.quantity) for line in body.lines], body.channel,
                       reserving_customer(principal, body.customer_id), body.ttl_seconds,
                       drop_pass),
        entry_context(request, principal, "reservation"))
    return render_reservation(reservation)


@router.get("/v1/reservations/{reservation_id}", response_model=ReservationOut)
async def get_reservation(reservation_id: str, principal: Principal = Depends(RESERVERS),
                          inventory: InventoryService = Depends(service)) -> ReservationOut:
    reservation = await inventory.get_reservation(reservation_id)
    principal.assert_acts_for(reservation.customer_id)
    return render_reservation(reservation)


def owner_check(principal: Principal) -> OwnerCheck:
    """Checked under the reservation's locks: a customer touches only its own holds."""
    return lambda r: principal.assert_acts_for(r.customer_id)


@router.post("/v1/reservations/{reservation_id}/commit", response_model=ReservationOut)
async def commit(reservation_id: str, request: Request,
                 principal: Principal = Depends(RESERVERS),
                 inventory: InventoryService = Depends(service)) -> ReservationOut:
    return render_reservation(await inventory.commit(
        reservation_id, entry_context(request, principal, "commit"), owner_check(principal)))


@router.post("/v1/reservations/{reservation_id}/release", response_model=ReservationOut)
async def release(reservation_id: str, request: Request,
                  principal: Principal = Depends(RESERVERS),
                  inventory: InventoryService = Depends(service)) -> ReservationOut:
    return render_reservation(await inventory.release(
        reservation_id, entry_context(request, principal, "release"), owner_check(principal)))


@router.post("/v1/reservations/{reservation_id}/extend", response_model=ReservationOut)
async def extend(reservation_id: str, request: Request, body: ExtendIn | None = None,
                 principal: Principal = Depends(RESERVERS),
                 inventory: InventoryService = Depends(service)) -> ReservationOut:
    ttl = body.ttl_seconds if body else None
    return render_reservation(await inventory.extend(
        reservation_id, ttl, entry_context(request, principal, "extend"), owner_check(principal)))


# -- the ledger ------------------------------------------------------------------------------


class EntryOut(BaseModel):
    sku: str
    location: str
    version: int
    kind: str
    delta: dict[str, int] = Field(description="non-zero bucket changes")
    lot: str | None
    actor: str
    reason: str
    correlation_id: str | None
    idempotency_key: str | None
    reference: str | None
    at: datetime
    prev_hash: str
    hash: str


class LedgerOut(BaseModel):
    entries: list[EntryOut]


class LedgerPage(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)


@router.get("/v1/ledger", response_model=LedgerOut)
async def get_ledger(sku: str | None = None, location: str | None = None,
                     after_version: int | None = Query(default=None, ge=0),
                     limit: int = Query(default=100, ge=1, le=1000),
                     principal: Principal = Depends(STOCK_READERS),
                     inventory: InventoryService = Depends(service)) -> LedgerOut:
    entries = await inventory.ledger(sku, limit, after_version, location)
    return LedgerOut(entries=[EntryOut(
        sku=e.sku, location=e.location, version=e.version, kind=e.kind,
        delta={k: v for k, v in e.delta.as_dict().items() if v}, lot=e.lot,
        actor=e.context.actor, reason=e.context.reason, correlation_id=e.context.correlation_id,
        idempotency_key=e.context.idempotency_key, reference=e.context.reference, at=e.at,
        prev_hash=e.prev_hash, hash=e.hash) for e in entries])
