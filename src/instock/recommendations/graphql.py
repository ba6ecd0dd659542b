"""Recommendations in GraphQL: a shopper's list (also for an anonymous session), behaviour
events in, and a subscription that sends the list again when an item on it sells out."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from instock.live.service import Connection, LiveHub
from instock.platform.errors import ValidationFailed
from instock.platform.graphql import Info, correlation_id, parse, require
from instock.recommendations import api
from instock.recommendations.service import RecommendationsService


def service(info: Info) -> RecommendationsService:
    svc: RecommendationsService = info.context.state.recommendations
    return svc


@strawberry.type
class RecommendedItem:
    product_id: str
    sku: str = strawberry.field(description="the variant to show: the shopper's size when "
                                            "in stock")
    title: str
    brand: str
    category: str
    in_your_size: bool | None
    score: float
    reason: str = strawberry.field(description="why it is here, in words")
    reason_code: str = strawberry.field(description="which signal: trending, content, …")


@strawberry.type
class ExperimentVariant:
    id: str
    variant: str


@strawberry.type
class Recommendations:
    context: str
    items: list[RecommendedItem]
    experiment: ExperimentVariant | None
    cached: bool


@strawberry.type
class EventsAccepted:
    accepted: int
    ids: list[str]


@strawberry.input
class BehaviourInput:
    type: str
    session_id: str | None = None
    customer_id: str | None = None
    product_id: str | None = None
    sku: str | None = None
    query: str | None = None
    attribute: str | None = None
    value: str | None = None


def _query(info: Info, customer_id: str | None, session_id: str | None, context: str,
           limit: int) -> api.RecommendationsIn:
    """The viewer: a customer sees its own list; anyone (no token) may ask for a session's;
    staff and services for anyone's, as on REST."""
    principal = info.context.principal
    if principal is not None:
        principal = require(info, *api.SHOPPER_ROLES)
        if principal.is_customer:
            customer_id = customer_id or principal.subject
        principal.assert_acts_for(customer_id)
    elif customer_id is not None:
        require(info, *api.SHOPPER_ROLES)  # a customer's list needs a token
    body = parse(api.RecommendationsIn, {"customer_id": customer_id, "session_id": session_id,
                                         "context": context, "limit": limit})
    if not (body.customer_id or body.session_id):
        raise ValidationFailed("customerId", "customerId or sessionId is required")
    return body


async def _served(info: Info, body: api.RecommendationsIn) -> Recommendations:
    served = await service(info).recommend(body.customer_id, body.session_id, body.context,
                                           body.limit)
    experiment = (ExperimentVariant(id=served.assignment.experiment_id,
                                    variant=served.assignment.variant)
                  if served.assignment else None)
    return Recommendations(context=body.context, items=[_item(i) for i in served.items],
                           experiment=experiment, cached=served.cached)


def _item(item: dict[str, Any]) -> RecommendedItem:
    return RecommendedItem(product_id=item["product_id"], sku=item["sku"], title=item["title"],
                           brand=item["brand"], category=item["category"],
                           in_your_size=item["in_your_size"], score=float(item["score"]),
                           reason=item["reason"]["text"], reason_code=item["reason"]["code"])


@strawberry.type
class RecommendationsQuery:
    @strawberry.field(description="a personal list: in stock only, the shopper's size first")
    async def recommendations(self, info: Info, session_id: str | None = None,
                              customer_id: str | None = None, context: str = "home",
                              limit: int = 10) -> Recommendations:
        return await _served(info, _query(info, customer_id, session_id, context, limit))


@strawberry.type
class RecommendationsMutation:
    @strawberry.mutation(description="behaviour events, all or none (REST POST /v1/events)")
    async def record_events(self, info: Info, events: list[BehaviourInput]) -> EventsAccepted:
        principal = require(info, *api.SHOPPER_ROLES)
        body = parse(api.EventsIn, {"events": [
            {k: v for k, v in vars(event).items() if v is not None} for event in events]})
        for event in body.events:
            principal.assert_acts_for(event.customer_id)
        rows: list[dict[str, Any]] = [{**event.model_dump(exclude={"type"}), "kind": event.type}
                                      for event in body.events]
        ids = await service(info).record(rows, correlation_id(info))
        return EventsAccepted(accepted=len(ids), ids=ids)


@strawberry.type
class RecommendationsSubscription:
    @strawberry.subscription(description=(
        "the viewer's list now, then again whenever an item on it sells out (the sold-out "
        "item is gone from the next list at once)"))
    async def recommendations_changed(
            self, info: Info, session_id: str | None = None, customer_id: str | None = None,
            context: str = "home", limit: int = 10) -> AsyncGenerator[Recommendations, None]:
        body = _query(info, customer_id, session_id, context, limit)
        live: LiveHub = info.context.state.live
        connection = Connection()
        sold_out: set[str] = set()  # heard sold out: gone from every list sent after
        shown: list[str] | None = None
        try:
            while True:
                current = await _served(info, body)
                current.items = [i for i in current.items if i.sku not in sold_out]
                skus = [i.sku for i in current.items]
                if skus != shown:
                    live.unwatch(connection, [s for s in connection.skus if s not in skus])
                    await live.watch(connection, skus)
                    shown = skus
                    yield current
                await _next_sell_out(live, connection, sold_out)
        finally:
            live.close(connection)


async def _next_sell_out(live: LiveHub, connection: Connection, sold_out: set[str]) -> None:
    """Wait until a SKU the connection watches sells out (adding it to `sold_out`)."""
    while True:
        for update in await connection.next(live.heartbeat_seconds):
            if update.key in connection.skus and update.body.get("sold_out"):
                sold_out.add(update.key)
                return
