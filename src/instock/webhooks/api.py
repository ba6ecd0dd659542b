"""Outbound webhook routes: subscriptions, their delivery log, redelivery and a test ping."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from instock.platform.auth import Principal, requires
from instock.platform.errors import problem_responses
from instock.webhooks.model import Attempt, Delivery, Status, Subscription
from instock.webhooks.service import WebhooksService

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))
ADMIN = requires()  # admin only: a subscription sends any event anywhere

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=100, description=(
    "exact types (`inventory.stock_changed.v1`) or wildcards (`order.*`); see docs/events/"))]
Description = Annotated[str, StringConstraints(max_length=500, strip_whitespace=True)]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=200)]
ID_PATTERN = r"^[0-9A-Fa-f-]{1,36}$"  # the ids instock makes are UUIDv7
SubscriptionId = Annotated[str, Path(pattern=ID_PATTERN)]
DeliveryId = Annotated[str, Path(pattern=ID_PATTERN)]


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> WebhooksService:
    svc: WebhooksService = request.app.state.webhooks
    return svc


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url
    event_types: EventTypes
    secret: Secret | None = Field(default=None, description=(
        "the HMAC-SHA256 signing key; generated (and shown once, in this answer) if absent"))
    description: Description = ""


# The default of a PATCH field: never read (the handler takes only the fields the client
# sent), so an explicit `null` is refused like any bad value.
LEFT_OUT: Any = None


def _patch_schema(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["minProperties"] = 1


class SubscriptionPatchIn(BaseModel):
    """Fields to change; a field left out keeps its value. A disabled subscription queues no
    new events and its pending deliveries wait until it is enabled again."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)
    url: Url = LEFT_OUT
    event_types: EventTypes = LEFT_OUT
    active: bool = LEFT_OUT
    description: Description = LEFT_OUT


class SubscriptionOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str
    active: bool
    created_at: datetime
    updated_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="shown this once: keep it to verify Instock-Signature")


class AttemptOut(BaseModel):
    number: int
    at: datetime
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: Status
    attempts: int = Field(description="attempts since it was (re)queued")
    next_attempt_at: datetime | None = Field(description="for a pending delivery")
    created_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[AttemptOut] = Field(description="every attempt, oldest first "
                                                      "(across redeliveries)")
    event: dict[str, Any] = Field(description="the CloudEvents envelope sent")


def _subscription(s: Subscription) -> dict[str, Any]:
    return {"id": s.id, "url": s.url, "event_types": list(s.event_types),
            "description": s.description, "active": s.active, "created_at": s.created_at,
            "updated_at": s.updated_at}


def _attempt(a: Attempt) -> AttemptOut:
    return AttemptOut(number=a.number, at=a.at, status_code=a.status_code, error=a.error,
                      duration_ms=a.duration_ms)


def render_delivery(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id, subscription_id=d.subscription_id, event_id=d.event_id,
        event_type=d.event_type, status=d.status, attempts=d.attempts,
        next_attempt_at=d.due_at if d.status is Status.PENDING else None,
        created_at=d.created_at, delivered_at=d.delivered_at,
        last_status_code=d.last_status_code, last_error=d.last_error,
        attempt_log=[_attempt(a) for a in d.log], event=d.envelope)


@router.post("/subscriptions", status_code=201, response_model=SubscriptionCreated)
async def subscribe(body: SubscriptionIn, principal: Principal = Depends(ADMIN),
                    webhooks: WebhooksService = Depends(service)) -> SubscriptionCreated:
    """Subscribe a URL to event types. Each delivery is a POST of the CloudEvents envelope,
    signed in `Instock-Signature: t=…,v1=…` (HMAC-SHA256 of `<t>.<body>` with the secret)."""
    s = await webhooks.subscribe(body.url, body.event_types, body.secret, body.description)
    return SubscriptionCreated(**_subscription(s), secret=s.secret)


@router.get("/subscriptions", response_model=list[SubscriptionOut])
async def subscriptions(principal: Principal = Depends(ADMIN),
                        webhooks: WebhooksService = Depends(service)) -> list[SubscriptionOut]:
    return [SubscriptionOut(**_subscription(s)) for s in await webhooks.subscriptions()]


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def subscription(subscription_id: SubscriptionId, principal: Principal = Depends(ADMIN),
                       webhooks: WebhooksService = Depends(service)) -> SubscriptionOut:
    return SubscriptionOut(**_subscription(await webhooks.subscription(subscription_id)))


@router.patch("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def update(subscription_id: SubscriptionId, body: SubscriptionPatchIn,
                 principal: Principal = Depends(ADMIN),
                 webhooks: WebhooksService = Depends(service)) -> SubscriptionOut:
    changes = body.model_dump(exclude_unset=True)
    return SubscriptionOut(**_subscription(await webhooks.update(subscription_id, changes)))


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def unsubscribe(subscription_id: SubscriptionId, principal: Principal = Depends(ADMIN),
                      webhooks: WebhooksService = Depends(service)) -> Response:
    """Remove the subscription, its queue and its delivery log."""
    await webhooks.unsubscribe(subscription_id)
    return Response(status_code=204)


class DeliveriesPage(BaseModel):
    limit: int = Field(default=50, ge=1, le=500)


@router.get("/subscriptions/{subscription_id}/deliveries", response_model=list[DeliveryOut])
async def deliveries(subscription_id: SubscriptionId, status: Status | None = None,
                     limit: int = Query(default=50, ge=1, le=500),
                     before: str | None = Query(default=None, pattern=ID_PATTERN,
                                                description="a delivery id: older ones"),
                     principal: Principal = Depends(ADMIN),
                     webhooks: WebhooksService = Depends(service)) -> list[DeliveryOut]:
    """The delivery log, newest first, each delivery with its attempts."""
    return [render_delivery(d)
            for d in await webhooks.deliveries(subscription_id, status, limit, before)]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
async def delivery(delivery_id: DeliveryId, principal: Principal = Depends(ADMIN),
                   webhooks: WebhooksService = Depends(service)) -> DeliveryOut:
    return render_delivery(await webhooks.delivery(delivery_id))


@router.post("/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut)
async def redeliver(delivery_id: DeliveryId, principal: Principal = Depends(ADMIN),
                    webhooks: WebhooksService = Depends(service)) -> DeliveryOut:
    """Send a delivered or dead-lettered delivery again: back in the queue, due now, with its
    attempts reset. A pending one is already queued (409)."""
    return render_delivery(await webhooks.redeliver(delivery_id))


@router.post("/subscriptions/{subscription_id}/test", response_model=DeliveryOut)
async def ping(subscription_id: SubscriptionId, principal: Principal = Depends(ADMIN),
               webhooks: WebhooksService = Depends(service)) -> DeliveryOut:
    """Send a `webhook.ping.v1` to this subscription now; the answer has the first attempt's
    outcome (a failed ping is retried like any delivery)."""
    return render_delivery(await webhooks.ping(subscription_id))
