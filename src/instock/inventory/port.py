"""Inventory as the contexts that call it see it (orders' checkout saga and its order
commands): the one interface the in-process `InventoryService` and the gRPC client
`RemoteInventory` (inventory/grpc.py) both satisfy, so a caller runs unchanged whether
inventory runs in its process or in another."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from instock.inventory.model import Adjustment, Channel, Reservation
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.entry_context import EntryContext


class ReservationGate(Protocol):
    """Who may reserve SKUs that are in a drop, asked before every reservation. The composition
    root wires it to the drops context, so inventory never reads drops' tables; it must answer
    a SKU in no drop without I/O (it is on every reservation's path)."""

    async def admit(self, skus: Iterable[str], customer_id: str | None,
                    drop_pass: str | None) -> Mapping[str, int]:
        """Return if the reservation may go ahead, else raise the house's error saying why
        (nothing is reserved then). What it returns: the per-customer limits drops set on
        these SKUs, enforced with (and as) the SKUs' own."""


class Inventory(Protocol):
    async def channel(self, channel_id: str) -> Channel: ...

    async def reserve(self, request: ReserveRequest, ctx: EntryContext) -> Reservation: ...

    async def get_reservation(self, reservation_id: str) -> Reservation: ...

    async def commit(self, reservation_id: str, ctx: EntryContext) -> Reservation: ...

    async def release(self, reservation_id: str, ctx: EntryContext) -> Reservation: ...

    async def ship(self, reservation_id: str, ctx: EntryContext) -> Reservation: ...

    async def cancel(self, reservation_id: str, ctx: EntryContext) -> Reservation: ...

    async def extend(self, reservation_id: str, ttl_seconds: int | None,
                     ctx: EntryContext) -> Reservation: ...

    async def adjust(self, adj: Adjustment, ctx: EntryContext) -> object: ...
