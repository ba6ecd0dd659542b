"""Payment routes: the provider's webhooks. No bearer token: the signature is the credential."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from instock.payments.service import PaymentsService
from instock.platform.errors import problem_responses
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
    # Read raw: the signature is over the body's bytes.
    receipt = await payments.receive_webhook(provider, await request.body(),
                                             request.headers.get("stripe-signature"),
                                             correlation_id(request))
    return Received(duplicate=receipt.duplicate, relevant=not receipt.ignored)
