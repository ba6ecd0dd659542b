"""Drop routes: merchandisers schedule drops; shoppers (or the storefront's service acting for
them) take a place in a drop's waiting room and ask for their standing, which carries the pass
that reservations of the drop's SKUs require (`Drop-Pass` header on POST /v1/reservations)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from instock.drops import model
from instock.drops.room import Watcher
from instock.drops.service import DropsService, Entry
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId, customer_of
from instock.platform.sse import event_stream
from instock.platform.telemetry import correlation_id

router = APIRouter(prefix="/v1/drops", tags=["drops"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))
MERCHANDISERS = requires(Role.MERCHANDISER)
READERS = requires(*STAFF, Role.CUSTOMER)
SHOPPER_ROLES = (Role.CUSTOMER, Role.SUPPORT, Role.SERVICE)
SHOPPERS = requires(*SHOPPER_ROLES)
TicketToken = Annotated[str, Path(min_length=1, max_length=2000)]


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
                                        "second from the start (more than 0)"))
    per_customer_limit: int | None = Field(None, ge=1, le=1_000_000)
    channels: list[CallerId] = Field(default_factory=list, max_length=100,
                                     description="the channels it sells on; none: every one")
    ends_at: AwareDatetime | None = Field(None, description=(
        "when its SKUs are sold as any others again; none: they stay gated"))


class DropOut(BaseModel):
    id: str
    skus: list[str]
    starts_at: datetime
    mode: str
    admit_per_second: float
    per_customer_limit: int | None
    channels: list[str]
    ends_at: datetime | None
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


class ChallengeOut(BaseModel):
    challenge: str
    difficulty: int = Field(description="leading zero bits the solution's hash must have")
    expires_at: datetime


class TicketOut(BaseModel):
    ticket: str = Field(description="signed: show it to ask for your standing")
    position: int = Field(description="1 is next; before the start, provisional (those who "
                                      "came before it are shuffled at the start)")


class StandingOut(BaseModel):
    position: int
    admitted: bool
    admission_pass: str | None = Field(serialization_alias="pass", description=(
        "when admitted: send it as the Drop-Pass header when reserving; short-lived"))
    sold_out: bool = Field(description="nothing left: the room admits no one any more")
    wait_seconds: float = Field(description="estimated wait at the drop's admission rate")
    held_for_review: bool = Field(False, description=(
        "the bot scoring held this place: it is not admitted until staff decide"))


def render(drop: model.Drop) -> DropOut:
    return DropOut(id=drop.id, skus=list(drop.skus), starts_at=drop.starts_at,
                   mode=drop.mode.value, admit_per_second=drop.admit_per_second,
                   per_customer_limit=drop.per_customer_limit, channels=list(drop.channels),
                   ends_at=drop.ends_at, created_at=drop.created_at)


@router.post("", status_code=201, response_model=DropOut, responses=problem_responses(409))
async def schedule_drop(body: DropIn, request: Request,
                        principal: Principal = Depends(MERCHANDISERS),
                        drops: DropsService = Depends(service)) -> DropOut:
    """Schedule a drop: until `starts_at` its SKUs cannot be reserved; from then on `mode`
    decides who may. A SKU is in one live drop at a time (409 otherwise)."""
    drop = model.Drop(
        id="", skus=tuple(body.skus), starts_at=body.starts_at, mode=model.Mode(body.mode),
        admit_per_second=body.admit_per_second, per_customer_limit=body.per_customer_limit,
        channels=tuple(dict.fromkeys(body.channels)), ends_at=body.ends_at, seed="",
        created_at=body.starts_at,  # the service stamps its own
        created_by=f"{principal.role.value}:{principal.subject}")
    return render(await drops.schedule(drop, correlation_id(request)))


@router.get("/{drop_id}", response_model=DropOut)
async def get_drop(drop_id: CallerId, principal: Principal = Depends(READERS),
                   drops: DropsService = Depends(service)) -> DropOut:
    return render(await drops.get(drop_id))


@router.get("/{drop_id}/challenge", response_model=ChallengeOut)
async def challenge(drop_id: CallerId, customer_id: CallerId | None = None,
                    principal: Principal = Depends(SHOPPERS),
                    drops: DropsService = Depends(service)) -> ChallengeOut:
    """A proof-of-work challenge to solve before taking a ticket: milliseconds for a person's
    browser, real CPU for a farm of identities. Signed, for this shopper and drop only."""
    token, difficulty, expires_at = drops.challenge(drop_id, customer_of(principal, customer_id))
    return ChallengeOut(challenge=token, difficulty=difficulty, expires_at=expires_at)


# What the bot scoring reads of a shopper's own client (drops/bots.py).
SCORED_HEADERS = ("user-agent", "accept-language", "sec-ch-ua")


@router.post("/{drop_id}/tickets", status_code=201, response_model=TicketOut,
             responses=problem_responses(409))
async def take_ticket(drop_id: CallerId, request: Request, body: TicketIn | None = None,
                      principal: Principal = Depends(SHOPPERS),
                      drops: DropsService = Depends(service)) -> TicketOut:
    """A place in the drop's waiting room (queue mode): by arrival, those who came before the
    start shuffled among themselves. Asking again keeps the place. Scored for bots: send the
    solved challenge; a refusal (403 `drop-entry-refused`) says which rules it tripped."""
    customer = customer_of(principal, body.customer_id if body else None)
    # The headers and address are the shopper's only when the shopper's own client calls; a
    # service acting for them (the storefront's server) is judged by the proof alone.
    own = principal.is_customer
    entry = Entry(body.challenge if body else None, body.solution if body else None,
                  {h: request.headers.get(h, "") for h in SCORED_HEADERS} if own else None,
                  request.client.host if own and request.client else None)
    ticket = await drops.take_ticket(drop_id, customer, entry)
    return TicketOut(ticket=ticket.token, position=ticket.position)


@router.get("/{drop_id}/tickets/{ticket}", response_model=StandingOut)
async def ticket_standing(drop_id: CallerId, ticket: TicketToken,
                          principal: Principal = Depends(SHOPPERS),
                          drops: DropsService = Depends(service)) -> StandingOut:
    """The ticket's position now; once the room admits it (and stock is left), a pass good for
    a short while (ask again for a fresh one). A forged or expired ticket is 422."""
    admission = await drops.admission(drop_id, ticket, principal.assert_acts_for)
    standing = admission.standing
    return StandingOut(position=standing.position, admitted=standing.admitted,
                       admission_pass=admission.admission_pass, sold_out=standing.sold_out,
                       wait_seconds=round(standing.wait_seconds, 3),
                       held_for_review=admission.held_for_review)


# Where a shopper joins the waitlist of a SKU (the waitlist context's route: POST {"sku"}),
# offered to everyone still waiting when a drop sells out.
WAITLIST_JOIN = "/v1/waitlist"


@router.get("/{drop_id}/tickets/{ticket}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": (
                "`standing` events as Server-Sent Events")}})
async def ticket_events(drop_id: CallerId, ticket: TicketToken, request: Request,
                        drops: DropsService = Depends(service)) -> StreamingResponse:
    """The ticket's standing, live: a `standing` event now and whenever it changes —
    `{"position", "admitted", "sold_out", "wait_seconds", "held_for_review", "waitlist"}`, where
    `position` counts those still waiting (1: next; 0 once the room has reached the ticket) and
    moves as the room admits those ahead (told at most every few seconds; admission and a
    sell-out at once); once sold out, `waitlist` offers the drop's SKUs' waitlist (`POST`
    `href` with `{"sku"}`). A comment line every few seconds keeps proxies open.

    The signed ticket in the path is the credential (EventSource cannot send headers), so the
    stream never carries the pass: once admitted, the page asks the authenticated
    `GET /v1/drops/{id}/tickets/{ticket}` for it. A forged or expired ticket is 422."""
    watcher = await drops.watch(drop_id, ticket)
    return event_stream(_StandingFeed(watcher), request.app.state.drain,
                        request.app.state.settings.live_heartbeat_seconds)


class _StandingFeed:
    """A waiting-room watcher as an SSE feed (platform/sse.py)."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    async def next(self, heartbeat: float) -> str:
        view = await self.watcher.next(heartbeat)
        if view is None:
            return ""
        return f"event: standing\ndata: {live_json(view, self.watcher.drop)}\n\n"

    def wake(self) -> None:
        self.watcher.wake()

    def close(self) -> None:
        self.watcher.close()


def live_json(view: model.Live, drop: model.Drop) -> str:
    waitlist = ({"href": WAITLIST_JOIN, "method": "POST", "skus": list(drop.skus)}
                if view.sold_out else None)
    return json.dumps({"position": view.position, "admitted": view.admitted,
                       "sold_out": view.sold_out, "wait_seconds": round(view.wait_seconds, 3),
                       "held_for_review": view.held_for_review, "waitlist": waitlist},
                      separators=(",", ":"))
