"""Customer routes: a customer reads and writes its own profile; support and admin anyone's."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from instock.customers.model import Behaviour, Changes, Preference, Profile
from instock.customers.service import CustomersService
from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId
from instock.platform.telemetry import correlation_id

router = APIRouter(tags=["customers"], responses=problem_responses(400, 401, 403, 404, 409, 422))
ROLES = (Role.CUSTOMER, Role.SUPPORT)  # and admin, always
PROFILE_ROLES = requires(*ROLES)
# Responses here carry personal data, so Idempotency-Key responses are not stored for them
# (the PUT is idempotent by itself: the same profile again changes nothing).
PERSONAL_PATHS = ("/v1/customers/",)


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> CustomersService:
    svc: CustomersService = request.app.state.customers
    return svc


class ProfileIn(BaseModel):
    """Fields given replace; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    name: str | None = Field(default=None, max_length=400)
    sizes: dict[str, str] | None = None
    preferences: dict[str, Preference] | None = None
    consents: dict[str, bool] = Field(default_factory=dict)
    time_zone: str | None = Field(default=None, max_length=64,
                                  description="IANA name, e.g. Europe/Paris (quiet hours)")


class ConsentOut(BaseModel):
    granted: bool
    at: datetime
    source: str


class ViewOut(BaseModel):
    product_id: str
    at: datetime


class PurchaseOut(BaseModel):
    order_id: str
    sku: str
    product_id: str | None
    quantity: int
    at: datetime


class BehaviourOut(BaseModel):
    """Built from events: the latest views and purchases (the latest first, at most 20
    each), and counts of the brands and categories looked at (1) and bought (3 a line)."""

    recent_views: list[ViewOut]
    recent_purchases: list[PurchaseOut]
    favourite_brands: list[str]
    favourite_categories: list[str]
    brands: dict[str, int]
    categories: dict[str, int]
    updated_at: datetime


class ProfileOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    name: str | None
    sizes: dict[str, str]
    preferences: dict[str, Preference]
    consents: dict[str, ConsentOut]
    version: int
    updated_at: datetime
    time_zone: str | None
    erased: bool  # personal data erased (key shredded): contact fields are null for good
    behaviour: BehaviourOut | None = Field(None, description=(
        "what the customer viewed and bought (GET only; null before any such event)"))


def render_behaviour(summary: Behaviour | None) -> BehaviourOut | None:
    if summary is None:
        return None
    return BehaviourOut(
        recent_views=[ViewOut.model_validate(v) for v in summary.views],
        recent_purchases=[PurchaseOut.model_validate(p) for p in summary.purchases],
        favourite_brands=summary.favourite_brands(),
        favourite_categories=summary.favourite_categories(), brands=summary.brands,
        categories=summary.categories, updated_at=summary.updated_at)


def render(profile: Profile, summary: Behaviour | None = None) -> ProfileOut:
    return ProfileOut(
        id=profile.id, email=profile.email, phone=profile.phone, name=profile.name,
        sizes=profile.sizes, preferences=profile.preferences,
        consents={p: ConsentOut(granted=c.granted, at=c.at, source=c.source)
                  for p, c in profile.consents.items()},
        version=profile.version, updated_at=profile.updated_at, time_zone=profile.time_zone,
        erased=profile.erased, behaviour=render_behaviour(summary))


@router.put("/v1/customers/{customer_id}", response_model=ProfileOut)
async def put_profile(customer_id: CallerId, body: ProfileIn, request: Request,
                      principal: Principal = Depends(PROFILE_ROLES),
                      customers: CustomersService = Depends(service)) -> ProfileOut:
    """Create or change a profile; a changed consent records when and by whom."""
    principal.assert_acts_for(customer_id)
    changes = Changes(email=body.email, phone=body.phone, name=body.name, sizes=body.sizes,
                      preferences=body.preferences, consents=body.consents,
                      time_zone=body.time_zone)
    profile = await customers.save(customer_id, changes,
                                   f"{principal.role.value}:{principal.subject}",
                                   correlation_id(request))
    return render(profile)


@router.get("/v1/customers/{customer_id}", response_model=ProfileOut)
async def get_profile(customer_id: CallerId, principal: Principal = Depends(PROFILE_ROLES),
                      customers: CustomersService = Depends(service)) -> ProfileOut:
    principal.assert_acts_for(customer_id)
    return render(*await customers.with_behaviour(customer_id))
