"""Outbound webhook deliveries in GraphQL (admin), rendered as REST renders them."""

from __future__ import annotations

import strawberry
from strawberry.experimental.pydantic import type as from_model
from strawberry.scalars import JSON

from instock.platform.graphql import Info, parse, require
from instock.webhooks import api
from instock.webhooks.model import Status
from instock.webhooks.service import WebhooksService

strawberry.enum(Status, name="DeliveryStatus")


@from_model(model=api.AttemptOut, all_fields=True)
class DeliveryAttempt:
    pass


@from_model(model=api.DeliveryOut, all_fields=True)
class WebhookDelivery:
    event: JSON


@strawberry.type
class WebhooksQuery:
    @strawberry.field(description="admin: outbound deliveries, newest first (dead letters: "
                                  "`status: DEAD`)")
    async def webhook_deliveries(self, info: Info, subscription_id: str | None = None,
                                 status: Status | None = None,
                                 first: int = 50) -> list[WebhookDelivery]:
        require(info)  # admin only, as on REST
        page = parse(api.DeliveriesPage, {"limit": first})
        webhooks: WebhooksService = info.context.state.webhooks
        found = await webhooks.deliveries(subscription_id, status, page.limit)
        return [WebhookDelivery.from_pydantic(api.render_delivery(d)) for d in found]
