"""Request types and helpers that several contexts' routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request
from pydantic import BaseModel, Field, StringConstraints

from instock.platform import tracing
from instock.platform.auth import Principal
from instock.platform.entry_context import EntryContext
from instock.platform.errors import ValidationFailed
from instock.platform.ids import CALLER_ID_PATTERN
from instock.platform.telemetry import correlation_id

# An id the caller chose (a SKU, a location, a channel): see CALLER_ID_PATTERN.
CallerId = Annotated[str, StringConstraints(pattern=CALLER_ID_PATTERN)]
# The pass a drop's waiting room (or draw) gave, on every route that reserves: required for the
# drop's SKUs while it gates them (drops context, behind inventory's ReservationGate).
DropPass = Annotated[str | None, Header(alias="Drop-Pass", max_length=2000, description=(
    "the pass a drop's waiting room gave: required for its SKUs"))]


class LineIn(BaseModel):
    sku: CallerId
    quantity: int = Field(ge=1, le=10_000)


def entry_context(request: Request, principal: Principal, reason: str = "") -> EntryContext:
    """The command's who and why: the caller, the reason, and the request's correlation id
    and idempotency key."""
    return EntryContext(actor=f"{principal.role.value}:{principal.subject}", reason=reason,
                        correlation_id=correlation_id(request),
                        idempotency_key=getattr(request.state, "idempotency_key", None),
                        traceparent=tracing.current_traceparent())


def customer_of(principal: Principal, customer_id: str | None) -> str:
    """Whom a customer-owned request is for: a customer names itself (or no one), staff must
    name the customer; a customer acting for another is refused."""
    customer = customer_id or (principal.subject if principal.is_customer else None)
    if customer is None:
        raise ValidationFailed("customer_id", "staff must name the customer")
    principal.assert_acts_for(customer)
    return customer
