"""GraphQL subscriptions: the same per-connection mailbox as SSE and the WebSocket, so a
subscriber gets the newest state of each key, in version order, coalesced when it is slow.

Each subscription holds one `Connection` of the process's one bus listener (the hub) for as
long as the client stays; `afterVersion` resumes like SSE's Last-Event-ID."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

import strawberry
from strawberry.scalars import JSON

from instock.inventory.service import InventoryService
from instock.live import model
from instock.live.events import Update
from instock.live.service import Connection, LiveHub
from instock.orders.service import OrdersService
from instock.platform.auth import STAFF, Role
from instock.platform.errors import ValidationFailed
from instock.platform.graphql import Info, require
from instock.platform.ids import is_caller_id
from instock.platform.memo import Memo

MAX_SKUS = 100
# A channel's view of a SKU at a version, read once per process however many subscribers of
# that channel want it: (sku, channel, version) -> (version read, available).
ChannelStock = Memo[tuple[str, str, int], tuple[int, int]]


def channel_stock(inventory: InventoryService) -> ChannelStock:
    async def load(key: tuple[str, str, int]) -> tuple[int, int]:
        sku, channel, _ = key
        view = (await inventory.stocks([sku], channel))[sku]
        return view.version, view.available

    return Memo(load, ttl_seconds=60.0, max_entries=10_000)


def hub(info: Info) -> LiveHub:
    live: LiveHub = info.context.state.live
    return live


@strawberry.type
class StockChange:
    sku: str
    version: int
    available: int
    sold_out: bool


@strawberry.type
class StreamEvent:
    """A staff stream's event: the CloudEvents envelope as published."""

    key: str
    type: str
    envelope: JSON


def _skus(skus: list[str]) -> list[str]:
    if not 1 <= len(skus) <= MAX_SKUS:
        raise ValidationFailed("skus", f"give between 1 and {MAX_SKUS} SKUs")
    bad = [s for s in skus if not is_caller_id(s)]
    if bad:
        raise ValidationFailed("skus", f"not a valid SKU: {bad[0]!r}")
    return skus


async def updates_of(info: Info, connection: Connection) -> AsyncGenerator[list[Update], None]:
    """The connection's updates for as long as the client stays; the hub forgets it after."""
    live = hub(info)
    try:
        while True:
            batch = await connection.next(live.heartbeat_seconds)
            if batch:
                yield batch
    finally:
        live.close(connection)


async def _follow(info: Info, topic: str,
                  keep: Callable[[Update], Awaitable[bool]] | None = None,
                  ) -> AsyncGenerator[StreamEvent, None]:
    connection = Connection()
    hub(info).follow(connection, topic)
    async for batch in updates_of(info, connection):
        for update in batch:
            if keep is None or await keep(update):
                yield StreamEvent(key=update.key, type=str(update.body.get("type")),
                                  envelope=JSON(update.body))


@strawberry.type
class LiveSubscription:
    @strawberry.subscription(description=(
        "Each SKU's stock now, then on every change (newest only when the client is slow, "
        "never out of order). `afterVersion`: the version the client already has (resume)."))
    async def stock_changed(self, info: Info, skus: list[str], channel: str | None = None,
                            after_version: int | None = None,
                            ) -> AsyncGenerator[StockChange, None]:
        wanted = _skus(skus)
        connection = Connection()
        cursor = None if after_version is None else dict.fromkeys(wanted, after_version)
        await hub(info).watch(connection, wanted, cursor)
        views: ChannelStock | None = info.context.state.channel_stock if channel else None
        sent: dict[str, int] = {}
        async for batch in updates_of(info, connection):
            for update in batch:
                if update.topic != model.PUBLIC_TOPIC or update.version is None:
                    continue
                version, available = update.version, int(update.body["available"])
                if views is not None and channel is not None:
                    # The channel's view is read (once per process and version); a read may
                    # find a newer version, whose own update is then not sent again.
                    version, available = await views.get((update.key, channel, version))
                if version <= sent.get(update.key, -1):
                    continue
                sent[update.key] = version
                yield StockChange(sku=update.key, version=version, available=available,
                                  sold_out=available == 0)

    @strawberry.subscription(description="staff: every stock movement of these SKUs (or all)")
    async def ledger(self, info: Info, skus: list[str] | None = None,
                     ) -> AsyncGenerator[StreamEvent, None]:
        require(info, *STAFF)
        wanted = set(_skus(skus)) if skus else None

        async def keep(update: Update) -> bool:
            return wanted is None or update.key.partition("@")[0] in wanted

        async for event in _follow(info, "ledger", keep):
            yield event

    @strawberry.subscription(description="staff: every reservation's changes as they happen")
    async def reservations(self, info: Info) -> AsyncGenerator[StreamEvent, None]:
        require(info, *STAFF)
        async for event in _follow(info, "reservations"):
            yield event

    @strawberry.subscription(description="staff: every order's changes as they happen")
    async def orders(self, info: Info) -> AsyncGenerator[StreamEvent, None]:
        require(info, *STAFF)
        async for event in _follow(info, model.ORDERS_TOPIC):
            yield event

    @strawberry.subscription(description="one reservation's changes (its owner, or staff)")
    async def reservation_changed(self, info: Info, id: strawberry.ID,
                                  ) -> AsyncGenerator[StreamEvent, None]:
        principal = require(info, Role.CUSTOMER, Role.SERVICE, Role.SUPPORT)
        inventory: InventoryService = info.context.state.inventory
        principal.assert_acts_for((await inventory.get_reservation(str(id))).customer_id)

        async def mine(update: Update) -> bool:
            return update.key == str(id)

        async for event in _follow(info, "reservations", mine):
            yield event

    @strawberry.subscription(description="one order's changes (its owner, or staff)")
    async def order_changed(self, info: Info, id: strawberry.ID,
                            ) -> AsyncGenerator[StreamEvent, None]:
        principal = require(info, Role.CUSTOMER, *STAFF)
        orders: OrdersService = info.context.state.orders
        principal.assert_acts_for((await orders.get(str(id))).customer_id)

        async def mine(update: Update) -> bool:
            return update.key == str(id)

        async for event in _follow(info, model.ORDERS_TOPIC, mine):
            yield event
