"""Customer profiles in GraphQL: a customer reads and changes its own, support anyone's (the
same rules and refusals as REST: the same input model checks both)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from instock.customers import api
from instock.customers.model import Behaviour, Changes, Profile
from instock.customers.service import CustomersService
from instock.platform.errors import ValidationFailed
from instock.platform.graphql import Info, parse, require


@strawberry.type
class SizeOf:
    category: str
    size: str


@strawberry.type
class ConsentOf:
    purpose: str
    granted: bool
    at: datetime
    source: str  # who gave or withdrew it: "customer:cus-1", "support:ann", "unsubscribe:…"


@strawberry.type(description="A customer's profile; contact fields are null once erased.")
class Customer:
    id: str
    email: str | None
    phone: str | None
    name: str | None
    time_zone: str | None
    sizes: list[SizeOf]
    preferences: JSON
    consents: list[ConsentOf]
    version: int
    updated_at: datetime
    erased: bool
    behaviour: JSON | None = strawberry.field(
        default=None, description="what they viewed and bought, favourite brands and "
                                  "categories (as REST's `behaviour`; null before any event)")


@strawberry.input
class SizeInput:
    category: str
    size: str


@strawberry.input
class ConsentInput:
    purpose: str
    granted: bool


@strawberry.input(description="Fields given replace; fields left out stay as they are.")
class CustomerInput:
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    time_zone: str | None = None
    sizes: list[SizeInput] | None = None
    preferences: JSON | None = None
    consents: list[ConsentInput] | None = None


def render(profile: Profile, summary: Behaviour | None = None) -> Customer:
    behaviour = api.render_behaviour(summary)
    return Customer(
        id=profile.id, email=profile.email, phone=profile.phone, name=profile.name,
        time_zone=profile.time_zone,
        sizes=[SizeOf(category=c, size=s) for c, s in sorted(profile.sizes.items())],
        preferences=JSON(profile.preferences),
        consents=[ConsentOf(purpose=p, granted=c.granted, at=c.at, source=c.source)
                  for p, c in sorted(profile.consents.items())],
        version=profile.version, updated_at=profile.updated_at, erased=profile.erased,
        behaviour=None if behaviour is None else JSON(behaviour.model_dump(mode="json")))


def _no_stored_response(info: Info) -> None:
    """A response kept for Idempotency-Key replays sits in plain text, out of reach of
    crypto-shredding: personal data never rides on one. REST keeps no response of the
    customer routes; here, where the middleware cannot tell operations apart, a key is
    refused (the update is idempotent by itself)."""
    request = info.context.request
    if getattr(getattr(request, "state", None), "idempotency_key", None) is not None:
        raise ValidationFailed("Idempotency-Key", "not accepted on operations that return "
                               "personal data (updateCustomer is idempotent by itself)")


def _as_rest(body: CustomerInput) -> dict[str, Any]:
    data: dict[str, Any] = {"email": body.email, "phone": body.phone, "name": body.name,
                            "time_zone": body.time_zone, "preferences": body.preferences}
    if body.sizes is not None:
        data["sizes"] = {s.category: s.size for s in body.sizes}
    if body.consents is not None:
        data["consents"] = {c.purpose: c.granted for c in body.consents}
    return data


@strawberry.type
class CustomersQuery:
    @strawberry.field(description="a customer's profile (the customer itself, or support)")
    async def customer(self, info: Info, id: str) -> Customer:
        principal = require(info, *api.ROLES)
        principal.assert_acts_for(id)
        _no_stored_response(info)
        customers: CustomersService = info.context.state.customers
        return render(*await customers.with_behaviour(id))


@strawberry.type
class CustomersMutation:
    @strawberry.mutation(description="create or change a profile; a changed consent records "
                                     "when and by whom")
    async def update_customer(self, info: Info, id: str, input: CustomerInput) -> Customer:
        principal = require(info, *api.ROLES)
        principal.assert_acts_for(id)
        _no_stored_response(info)
        body = parse(api.ProfileIn, _as_rest(input))
        customers: CustomersService = info.context.state.customers
        changes = Changes(email=body.email, phone=body.phone, name=body.name,
                          time_zone=body.time_zone, sizes=body.sizes, preferences=body.preferences,
                          consents=body.consents)
        return render(await customers.save(id, changes,
                                           f"{principal.role.value}:{principal.subject}"))
