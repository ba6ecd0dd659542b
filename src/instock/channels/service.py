"""Channel use cases: marketplace connections, pushing available-to-sell, the order feed,
reconcile.

Two consumers turn events into durable work in this context's own tables, inside the
consumer's transaction (so each event counts once): `channel-stock` marks the listings a stock
or channel-rule change touches, `marketplace-orders` queues what a marketplace's webhook said.
The work itself (HTTP to a marketplace, placing orders through the orders context) is done by
`ChannelWorker` (worker.py) outside any transaction: a consumer's transaction holds the SQLite
write lock, and a slow marketplace must never hold a database lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.channels import model, store, wire
from instock.channels.connector import ConnectorError, ConnectorFactory
from instock.channels.events import ChannelOrderCancelled, ChannelOrderReceived
from instock.channels.model import Connection, Decision, ListingGap, OrderWork
from instock.inventory.events import ChannelChanged, StockChanged
from instock.inventory.service import InventoryService
from instock.orders.model import OrderLine
from instock.platform import inbound
from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec, once_per_batch
from instock.platform.bus.envelope import DomainEvent
from instock.platform.db import Database, signal, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.outbound import OutboundGuard, require_callable
from instock.platform.receipts import Receipt
from instock.platform.retry import backoff
from instock.platform.telemetry import CHANNEL_PUSHES

log = structlog.get_logger(__name__)

PUSH_SIGNAL = "instock_channel_push"
ORDERS_SIGNAL = "instock_channel_orders"
# How long a worker may hold a channel's push lease without renewing it. Longer than the
# connector's worst call (timeout x attempts + waits), so a live pusher never loses it mid-push.
LEASE_SECONDS = 120.0
# How long one attempt at an order holds it before another worker may try.
ORDER_CLAIM_SECONDS = 120.0


def retry_pause(failures: int) -> timedelta:
    """How long a failed push or marketplace order waits before its next try."""
    return timedelta(seconds=backoff(failures, base=1.0, cap=300.0))


class MarketplaceOrders(Protocol):
    """What channels need of the orders context (instock.orders.service.OrdersService)."""

    async def place_marketplace_order(self, channel: str, external_id: str,
                                      lines: list[OrderLine], currency: str,
                                      correlation_id: str | None = None) -> Any: ...

    async def cancel_marketplace_order(self, channel: str, external_id: str,
                                       reason: str) -> Any: ...


@dataclass(frozen=True)
class ReconcileReport:
    channel: str
    dry_run: bool
    checked: int
    drift: list[model.Drift]
    repaired: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "dry_run": self.dry_run, "checked": self.checked,
                "drift": [{"sku": d.sku, "ours": d.ours, "theirs": d.theirs,
                           "repaired": d.sku in self.repaired} for d in self.drift],
                "repaired": len(self.repaired)}


class ChannelsService:
    def __init__(self, db: Database, inventory: InventoryService, *,
                 connectors: ConnectorFactory, webhook_tolerance_seconds: float = 300.0,
                 order_attempts: int = 8, orders: MarketplaceOrders | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 guard: OutboundGuard | None = None) -> None:
        self.db = db
        self.guard = guard or OutboundGuard()  # base URLs are checked on save (and each call)
        self.inventory = inventory
        self.connectors = connectors
        self.webhook_tolerance = webhook_tolerance_seconds
        self.order_attempts = order_attempts
        # Wired by the composition root once the orders context exists; until then marketplace
        # orders wait in channel_orders (retried with backoff) rather than being lost.
        self.orders = orders
        self.clock = clock

    # -- connections ------------------------------------------------------------------------------

    async def save_connection(self, connection: Connection) -> Connection:
        if connection.kind not in model.CONNECTION_KINDS:
            raise ValidationFailed("kind", f"must be one of {', '.join(model.CONNECTION_KINDS)}")
        try:
            url = httpx.URL(connection.base_url)
        except httpx.InvalidURL as exc:
            raise ValidationFailed("base_url", str(exc)) from exc
        if url.scheme not in ("http", "https") or not url.host or not (
                url.port is None or 0 < url.port < 65536):
            raise ValidationFailed("base_url", "must be an http(s) URL with a host (and port)")
        await require_callable(self.guard, connection.base_url, "base_url")
        channel = await self.inventory.channel(connection.channel_id)  # NotFound if none
        skus = await self.inventory.skus_stocked_at(channel.locations)
        async with self.db.write() as conn:
            await store.save_connection(conn, connection, self.clock())
            # A new (or moved) marketplace learns every listing once.
            await store.mark_changed(conn, connection.channel_id, skus)
            signal(conn, PUSH_SIGNAL)
        return connection

    async def connection(self, channel_id: str) -> Connection:
        async with self.db.read() as conn:
            found = await store.get_connection(conn, channel_id)
        if found is None:
            raise NotFound(f"channel {channel_id} has no marketplace connection")
        return found

    async def connections(self) -> list[Connection]:
        async with self.db.read() as conn:
            return await store.all_connections(conn)

    async def listings(self, channel_id: str) -> list[dict[str, Any]]:
        """What we last told the channel's marketplace, per SKU."""
        await self.connection(channel_id)
        async with self.db.read() as conn:
            return await store.listings_of(conn, channel_id)

    # -- the webhook feed -------------------------------------------------------------------------

    async def receive_webhook(self, channel_id: str, body: bytes, signature: str | None,
                              correlation_id: str | None = None) -> Receipt:
        """Take one delivery of the channel's marketplace: verified before it is read, then
        recorded once for the `marketplace-orders` consumer. An event kind instock does not
        act on is acknowledged and dropped. Raises NotFound (no connection),
        WebhookSignatureRejected, ValidationFailed."""
        # The signature with the channel's secret is the webhook's only credential.
        connection = await self.connection(channel_id)
        wire.verify(body, signature, connection.webhook_secret, self.webhook_tolerance)
        delivery = wire.read_feed(body)
        if delivery is None:
            return Receipt(ignored=True)
        new = await self.receive(channel_id, delivery.event_id,
                                 wire.order_event(channel_id, delivery), correlation_id)
        return Receipt(duplicate=not new)

    async def receive(self, channel_id: str, event_id: str, event: DomainEvent,
                      correlation_id: str | None = None) -> bool:
        """Record one verified delivery; False when it was received before."""
        return await inbound.receive(self.db, f"channel:{channel_id}", event_id, event,
                                     correlation_id)

    # -- consumers: events become work in our own tables ------------------------------------------

    def stock_consumer(self) -> ConsumerSpec:
        return ConsumerSpec("channel-stock", frozenset({StockChanged.type, ChannelChanged.type}),
                            self._on_stock)

    def orders_consumer(self) -> ConsumerSpec:
        return ConsumerSpec("marketplace-orders",
                            frozenset({ChannelOrderReceived.type, ChannelOrderCancelled.type}),
                            self._on_order)

    async def _on_stock(self, conn: AsyncConnection, envelope: Envelope) -> None:
        """Mark the listings whose ATS the event may have changed; the worker pushes them."""
        data = envelope["data"]
        marked = False
        if envelope["type"] == StockChanged.type:
            connected = await once_per_batch("channel_connections",
                                             lambda: store.all_connections(conn))
            for connection in connected:
                try:
                    channel = await self.inventory.channel(connection.channel_id)
                except NotFound:
                    continue
                if data["location"] in channel.locations:
                    await store.mark_changed(conn, connection.channel_id, [data["sku"]])
                    marked = True
        elif await store.get_connection(conn, data["channel"]) is not None:
            # New rules: every SKU it could sell, and every one it was told of (a location
            # that left the channel takes its stock off the listings).
            skus = (await self.inventory.skus_stocked_at(data["locations"])
                    | await store.listed_skus(conn, data["channel"]))
            await store.mark_changed(conn, data["channel"], skus)
            marked = True
        if marked:
            signal(conn, PUSH_SIGNAL)

    async def _on_order(self, conn: AsyncConnection, envelope: Envelope) -> None:
        data = envelope["data"]
        payload: dict[str, Any] = {"correlation_id": envelope.get("correlationid"),
                                   "event_id": data["marketplace_event_id"]}
        if envelope["type"] == ChannelOrderReceived.type:
            work = OrderWork.CREATED
            payload.update(lines=data["lines"], currency=data["currency"])
        else:
            work = OrderWork.CANCELLED
            payload.update(reason=data["reason"])
        await store.add_order_work(conn, data["channel"], data["external_id"], work, payload,
                                   self.clock())
        signal(conn, ORDERS_SIGNAL)

    # -- pushing available-to-sell ----------------------------------------------------------------

    async def push_pending(self, channel_id: str, owner: str,
                           pace: Callable[[], Awaitable[None]], batch: int = 100) -> int:
        """Push the channel's dirty listings, one after the other, while holding its lease.

        Each push waits for its slot at the channel's rate *before* reading the SKU's state, so
        the changes that pile up meanwhile go out as one push of the newest value. Returns the
        number of listings handled.
        """
        async with self.db.read() as conn:
            if not await store.dirty_skus(conn, channel_id, self.clock(), 1):
                return 0  # the common wake-up: nothing to do, no lease taken
        connection = await self.connection(channel_id)
        connector = self.connectors(connection)
        handled = 0
        try:
            while await self._lease(channel_id, owner):
                async with self.db.read() as conn:
                    dirty = await store.dirty_skus(conn, channel_id, self.clock(), batch)
                if not dirty:
                    break
                for sku in dirty:
                    await pace()
                    if not await self._lease(channel_id, owner):
                        return handled
                    await self._push_one(channel_id, sku, connector)
                    handled += 1
        finally:
            await connector.aclose()
            async with self.db.write() as conn:
                await store.drop_lease(conn, channel_id, owner)
        return handled

    async def _lease(self, channel_id: str, owner: str) -> bool:
        now = self.clock()
        async with self.db.write() as conn:
            return await store.take_lease(conn, channel_id, owner, now,
                                          now + timedelta(seconds=LEASE_SECONDS))

    async def _push_one(self, channel_id: str, sku: str, connector: Any) -> Decision | None:
        async with self.db.read() as conn:
            state = await store.get_listing(conn, channel_id, sku)
        if state is None or not state.dirty:
            return None
        # Read after the changes were counted: this quantity covers all of them.
        quantity, version = (await self.inventory.channel_ats(channel_id, {sku}))[sku]
        decision = model.push_decision(state, quantity, version)
        if decision is Decision.STALE:
            async with self.db.write() as conn:
                await store.record_covered(conn, channel_id, sku, state.changes)
            return decision
        if decision is Decision.PUSH:
            try:
                await connector.push_quantity(sku, quantity)
            except ConnectorError as exc:
                CHANNEL_PUSHES.labels(channel_id, "failed").inc()
                await self._push_failed(channel_id, sku, exc)
                return None
            CHANNEL_PUSHES.labels(channel_id, "ok").inc()
        async with self.db.write() as conn:
            await store.record_push(conn, channel_id, sku, state.changes, version, quantity,
                                    self.clock(), sent=decision is Decision.PUSH)
        return decision

    async def _push_failed(self, channel_id: str, sku: str, exc: ConnectorError) -> None:
        """The connector gave up after its retries: put the listing aside, backing off longer
        with each failure; the channel's other listings go on."""
        now = self.clock()
        async with self.db.write() as conn:
            failures = await store.record_failure(conn, channel_id, sku, str(exc))
            await store.retry_listing_at(
                conn, channel_id, sku, now + retry_pause(failures))
        log.warning("channel_push_failed", channel=channel_id, sku=sku, error=str(exc),
                    failures=failures)

    # -- marketplace orders -----------------------------------------------------------------------

    async def process_orders(self, limit: int = 50) -> int:
        """Carry out due marketplace order work; returns how many items were attempted."""
        now = self.clock()
        async with self.db.read() as conn:
            due = await store.due_order_work(conn, now, limit)
        attempted = 0
        for row in due:
            async with self.db.write() as conn:
                if not await store.claim_order_work(
                        conn, row, now + timedelta(seconds=ORDER_CLAIM_SECONDS)):
                    continue  # another worker took it
            attempted += 1
            try:
                order_id, outcome = await self._carry_out(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._order_failed(row, exc)
                continue
            async with self.db.write() as conn:
                await store.finish_order_work(conn, row, self.clock(), order_id, outcome)
            log.info("marketplace_order_done", channel=row.channel_id,
                     external_id=row.external_id, work=row.work, outcome=outcome)
        return attempted

    async def _carry_out(self, row: Any) -> tuple[str | None, str]:
        if self.orders is None:
            raise RuntimeError("no orders service is wired into the channels context")
        payload = row.payload
        if row.work == OrderWork.CREATED.value:
            lines = [OrderLine(line["sku"], int(line["quantity"]), Decimal(str(line["unit_price"])))
                     for line in payload["lines"]]
            order = await self.orders.place_marketplace_order(
                row.channel_id, row.external_id, lines, payload["currency"],
                payload.get("correlation_id"))
            if _status(order) != "cancelled":
                return str(order.id), _status(order)
            # We could not fill it: the marketplace cancels it and refunds its buyer.
            reason = getattr(order, "cancel_reason", None) or "out of stock"
            connector = self.connectors(await self.connection(row.channel_id))
            try:
                await connector.cancel_order(row.external_id, str(reason))
            finally:
                await connector.aclose()
            return str(order.id), "cancelled_at_marketplace"
        async with self.db.read() as conn:
            placed = await store.order_work_state(conn, row.channel_id, row.external_id,
                                                  OrderWork.CREATED)
        if placed != model.WorkState.DONE.value:
            # Out of order: the cancellation came first. Wait for the order it cancels.
            raise Conflict(f"order {row.external_id} is not placed yet ({placed or 'unheard'})")
        order = await self.orders.cancel_marketplace_order(row.channel_id, row.external_id,
                                                           payload["reason"])
        return str(order.id), _status(order)

    async def _order_failed(self, row: Any, exc: Exception) -> None:
        attempts = row.attempts + 1
        now = self.clock()
        retry_at = (None if attempts >= self.order_attempts
                    else now + retry_pause(attempts))
        log.warning("marketplace_order_failed", channel=row.channel_id,
                    external_id=row.external_id, work=row.work, attempts=attempts,
                    gave_up=retry_at is None, error=repr(exc))
        async with self.db.write() as conn:
            await store.fail_order_work(conn, row, repr(exc), retry_at, now)

    async def order_work(self, channel_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            return await store.order_work(conn, channel_id)

    # -- reconcile --------------------------------------------------------------------------------

    async def reconcile(self, channel_id: str, repair: bool = True,
                        lease_wait_seconds: float = 30.0) -> ReconcileReport:
        """Compare the marketplace's listings with our ATS; push ours where they differ.

        Repairing takes the channel's push lease first, so no pusher sends a value in between.
        """
        connection = await self.connection(channel_id)
        channel = await self.inventory.channel(channel_id)
        connector = self.connectors(connection)
        owner = f"reconcile:{id(self)}"
        try:
            if repair:
                await self._wait_for_lease(channel_id, owner, lease_wait_seconds)
            theirs = await connector.listings()
            async with self.db.read() as conn:
                told = await store.listed_skus(conn, channel_id)
            skus = set(theirs) | told | await self.inventory.skus_stocked_at(channel.locations)
            ours = await self.inventory.channel_ats(channel_id, skus)
            drifts = model.drift({sku: q for sku, (q, _) in ours.items()}, theirs)
            repaired: list[str] = []
            for d in drifts if repair else []:
                await connector.push_quantity(d.sku, d.ours)
                async with self.db.write() as conn:
                    await store.record_repair(conn, channel_id, d.sku, ours[d.sku][1], d.ours,
                                              self.clock())
                repaired.append(d.sku)
        finally:
            await connector.aclose()
            if repair:
                async with self.db.write() as conn:
                    await store.drop_lease(conn, channel_id, owner)
        return ReconcileReport(channel_id, not repair, len(skus), drifts, repaired)

    # -- what the reconciler asks ------------------------------------------------------------

    async def listing_gaps(self, skus: set[str]) -> list[ListingGap]:
        """Listings of these SKUs, on every connected channel, whose last pushed quantity is
        not what the channel may sell now with no push due: a change the consumer missed. (A
        push due but held back by the marketplace's rate or failures is the pusher's backlog,
        which `instock_channel_pushes_total` shows.)"""
        gaps: list[ListingGap] = []
        async with self.db.read() as conn:
            connected = await store.all_connections(conn)
        for connection in connected:
            try:
                ours = await self.inventory.channel_ats(connection.channel_id, skus)
            except NotFound:
                continue
            async with self.db.read() as conn:
                told = await store.listing_states(conn, connection.channel_id, skus)
            for sku, (quantity, version) in sorted(ours.items()):
                listing = told.get(sku)
                if listing is not None and listing.dirty:
                    continue
                pushed = listing.pushed_quantity if listing else None
                if pushed != quantity and not (pushed is None and quantity == 0):
                    gaps.append(ListingGap(connection.channel_id, sku, quantity, pushed,
                                           version))
        return gaps

    async def marketplace_gaps(self) -> list[ListingGap]:
        """Listings whose quantity on the marketplace (pulled from its API) is not what we
        last pushed there, leaving out those with a push on its way."""
        gaps: list[ListingGap] = []
        for connection in await self.connections():
            connector = self.connectors(connection)
            try:
                theirs = await connector.listings()
            except ConnectorError as exc:
                log.warning("marketplace_listings_unreadable", channel=connection.channel_id,
                            error=str(exc))
                continue
            finally:
                await connector.aclose()
            async with self.db.read() as conn:
                told = await store.listing_states(conn, connection.channel_id, None)
            for sku, listing in sorted(told.items()):
                pushed = listing.pushed_quantity
                if listing.dirty or pushed is None or theirs.get(sku) == pushed:
                    continue
                gaps.append(ListingGap(connection.channel_id, sku, pushed, theirs.get(sku)))
        return gaps

    async def push_again(self, channel_id: str, sku: str, reported: int | None) -> None:
        """Send the listing our quantity again: the marketplace holds `reported`."""
        async with self.db.write() as conn:
            await store.push_again(conn, channel_id, sku, reported)
            signal(conn, PUSH_SIGNAL)

    async def _wait_for_lease(self, channel_id: str, owner: str, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not await self._lease(channel_id, owner):
            if asyncio.get_running_loop().time() > deadline:
                raise Conflict(f"a pusher is busy with channel {channel_id}; try again")
            await asyncio.sleep(0.2)


def _status(order: Any) -> str:
    status = order.status
    return str(getattr(status, "value", status))
