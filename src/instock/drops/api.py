"""Drop routes: merchandisers schedule drops; shoppers (or the storefront's service acting for
them) take a place in a drop's waiting room and ask for their standing, which carries the pass
that reservations of the drop's SKUs require (`Drop-Pass` header on POST /v1/reservations)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from instock.drops import model
from instock.drops.bots import Decision
from instock.drops.draws import Published
from instock.drops.model import draws as draw_model
from instock.drops.review import HeldAsk
from instock.drops.room import Watcher
from instock.drops.service import DropsService, Entry
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.db import utcnow
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


class ChallengeOut(BaseModel):
    challenge: str
    difficulty: int = Field(description="leading zero bits the solution's hash must have")
    expires_at: datetime


class TicketOut(BaseModel):
    ticket: str = Field(description="signed: show it to ask for your standing")
    position: int = Field(description="1 is next; before the start, provisional (those who "
                                      "came before it are shuffled at the start); after it, "
                                      "it can be short by shoppers arriving at the same "
                                      "moment, not stored yet: ask the standing for the rank")


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


@router.post("", status_code=201, response_model=DropOut, responses=problem_responses(409),
             response_model_exclude_unset=True)
async def schedule_drop(body: DropIn, request: Request,
                        principal: Principal = Depends(MERCHANDISERS),
                        drops: DropsService = Depends(service)) -> DropOut:
    """Schedule a drop: until `starts_at` its SKUs cannot be reserved; from then on `mode`
    decides who may. A SKU is in one live drop at a time (409 otherwise)."""
    return render(await drops.schedule(drop_of(body, principal), correlation_id(request)))


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


@router.get("/{drop_id}", response_model=DropOut, response_model_exclude_unset=True)
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


@router.post("/{drop_id}/tickets", status_code=201, response_model=TicketOut,
             responses=problem_responses(409))
async def take_ticket(drop_id: CallerId, request: Request, body: TicketIn | None = None,
                      principal: Principal = Depends(SHOPPERS),
                      drops: DropsService = Depends(service)) -> TicketOut:
    """A place in the drop's waiting room (queue mode): by arrival, those who came before the
    start shuffled among themselves. Asking again keeps the place. Scored for bots: send the
    solved challenge; a refusal (403 `drop-entry-refused`) says which rules it tripped."""
    customer = customer_of(principal, body.customer_id if body else None)
    ticket = await drops.take_ticket(drop_id, customer, scored(request, principal, body))
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


# -- draws -------------------------------------------------------------------------------------

EntryId = Annotated[str, Path(min_length=1, max_length=64)]


class EntryIn(TicketIn):
    fingerprint: str | None = Field(None, min_length=8, max_length=256, description=(
        "a stable fingerprint of the shopper's payment method or address (the storefront's), "
        "kept only as a keyed hash: one entry per fingerprint (another customer's entry with "
        "it is 409), and many shoppers giving one across drops is a sign of a bot farm"))


class EntryOut(BaseModel):
    entry: str = Field(description="the entry's id: ask GET .../entries/{entry} after the draw")
    held_for_review: bool = Field(description="the bot scoring held it: it is not drawn")


class EntryStandingOut(BaseModel):
    entry: str
    status: str = Field(description=(
        "waiting: not drawn yet, or a right may still roll over to it; won: holds (or used) "
        "a right to reserve; expired: held one and let it lapse; lost: none left to reach "
        "it; held: held for review, not drawn"))
    rank: int | None = Field(description="its place in the draw's order, once a right reached it")
    admission_pass: str | None = Field(serialization_alias="pass", description=(
        "while the right is open: send it as the Drop-Pass header when reserving"))
    claim_until: datetime | None = Field(description="when the right lapses unless used")
    claimed: bool = Field(description="the entrant reserved the drop's SKUs within it")


class DrawOut(BaseModel):
    drop_id: str
    seed: str = Field(description="secret until the draw; published with it")
    drawn_at: datetime
    algorithm: str
    slots: int = Field(description="rights drawn: the first `slots` of the order win")
    claim_seconds: float
    entries: list[str] = Field(description="the entry ids drawn from, sorted")
    winners: list[str] = Field(description="the first `slots` of the order, in order")
    order: list[str] = Field(description="every entry in the draw's order: rollovers follow it")


def render_draw(drawn: Published) -> DrawOut:
    return DrawOut(drop_id=drawn.drop_id, seed=drawn.seed, drawn_at=drawn.drawn_at,
                   algorithm=draw_model.DRAW_ALGORITHM, slots=drawn.slots,
                   claim_seconds=drawn.claim_seconds, entries=drawn.entries,
                   winners=drawn.winners, order=drawn.order)


@router.post("/{drop_id}/entries", status_code=201, response_model=EntryOut,
             responses=problem_responses(409))
async def enter_draw(drop_id: CallerId, request: Request, body: EntryIn | None = None,
                     principal: Principal = Depends(SHOPPERS),
                     drops: DropsService = Depends(service)) -> EntryOut:
    """Enter a draw drop while its entries are open: one entry per customer (asking again
    gives the same), and per fingerprint. Scored for bots as tickets are (send the solved
    challenge); refused is 403 `drop-entry-refused`."""
    customer = customer_of(principal, body.customer_id if body else None)
    entered = await drops.draws.enter(drop_id, customer, scored(request, principal, body))
    return EntryOut(entry=entered.entry_id, held_for_review=entered.held_for_review)


@router.get("/{drop_id}/entries/{entry_id}", response_model=EntryStandingOut)
async def entry_standing(drop_id: CallerId, entry_id: EntryId,
                         principal: Principal = Depends(SHOPPERS),
                         drops: DropsService = Depends(service)) -> EntryStandingOut:
    """The entry's standing now; while it holds a right, the pass to reserve with (good until
    `claim_until`). An unknown entry is 404 `drop-entry-unknown`."""
    got = await drops.draws.standing(drop_id, entry_id, principal.assert_acts_for)
    return EntryStandingOut(entry=got.entry_id, status=got.status.value, rank=got.rank,
                            admission_pass=got.admission_pass, claim_until=got.claim_until,
                            claimed=got.claimed)


@router.post("/{drop_id}/draw", response_model=DrawOut, responses=problem_responses(409))
async def run_draw(drop_id: CallerId, request: Request,
                   principal: Principal = Depends(MERCHANDISERS),
                   drops: DropsService = Depends(service)) -> DrawOut:
    """Draw the winners once the entries have closed (409 `drop-not-drawn` before). Drawing
    again gives the same stored draw."""
    drawn = await drops.draws.draw(drop_id, f"{principal.role.value}:{principal.subject}",
                                   correlation_id(request))
    return render_draw(drawn)


@router.get("/{drop_id}/draw", response_model=DrawOut)
async def get_draw(drop_id: CallerId, principal: Principal = Depends(READERS),
                   drops: DropsService = Depends(service)) -> DrawOut:
    """The draw with its seed, entries and order, for anyone to re-compute (`algorithm`); 409
    `drop-not-drawn` before the draw."""
    return render_draw(await drops.draws.published(drop_id))


# -- staff review of held asks ----------------------------------------------------------------

REVIEWERS = requires(Role.SUPPORT, Role.MERCHANDISER)


class RoomOut(BaseModel):
    asks: int = Field(description="tickets (queue) or entries (draw) taken")
    held: int = Field(description="held for review by the bot scoring")
    refused: int = Field(description="refused by staff on review")
    reached: int = Field(description="queue: places the room has reached at its rate")
    waiting: int = Field(description="queue: places still waiting")
    sold_out: bool


class LiveDropOut(DropOut):
    room: RoomOut


class LiveDrops(BaseModel):
    drops: list[LiveDropOut]


@router.get("", response_model=LiveDrops, response_model_exclude_unset=True)
async def live_drops(principal: Principal = Depends(REVIEWERS),
                     drops: DropsService = Depends(service)) -> LiveDrops:
    """Every drop not ended, soonest first, with its room's figures now (the ops console)."""
    return LiveDrops(drops=[
        LiveDropOut(**render(live.drop).model_dump(exclude_unset=True), room=RoomOut(
            **dataclasses.asdict(live.figures), sold_out=live.sold_out))
        for live in await drops.review.live()])


class HeldOut(BaseModel):
    kind: str = Field(description="ticket (waiting room) or entry (draw)")
    id: str
    customer_id: str
    arrived_at: datetime
    decision: str = Field(description="review while held; admit or refuse once decided")
    verdict: dict[str, Any] | None = Field(description=(
        "the bot scoring's score and the rules it tripped, and staff's review once decided"))


class HeldList(BaseModel):
    held: list[HeldOut]


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["admit", "refuse"]


def render_held(ask: HeldAsk) -> HeldOut:
    return HeldOut(kind=ask.kind, id=ask.id, customer_id=ask.customer_id,
                   arrived_at=ask.arrived_at, decision=ask.decision, verdict=ask.verdict)


@router.get("/{drop_id}/held", response_model=HeldList)
async def held_asks(drop_id: CallerId, principal: Principal = Depends(REVIEWERS),
                    drops: DropsService = Depends(service)) -> HeldList:
    """The tickets (or draw entries) the bot scoring held for review, oldest first, each with
    the rules it tripped."""
    return HeldList(held=[render_held(ask) for ask in await drops.review.held(drop_id)])


@router.post("/{drop_id}/held/{customer_id}", response_model=HeldOut,
             responses=problem_responses(409))
async def review_ask(drop_id: CallerId, customer_id: CallerId, body: ReviewIn,
                     principal: Principal = Depends(REVIEWERS),
                     drops: DropsService = Depends(service)) -> HeldOut:
    """Decide a held ask: `admit` (it is admitted or drawn as any other, from the place it
    has held all along) or `refuse` (its standing is 403 `drop-entry-refused` from then on).
    409 if it is not held (decided already)."""
    decided = await drops.review.decide(drop_id, customer_id, Decision(body.decision),
                                        f"{principal.role.value}:{principal.subject}")
    return render_held(decided)


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


def waitlist_offer(view: model.Live, drop: model.Drop) -> dict[str, Any] | None:
    """Once sold out, where those still waiting join the drop's SKUs' waitlist (SSE and the
    GraphQL subscription offer the same)."""
    return ({"href": WAITLIST_JOIN, "method": "POST", "skus": list(drop.skus)}
            if view.sold_out else None)


def live_json(view: model.Live, drop: model.Drop) -> str:
    return json.dumps({"position": view.position, "admitted": view.admitted,
                       "sold_out": view.sold_out, "wait_seconds": round(view.wait_seconds, 3),
                       "held_for_review": view.held_for_review,
                       "waitlist": waitlist_offer(view, drop)}, separators=(",", ":"))
