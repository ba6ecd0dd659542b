"""Channel HTTP routes: a channel's marketplace connection, its listings, the marketplace
order webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field, StringConstraints

from instock.channels.model import Connection
from instock.channels.service import ChannelsService
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId
from instock.platform.telemetry import correlation_id
from instock.platform.text import Printable

router = APIRouter(tags=["channels"], responses=problem_responses(400, 401, 403, 404, 409, 422))

Secret = Annotated[Printable, StringConstraints(min_length=16, max_length=500)]


async def service(request: Request) -> ChannelsService:
    svc: ChannelsService = request.app.state.channels
    return svc


# -- connections -----------------------------------------------------------------------------


class ConnectionIn(BaseModel):
    kind: Literal["marketplace"] = "marketplace"
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=500)]
    api_key: Annotated[Printable, StringConstraints(min_length=1, max_length=500)]
    webhook_secret: Secret


class ConnectionOut(BaseModel):
    channel: str
    kind: str
    base_url: str
    webhook_path: str = Field(description="where the marketplace sends its signed webhooks")


def render_connection(c: Connection) -> ConnectionOut:
    # The API key and the webhook secret are never echoed.
    return ConnectionOut(channel=c.channel_id, kind=c.kind, base_url=c.base_url,
                         webhook_path=f"/v1/webhooks/marketplaces/{c.channel_id}")


@router.put("/v1/channels/{channel_id}/connection", response_model=ConnectionOut)
async def save_connection(channel_id: CallerId, body: ConnectionIn,
                          principal: Principal = Depends(requires(Role.MERCHANDISER)),
                          channels: ChannelsService = Depends(service)) -> ConnectionOut:
    saved = await channels.save_connection(Connection(
        channel_id, body.kind, body.base_url, body.api_key, body.webhook_secret))
    return render_connection(saved)


@router.get("/v1/channels/{channel_id}/connection", response_model=ConnectionOut)
async def get_connection(channel_id: str, principal: Principal = Depends(requires(*STAFF)),
                         channels: ChannelsService = Depends(service)) -> ConnectionOut:
    return render_connection(await channels.connection(channel_id))


class ListingOut(BaseModel):
    sku: str
    pushed_quantity: int | None
    pushed_version: int | None = Field(description="the SKU version the quantity was read at")
    pushed_at: datetime | None
    pushes: int
    pending: bool = Field(description="stock changed since the last push")
    failures: int
    last_error: str | None


@router.get("/v1/channels/{channel_id}/listings", response_model=list[ListingOut])
async def get_listings(channel_id: str, principal: Principal = Depends(requires(*STAFF)),
                       channels: ChannelsService = Depends(service)) -> list[ListingOut]:
    return [ListingOut(sku=r["sku"], pushed_quantity=r["pushed_quantity"],
                       pushed_version=r["pushed_version"], pushed_at=r["pushed_at"],
                       pushes=r["pushes"], pending=r["changes"] > r["pushed_changes"],
                       failures=r["failures"], last_error=r["last_error"])
            for r in await channels.listings(channel_id)]


class OrderWorkOut(BaseModel):
    external_id: str
    work: str = Field(description="created | cancelled: what the marketplace announced")
    state: str = Field(description="pending | done | failed")
    attempts: int
    order_id: str | None
    outcome: str | None = Field(description="e.g. paid, cancelled_at_marketplace, cancelled")
    error: str | None
    received_at: datetime
    done_at: datetime | None


@router.get("/v1/channels/{channel_id}/orders", response_model=list[OrderWorkOut])
async def get_order_work(channel_id: str, principal: Principal = Depends(requires(*STAFF)),
                         channels: ChannelsService = Depends(service)) -> list[OrderWorkOut]:
    """The marketplace's order feed as we carried it out (or are about to)."""
    return [OrderWorkOut.model_validate(row) for row in await channels.order_work(channel_id)]


# -- the marketplace's webhook ---------------------------------------------------------------


class WebhookAck(BaseModel):
    received: bool = True
    duplicate: bool = Field(default=False, description="this delivery was received before")
    ignored: bool = Field(default=False, description="an event type instock does not act on")


@router.post("/v1/webhooks/marketplaces/{channel_id}", response_model=WebhookAck)
async def marketplace_webhook(channel_id: str, request: Request,
                              marketplace_signature: str | None = Header(default=None),
                              channels: ChannelsService = Depends(service)) -> WebhookAck:
    """No bearer token: the `Marketplace-Signature` (HMAC-SHA256 of `<t>.<body>` with the
    channel's webhook secret) is the credential. Acknowledged once recorded; the order is
    carried out by the `marketplace-orders` consumer and the channel worker.

    The body (read raw: the signature is over its bytes, checked before it is parsed) is
    `{"id": event id, "type": "order.created" | "order.cancelled", "data": {"order": {"id",
    "lines": [{"sku", "quantity", "price"}], "currency", "reason"}}}`."""
    receipt = await channels.receive_webhook(channel_id, await request.body(),
                                             marketplace_signature, correlation_id(request))
    return WebhookAck(duplicate=receipt.duplicate, ignored=receipt.ignored)
