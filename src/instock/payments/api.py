"""Payment routes: the provider's webhooks. No bearer token: the signature is the credential."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from instock.config import Settings
from instock.payments import wire
from instock.payments.events import PaymentProviderEvent
from instock.payments.service import PaymentsService
from instock.platform import inbound
from instock.platform.errors import NotFound, ValidationFailed, problem_responses
from instock.platform.telemetry import correlation_id

router = APIRouter(tags=["payments"], responses=problem_responses(400, 404, 422))


async def service(request: Request) -> PaymentsService:
    svc: PaymentsService = request.app.state.payments
    return svc


class Received(BaseModel):
    received: bool = True
    duplicate: bool  # this event id was received before; nothing was done again
    relevant: bool  # whether the event says anything about a payment


@router.post("/v1/webhooks/payments/{provider}", response_model=Received)
async def provider_webhook(provider: str, request: Request,
                           payments: PaymentsService = Depends(service)) -> Received:
    """A payment provider's event (Stripe's format and `Stripe-Signature` scheme), verified,
    recorded once and answered at once; the `payment-events` consumer applies it."""
    if provider != payments.provider.name:
        raise NotFound(f"no payment provider {provider!r} is configured here")
    settings: Settings = request.app.state.settings
    body = await request.body()
    event = payments.provider.read_webhook(body, request.headers.get("stripe-signature"),
                                           settings.payments_webhook_tolerance_seconds)
    try:
        read = wire.read_event(event)
    except (KeyError, TypeError, ValueError) as exc:  # signed by the provider, yet malformed
        raise ValidationFailed("body", f"not a payment event the provider sends: {exc!r}") \
            from None
    if read is None:
        return Received(duplicate=False, relevant=False)
    news = read.news
    fresh = await inbound.receive(
        payments.db, f"payments:{provider}", read.id, PaymentProviderEvent(
            provider=provider, event_id=read.id, event_type=read.type,
            created=datetime.fromtimestamp(read.created, UTC), payment_id=read.payment_id,
            provider_ref=read.provider_ref, status=news.status,
            amount_captured=news.amount_captured, amount_refunded=news.amount_refunded,
            decline_reason=news.decline_reason),
        correlation_id(request))
    return Received(duplicate=not fresh, relevant=True)
