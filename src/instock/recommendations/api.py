"""Recommendation routes: behaviour events in, personal lists out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import ValidationFailed, problem_responses
from instock.platform.ids import CALLER_ID_PATTERN
from instock.platform.telemetry import correlation_id
from instock.platform.text import Printable
from instock.recommendations.events import BehaviourType
from instock.recommendations.service import RecommendationsService

router = APIRouter(prefix="/v1", tags=["recommendations"],
                   responses=problem_responses(400, 401, 403, 422))
# Storefronts send events and ask for lists for their shoppers (service), shoppers for
# themselves (customer); staff may look at any shopper's list.
SHOPPER_ROLES = (Role.CUSTOMER, Role.SERVICE, Role.MERCHANDISER, Role.SUPPORT)
SHOPPERS = requires(*SHOPPER_ROLES)

ShopperId = Annotated[Printable, StringConstraints(min_length=1, max_length=128)]
ProductId = Annotated[str, StringConstraints(pattern=CALLER_ID_PATTERN)]
Query_ = Annotated[Printable, StringConstraints(min_length=1, max_length=200)]
Answer = Annotated[Printable, StringConstraints(min_length=1, max_length=128,
                                                strip_whitespace=True)]
ITEM_EVENTS = {"view", "click", "add_to_cart", "purchase", "wishlist"}
CONTEXT_PATTERN = r"^(home|cart|product:[A-Za-z0-9][A-Za-z0-9._:/-]{0,63})$"


async def service(request: Request) -> RecommendationsService:
    svc: RecommendationsService = request.app.state.recommendations
    return svc


class BehaviourIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: BehaviourType
    session_id: ShopperId | None = None
    customer_id: ShopperId | None = Field(None, description=(
        "the shopper once known; an event with both ids merges the session into the customer"))
    product_id: ProductId | None = Field(None, description="required for item events")
    sku: ProductId | None = None
    query: Query_ | None = Field(None, description="required for search events")
    attribute: Literal["brand", "category", "colour", "tag", "size"] | None = Field(
        None, description="what a preference answer is about (preference events)")
    value: Answer | None = Field(None, description="the answer (preference events)")
    occurred_at: AwareDatetime | None = Field(None, description="defaults to when received")

    @model_validator(mode="after")
    def _complete(self) -> BehaviourIn:
        if not (self.session_id or self.customer_id):
            raise ValueError("session_id or customer_id is required")
        if self.type in ITEM_EVENTS and not self.product_id:
            raise ValueError(f"product_id is required for {self.type} events")
        if self.type == "search" and not self.query:
            raise ValueError("query is required for search events")
        if self.type == "preference" and not (self.attribute and self.value):
            raise ValueError("attribute and value are required for preference events")
        return self


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[BehaviourIn] = Field(min_length=1, max_length=500)


class EventsOut(BaseModel):
    accepted: int
    ids: list[str]


class Reason(BaseModel):
    code: str = Field(description="which signal put the item here, e.g. trending, content")
    text: str


class RecommendedItem(BaseModel):
    product_id: str
    sku: str = Field(description="the variant to show: the shopper's size when in stock")
    title: str
    brand: str
    category: str
    in_your_size: bool | None = Field(description="null when sizes do not apply or are unknown")
    score: float
    reason: Reason


class ExperimentOut(BaseModel):
    id: str
    variant: str


class RecommendationsOut(BaseModel):
    context: str
    items: list[RecommendedItem]
    experiment: ExperimentOut | None
    cached: bool


class RecommendationsIn(BaseModel):
    """What `GET /recommendations` takes, as one model (GraphQL checks its arguments with it)."""

    customer_id: ShopperId | None = None
    session_id: ShopperId | None = None
    context: Annotated[str, StringConstraints(pattern=CONTEXT_PATTERN)] = "home"
    limit: int = Field(default=10, ge=1, le=50)


@router.post("/events", status_code=202, response_model=EventsOut)
async def record_events(body: EventsIn, request: Request,
                        principal: Principal = Depends(SHOPPERS),
                        recs: RecommendationsService = Depends(service)) -> EventsOut:
    """Record a batch of behaviour events (all or none); models learn from them at once."""
    for event in body.events:
        principal.assert_acts_for(event.customer_id)
    rows: list[dict[str, Any]] = [
        {**event.model_dump(exclude={"type"}), "kind": event.type} for event in body.events]
    ids = await recs.record(rows, correlation_id(request))
    return EventsOut(accepted=len(ids), ids=ids)


@router.get("/recommendations", response_model=RecommendationsOut)
async def recommendations(
    customer_id: Annotated[ShopperId | None, Query()] = None,
    session_id: Annotated[ShopperId | None, Query()] = None,
    context: Annotated[str, Query(pattern=CONTEXT_PATTERN, description=(
        "home, cart, or product:{product_id}"))] = "home",
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    principal: Principal = Depends(SHOPPERS),
    recs: RecommendationsService = Depends(service),
) -> RecommendationsOut:
    """A personal list: in stock only, the shopper's size first, a reason per item."""
    if principal.is_customer:
        customer_id = customer_id or principal.subject
    if not (customer_id or session_id):
        raise ValidationFailed("customer_id", "customer_id or session_id is required")
    principal.assert_acts_for(customer_id)
    served = await recs.recommend(customer_id, session_id, context, limit)
    experiment = (ExperimentOut(id=served.assignment.experiment_id,
                                variant=served.assignment.variant)
                  if served.assignment else None)
    return RecommendationsOut(context=context, items=[RecommendedItem(**item)
                                                      for item in served.items],
                              experiment=experiment, cached=served.cached)

