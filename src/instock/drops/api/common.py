"""What every drop route shares: the router, the roles, the service, a drop's body and answer,
and how a ticket or entry request is scored for bots (REST's and GraphQL's)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from instock.drops import model
from instock.drops.service import DropsService, Entry
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.db import utcnow
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId

router = APIRouter(prefix="/v1/drops", tags=["drops"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))
MERCHANDISERS = requires(Role.MERCHANDISER)
READERS = requires(*STAFF, Role.CUSTOMER)
SHOPPER_ROLES = (Role.CUSTOMER, Role.SUPPORT, Role.SERVICE)
SHOPPERS = requires(*SHOPPER_ROLES)
TICKET_MAX = 2000  # characters of a signed ticket
TicketToken = Annotated[str, Path(min_length=1, max_length=TICKET_MAX)]


async def service(request: Request) -> DropsService:
    svc: DropsService = request.app.state.drops
    return svc


class DropIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skus: list[CallerId] = Field(min_length=1, max_length=model.MAX_SKUS)
    starts_at: AwareDatetime = Field(description="RFC 3339, with its offset")
    mode: Literal["first_come", "queue", "draw"]
    admit_per_second: float = Field(0.0, ge=0, le=model.MAX_ADMIT_PER_SECOND,
                                    allow_inf_nan=False, description=(
                                        "queue mode: shoppers the waiting room admits per "
                                        "second from the start (more than 0); by capacity, "
                                        "the starting rate"))
    admission: Literal["fixed", "capacity"] = Field("fixed", description=(
        "queue mode: `fixed` admits at admit_per_second throughout; `capacity` starts there "
        "and then admits as fast as admitted shoppers get through checkout (measured)"))
    max_admit_per_second: float | None = Field(None, gt=0, le=model.MAX_ADMIT_PER_SECOND,
                                               allow_inf_nan=False, description=(
                                                   "admission by capacity: the most it "
                                                   "admits per second (at least "
                                                   "admit_per_second)"))
    per_customer_limit: int | None = Field(None, ge=1, le=1_000_000)
    channels: list[CallerId] = Field(default_factory=list, max_length=100,
                                     description="the channels it sells on; none: every one")
    ends_at: AwareDatetime | None = Field(None, description=(
        "when its SKUs are sold as any others again; none: they stay gated"))
    entries_close_at: AwareDatetime | None = Field(None, description=(
        "draw mode (required there): entries are taken until then, at or before starts_at"))
    draw_winners: int | None = Field(None, ge=1, le=1_000_000, description=(
        "draw mode: how many win; none: as many as units available at the draw"))
    claim_seconds: float = Field(model.DEFAULT_CLAIM_SECONDS, gt=0,
                                 le=model.MAX_CLAIM_SECONDS, allow_inf_nan=False,
                                 description=("draw mode: how long a winner has to reserve "
                                              "before the right passes to the next drawn"))


class DropOut(BaseModel):
    id: str
    skus: list[str]
    starts_at: datetime
    mode: str
    admit_per_second: float
    # A capacity drop's only: a fixed-rate drop answers as it always has (the routes leave
    # out what render did not set).
    admission: Literal["capacity"] | None = Field(None, description=(
        "present when the room admits by measured checkout capacity"))
    max_admit_per_second: float | None = Field(None, description=(
        "admission by capacity: the most it admits per second (none: no ceiling of its own)"))
    current_admit_per_second: float | None = Field(None, description=(
        "admission by capacity: what the room admits per second now, as last measured"))
    per_customer_limit: int | None
    channels: list[str]
    ends_at: datetime | None
    entries_close_at: datetime | None
    draw_winners: int | None
    claim_seconds: float
    created_at: datetime


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: CallerId | None = Field(None, description=(
        "staff name the customer; a customer's token names itself"))
    challenge: str | None = Field(None, max_length=2000, description=(
        "the proof-of-work challenge from GET /v1/drops/{id}/challenge"))
    solution: str | None = Field(None, max_length=64, description=(
        "a string such that SHA-256(challenge + ':' + solution) starts with `difficulty` "
        "zero bits"))
    fingerprint: str | None = Field(None, min_length=8, max_length=256, description=(
        "a stable fingerprint of the shopper's payment method or address (the storefront's), "
        "kept only as a keyed hash: many shoppers giving one is a sign of a bot farm"))


def render(drop: model.Drop) -> DropOut:
    return DropOut(id=drop.id, skus=list(drop.skus), starts_at=drop.starts_at,
                   mode=drop.mode.value, admit_per_second=drop.admit_per_second,
                   per_customer_limit=drop.per_customer_limit, channels=list(drop.channels),
                   ends_at=drop.ends_at, entries_close_at=drop.entries_close_at,
                   draw_winners=drop.draw_winners, claim_seconds=drop.claim_seconds,
                   created_at=drop.created_at, **capacity_of(drop))


def capacity_of(drop: model.Drop) -> dict[str, Any]:
    """What a capacity drop says of its admission (nothing for a fixed-rate one)."""
    if drop.admission is not model.Admission.CAPACITY:
        return {}
    return {"admission": drop.admission.value,
            "max_admit_per_second": drop.max_admit_per_second,
            "current_admit_per_second": model.rate_at(drop, utcnow())}


def drop_of(body: DropIn, principal: Principal) -> model.Drop:
    """The drop a merchandiser asks for (REST's body or GraphQL's input, checked by DropIn);
    the service gives it its id, seed and creation time."""
    return model.Drop(
        id="", skus=tuple(body.skus), starts_at=body.starts_at, mode=model.Mode(body.mode),
        admit_per_second=body.admit_per_second, per_customer_limit=body.per_customer_limit,
        channels=tuple(dict.fromkeys(body.channels)), ends_at=body.ends_at, seed="",
        created_at=body.starts_at,  # the service stamps its own
        created_by=f"{principal.role.value}:{principal.subject}",
        entries_close_at=body.entries_close_at, draw_winners=body.draw_winners,
        claim_seconds=body.claim_seconds, admission=model.Admission(body.admission),
        max_admit_per_second=body.max_admit_per_second)


# What the bot scoring reads of a shopper's own client (drops/bots.py).
SCORED_HEADERS = ("user-agent", "accept-language", "sec-ch-ua")


def scored(request: HTTPConnection, principal: Principal, body: TicketIn | None) -> Entry:
    """What the bot scoring reads of a ticket or entry request: an HTTP request, or the
    WebSocket a GraphQL mutation came over (its handshake's headers, its peer). The headers and
    address are the shopper's only when the shopper's own client calls; a service acting for
    them (the storefront's server) is judged by the proof alone."""
    own = principal.is_customer
    return Entry(body.challenge if body else None, body.solution if body else None,
                 {h: request.headers.get(h, "") for h in SCORED_HEADERS} if own else None,
                 request.client.host if own and request.client else None,
                 body.fingerprint if body else None)
