"""Inventory over gRPC (proto/instock/rpc/inventory.proto): the servicer a process that runs
inventory serves, and `RemoteInventory`, what a process without it calls instead (it satisfies
`inventory.port.Inventory`, as the in-process service does).

Messages are translated here and nowhere else; the errors and the call policy (deadline,
retries only when safe, breaker) are the platform's (`instock.platform.rpc`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import grpc

from instock.inventory.model import (
    Adjustment,
    AdjustmentKind,
    Allocation,
    Channel,
    Line,
    Reservation,
    ReservationStatus,
)
from instock.inventory.reservation_batch import ReserveRequest
from instock.inventory.service import InventoryService
from instock.platform.entry_context import EntryContext
from instock.platform.errors import ValidationFailed
from instock.platform.principal import Principal
from instock.platform.rpc import CallPolicy, Remote, answered
from instock.platform.tokens import TokenAuthority
from instock.rpc import inventory_pb2 as pb
from instock.rpc import inventory_pb2_grpc as pb_grpc

SERVICE_NAME = "instock.inventory.v1.Inventory"


# -- messages <-> the model ----------------------------------------------------------------------


def context_message(ctx: EntryContext) -> pb.EntryContext:
    return pb.EntryContext(actor=ctx.actor, reason=ctx.reason,
                           correlation_id=ctx.correlation_id,
                           idempotency_key=ctx.idempotency_key, reference=ctx.reference,
                           traceparent=ctx.traceparent)


def entry_context(message: pb.EntryContext, caller: Principal) -> EntryContext:
    """The caller's context as it sent it; without an actor, the calling service is one."""
    return EntryContext(message.actor or caller.subject or "service", message.reason,
                        _optional(message, "correlation_id"),
                        _optional(message, "idempotency_key"), _optional(message, "reference"),
                        _optional(message, "traceparent"))


def reservation_message(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        id=r.id, channel=r.channel, customer_id=r.customer_id, status=r.status.value,
        created_at=r.created_at.isoformat(), expires_at=r.expires_at.isoformat(),
        lines=[pb.Line(sku=line.sku, quantity=line.quantity) for line in r.lines],
        allocations=[pb.Allocation(sku=a.sku, location=a.location, lot=a.lot,
                                   quantity=a.quantity) for a in r.allocations])


def reservation(message: pb.Reservation) -> Reservation:
    return Reservation(
        message.id, message.channel, _optional(message, "customer_id"),
        ReservationStatus(message.status), datetime.fromisoformat(message.created_at),
        datetime.fromisoformat(message.expires_at),
        [Line(line.sku, line.quantity) for line in message.lines],
        [Allocation(a.sku, a.location, _optional(a, "lot"), a.quantity)
         for a in message.allocations])


def channel_message(c: Channel) -> pb.Channel:
    return pb.Channel(id=c.id, name=c.name, min_shelf_life_days=c.min_shelf_life_days,
                      locations=c.locations, buffer=c.buffer, cap=c.cap)


def channel(message: pb.Channel) -> Channel:
    return Channel(message.id, message.name, message.min_shelf_life_days,
                   list(message.locations), message.buffer, _optional(message, "cap"))


def adjustment_message(adj: Adjustment) -> pb.AdjustRequest:
    return pb.AdjustRequest(
        sku=adj.sku, location=adj.location, kind=adj.kind.value, quantity=adj.quantity,
        lot=adj.lot, lot_expires_on=_iso(adj.lot_expires_on), to_location=adj.to_location,
        expected_on=_iso(adj.expected_on))


def adjustment(message: pb.AdjustRequest) -> Adjustment:
    try:
        kind = AdjustmentKind(message.kind)
    except ValueError:
        raise ValidationFailed("kind", f"unknown adjustment kind {message.kind!r}") from None
    return Adjustment(message.sku, message.location, kind, message.quantity,
                      _optional(message, "lot"), _date(message, "lot_expires_on"),
                      _optional(message, "to_location"), _date(message, "expected_on"))


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _date(message: Any, field: str) -> date | None:
    text = _optional(message, field)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(field, f"not an ISO date: {text!r}") from None


# -- the server side -----------------------------------------------------------------------------


class InventoryServicer(pb_grpc.InventoryServicer):
    """Each RPC: one call of the in-process service, for an authenticated service. (Methods
    are named as the proto names them: gRPC finds them by those names.)"""

    def __init__(self, inventory: InventoryService, tokens: TokenAuthority) -> None:
        self.inventory = inventory
        self.tokens = tokens

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_InventoryServicer_to_server(self, server)

    async def _answer(self, context: grpc.aio.ServicerContext, what: str,
                      work: Callable[[Principal], Awaitable[Any]]) -> Any:
        return await answered(context, self.tokens, work, f"Inventory/{what}")

    async def Reserve(self, request: pb.ReserveRequest,
                      context: grpc.aio.ServicerContext) -> pb.Reservation:
        async def work(caller: Principal) -> pb.Reservation:
            held = await self.inventory.reserve(ReserveRequest(
                [Line(line.sku, line.quantity) for line in request.lines],
                request.channel or "web", _optional(request, "customer_id"),
                _optional(request, "ttl_seconds"), _optional(request, "drop_pass")),
                entry_context(request.context, caller))
            return reservation_message(held)
        return await self._answer(context, "Reserve", work)

    async def GetReservation(self, request: pb.GetReservationRequest,
                             context: grpc.aio.ServicerContext) -> pb.Reservation:
        async def work(caller: Principal) -> pb.Reservation:
            return reservation_message(await self.inventory.get_reservation(
                request.reservation_id))
        return await self._answer(context, "GetReservation", work)

    async def _transition(self, context: grpc.aio.ServicerContext, what: str,
                          request: pb.TransitionRequest,
                          command: Callable[[str, EntryContext], Awaitable[Reservation]]
                          ) -> pb.Reservation:
        async def work(caller: Principal) -> pb.Reservation:
            return reservation_message(await command(
                request.reservation_id, entry_context(request.context, caller)))
        return await self._answer(context, what, work)

    async def Commit(self, request: pb.TransitionRequest,
                     context: grpc.aio.ServicerContext) -> pb.Reservation:
        return await self._transition(context, "Commit", request, self.inventory.commit)

    async def Release(self, request: pb.TransitionRequest,
                      context: grpc.aio.ServicerContext) -> pb.Reservation:
        return await self._transition(context, "Release", request, self.inventory.release)

    async def Ship(self, request: pb.TransitionRequest,
                   context: grpc.aio.ServicerContext) -> pb.Reservation:
        return await self._transition(context, "Ship", request, self.inventory.ship)

    async def Cancel(self, request: pb.TransitionRequest,
                     context: grpc.aio.ServicerContext) -> pb.Reservation:
        return await self._transition(context, "Cancel", request, self.inventory.cancel)

    async def Extend(self, request: pb.ExtendRequest,
                     context: grpc.aio.ServicerContext) -> pb.Reservation:
        async def work(caller: Principal) -> pb.Reservation:
            return reservation_message(await self.inventory.extend(
                request.reservation_id, _optional(request, "ttl_seconds"),
                entry_context(request.context, caller)))
        return await self._answer(context, "Extend", work)

    async def Adjust(self, request: pb.AdjustRequest,
                     context: grpc.aio.ServicerContext) -> pb.StockView:
        async def work(caller: Principal) -> pb.StockView:
            view = await self.inventory.adjust(adjustment(request),
                                               entry_context(request.context, caller),
                                               _optional(request, "expected_version"))
            return pb.StockView(sku=view.sku, version=view.version, available=view.available)
        return await self._answer(context, "Adjust", work)

    async def GetChannel(self, request: pb.GetChannelRequest,
                         context: grpc.aio.ServicerContext) -> pb.Channel:
        async def work(caller: Principal) -> pb.Channel:
            return channel_message(await self.inventory.channel(request.channel_id))
        return await self._answer(context, "GetChannel", work)


# -- the client side -----------------------------------------------------------------------------


class RemoteInventory:
    """Inventory in another process, with the in-process service's signatures
    (`inventory.port.Inventory`) and errors."""

    def __init__(self, url: str, tokens: TokenAuthority, policy: CallPolicy) -> None:
        self.remote = Remote("inventory", url, tokens, policy)

    async def _call(self, method: str, request: Any, *, safe: bool) -> Any:
        return await self.remote.call(pb_grpc.InventoryStub, method, request, safe=safe)

    async def reserve(self, request: ReserveRequest, ctx: EntryContext) -> Reservation:
        message = pb.ReserveRequest(
            lines=[pb.Line(sku=line.sku, quantity=line.quantity) for line in request.lines],
            channel=request.channel, customer_id=request.customer_id,
            ttl_seconds=request.ttl_seconds, drop_pass=request.drop_pass,
            context=context_message(ctx))
        # With a key, a repeat returns the first call's reservation: safe to retry.
        return reservation(await self._call("Reserve", message,
                                            safe=ctx.idempotency_key is not None))

    async def get_reservation(self, reservation_id: str) -> Reservation:
        return reservation(await self._call(
            "GetReservation", pb.GetReservationRequest(reservation_id=reservation_id),
            safe=True))

    async def _transition(self, method: str, reservation_id: str,
                          ctx: EntryContext) -> Reservation:
        # Never retried: a commit whose answer was lost and is sent again fails as "not
        # active"; the caller reads the reservation to learn what happened (the saga does).
        return reservation(await self._call(method, pb.TransitionRequest(
            reservation_id=reservation_id, context=context_message(ctx)), safe=False))

    async def commit(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        return await self._transition("Commit", reservation_id, ctx)

    async def release(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        return await self._transition("Release", reservation_id, ctx)

    async def ship(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        return await self._transition("Ship", reservation_id, ctx)

    async def cancel(self, reservation_id: str, ctx: EntryContext) -> Reservation:
        return await self._transition("Cancel", reservation_id, ctx)

    async def extend(self, reservation_id: str, ttl_seconds: int | None,
                     ctx: EntryContext) -> Reservation:
        return reservation(await self._call("Extend", pb.ExtendRequest(
            reservation_id=reservation_id, ttl_seconds=ttl_seconds,
            context=context_message(ctx)), safe=False))

    async def adjust(self, adj: Adjustment, ctx: EntryContext) -> pb.StockView:
        message = adjustment_message(adj)
        message.context.CopyFrom(context_message(ctx))
        # With a reference, an adjustment happens at most once per SKU: safe to retry.
        return await self._call("Adjust", message, safe=ctx.reference is not None)

    async def channel(self, channel_id: str) -> Channel:
        return channel(await self._call(
            "GetChannel", pb.GetChannelRequest(channel_id=channel_id), safe=True))

    async def close(self) -> None:
        await self.remote.close()
