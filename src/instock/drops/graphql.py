"""Drops in GraphQL: a drop and its scheduling, a waiting-room ticket and its standing (also
live, as a subscription), a draw entry's standing and the published draw. Each field calls the
one service method its REST route calls, checks input with the route's own pydantic model, and
answers the same (its errors carry the same problem type)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, TypeVar

import strawberry

from instock.drops import api, model
from instock.drops.model import draws as draw_model
from instock.drops.service import Admission, DropsService, Entry
from instock.platform.auth import STAFF, Principal, Role
from instock.platform.db import utcnow
from instock.platform.errors import ValidationFailed
from instock.platform.graphql import Info, correlation_id, parse, require
from instock.platform.http import customer_of


def service(info: Info) -> DropsService:
    svc: DropsService = info.context.state.drops
    return svc


@strawberry.type
class ScheduledDrop:
    """A drop as `GET /v1/drops/{id}` gives it."""

    id: str
    skus: list[str]
    starts_at: datetime
    mode: str = strawberry.field(description="first_come, queue or draw")
    admit_per_second: float
    admission: str = strawberry.field(description="fixed or capacity")
    max_admit_per_second: float | None
    current_admit_per_second: float = strawberry.field(description=(
        "what the room admits per second now (by capacity: as last measured)"))
    per_customer_limit: int | None
    channels: list[str]
    ends_at: datetime | None
    entries_close_at: datetime | None
    draw_winners: int | None
    claim_seconds: float
    created_at: datetime


def render(drop: model.Drop) -> ScheduledDrop:
    # A field for every drop here (a query names what it wants): a fixed-rate drop's admission
    # is "fixed" at its admit_per_second.
    return ScheduledDrop(**{**api.render(drop).model_dump(), "admission": drop.admission.value,
                            "current_admit_per_second": model.rate_at(drop, utcnow())})


@strawberry.input(description="as POST /v1/drops' body (the same rules, the same fields named)")
class DropInput:
    skus: list[str]
    starts_at: datetime
    mode: str = strawberry.field(description="first_come, queue or draw")
    admit_per_second: float | None = None
    admission: str | None = strawberry.field(default=None, description="fixed or capacity")
    max_admit_per_second: float | None = None
    per_customer_limit: int | None = None
    channels: list[str] | None = None
    ends_at: datetime | None = None
    entries_close_at: datetime | None = None
    draw_winners: int | None = None
    claim_seconds: float | None = None


@strawberry.type
class DropTicket:
    ticket: str = strawberry.field(description="signed: show it to ask for the standing")
    position: int


@strawberry.type
class DropStanding:
    """A ticket's standing as `GET /v1/drops/{id}/tickets/{ticket}` gives it."""

    position: int
    admitted: bool
    drop_pass: str | None = strawberry.field(description=(
        "when admitted: the pass `reserve(dropPass:)` (or the Drop-Pass header) takes"))
    sold_out: bool
    wait_seconds: float
    held_for_review: bool


@strawberry.type
class DropWaitlistOffer:
    href: str
    method: str
    skus: list[str]


@strawberry.type
class DropLiveStanding:
    """A `standing` event of the SSE stream: never the pass (ask `dropTicket` for it)."""

    position: int = strawberry.field(description="those still ahead: 1 is next, 0 once reached")
    admitted: bool
    sold_out: bool
    wait_seconds: float
    held_for_review: bool
    waitlist: DropWaitlistOffer | None = strawberry.field(description=(
        "once sold out: join the drop's SKUs' waitlist"))


@strawberry.type
class DrawEntry:
    entry: str
    status: str = strawberry.field(description="waiting, won, lost, expired or held")
    rank: int | None = strawberry.field(description="its place in the draw's order, once a "
                                                    "right reached it")
    drop_pass: str | None = strawberry.field(description=(
        "while the right is open: the pass `reserve(dropPass:)` takes"))
    claim_until: datetime | None
    claimed: bool


@strawberry.type
class DrawEntered:
    """An entry as POST /v1/drops/{id}/entries answers it."""

    entry: str = strawberry.field(description="the entry's id: ask `drawEntry` after the draw")
    held_for_review: bool = strawberry.field(description="the bot scoring held it: not drawn")


@strawberry.type
class DropDraw:
    drop_id: str
    seed: str
    drawn_at: datetime
    algorithm: str
    slots: int
    entries: list[str]
    winners: list[str]
    order: list[str]


def _ticket(ticket: str) -> str:
    """REST's bound on the ticket in its path (longer is no ticket we signed)."""
    if not 1 <= len(ticket) <= api.TICKET_MAX:
        raise ValidationFailed("ticket", f"give between 1 and {api.TICKET_MAX} characters")
    return ticket


def _standing(admission: Admission) -> DropStanding:
    standing = admission.standing
    return DropStanding(position=standing.position, admitted=standing.admitted,
                        drop_pass=admission.admission_pass, sold_out=standing.sold_out,
                        wait_seconds=round(standing.wait_seconds, 3),
                        held_for_review=admission.held_for_review)


def _live(view: model.Live, drop: model.Drop) -> DropLiveStanding:
    offer = api.waitlist_offer(view, drop)
    return DropLiveStanding(position=view.position, admitted=view.admitted,
                            sold_out=view.sold_out, wait_seconds=round(view.wait_seconds, 3),
                            held_for_review=view.held_for_review,
                            waitlist=None if offer is None else DropWaitlistOffer(**offer))


@strawberry.type
class DropsQuery:
    @strawberry.field(description="a drop (GET /v1/drops/{id})")
    async def drop(self, info: Info, id: str) -> ScheduledDrop:
        require(info, *STAFF, Role.CUSTOMER)
        return render(await service(info).get(id))

    @strawberry.field(description=(
        "a waiting-room ticket's standing now, with a fresh pass once admitted (the ticket's "
        "customer, or staff acting for them); a forged or expired ticket is VALIDATION_ERROR "
        "`drop-ticket-invalid`"))
    async def drop_ticket(self, info: Info, drop_id: str, ticket: str) -> DropStanding:
        principal = require(info, *api.SHOPPER_ROLES)
        return _standing(await service(info).admission(drop_id, _ticket(ticket),
                                                       principal.assert_acts_for))

    @strawberry.field(description="a draw entry's standing now (the entrant, or staff)")
    async def draw_entry(self, info: Info, drop_id: str, entry_id: str) -> DrawEntry:
        principal = require(info, *api.SHOPPER_ROLES)
        got = await service(info).draws.standing(drop_id, entry_id, principal.assert_acts_for)
        return DrawEntry(entry=got.entry_id, status=got.status.value, rank=got.rank,
                         drop_pass=got.admission_pass, claim_until=got.claim_until,
                         claimed=got.claimed)

    @strawberry.field(description="the published draw: seed, entries and order, for anyone to "
                                  "re-compute (`algorithm`); refused before the draw")
    async def drop_draw(self, info: Info, drop_id: str) -> DropDraw:
        require(info, *STAFF, Role.CUSTOMER)
        drawn = await service(info).draws.published(drop_id)
        return DropDraw(drop_id=drawn.drop_id, seed=drawn.seed, drawn_at=drawn.drawn_at,
                        algorithm=draw_model.DRAW_ALGORITHM, slots=drawn.slots,
                        entries=drawn.entries, winners=drawn.winners, order=drawn.order)


@strawberry.type
class DropsMutation:
    @strawberry.mutation(description=(
        "merchandisers: schedule a drop (POST /v1/drops): its SKUs cannot be reserved before "
        "`startsAt`; CONFLICT when a SKU is in another live drop"))
    async def schedule_drop(self, info: Info, input: DropInput) -> ScheduledDrop:
        principal = require(info, Role.MERCHANDISER)
        given: dict[str, Any] = {k: v for k, v in vars(input).items() if v is not None}
        body = parse(api.DropIn, given)
        return render(await service(info).schedule(api.drop_of(body, principal),
                                                    correlation_id(info)))

    @strawberry.mutation(description=(
        "a place in a queue drop's waiting room (POST /v1/drops/{id}/tickets), scored for bots "
        "as there: send the solved challenge of GET /v1/drops/{id}/challenge; refused is "
        "FORBIDDEN `drop-entry-refused` with the rules it tripped"))
    async def take_drop_ticket(self, info: Info, drop_id: str, customer_id: str | None = None,
                               challenge: str | None = None, solution: str | None = None,
                               fingerprint: str | None = None) -> DropTicket:
        principal = require(info, *api.SHOPPER_ROLES)
        body = _body(api.TicketIn, customer_id=customer_id, challenge=challenge,
                     solution=solution, fingerprint=fingerprint)
        taken = await service(info).take_ticket(drop_id, customer_of(principal, body.customer_id),
                                                _scored(info, principal, body))
        return DropTicket(ticket=taken.token, position=taken.position)

    @strawberry.mutation(description=(
        "enter a draw drop while its entries are open (POST /v1/drops/{id}/entries): one entry "
        "per customer (asking again gives the same) and per fingerprint (another customer's is "
        "CONFLICT `drop-entry-duplicate`); scored for bots as a ticket is (refused is FORBIDDEN "
        "`drop-entry-refused`); after the close, CONFLICT `drop-entries-closed`"))
    async def enter_draw(self, info: Info, drop_id: str, customer_id: str | None = None,
                         challenge: str | None = None, solution: str | None = None,
                         fingerprint: str | None = None) -> DrawEntered:
        principal = require(info, *api.SHOPPER_ROLES)
        body = _body(api.EntryIn, customer_id=customer_id, challenge=challenge,
                     solution=solution, fingerprint=fingerprint)
        entered = await service(info).draws.enter(
            drop_id, customer_of(principal, body.customer_id), _scored(info, principal, body))
        return DrawEntered(entry=entered.entry_id, held_for_review=entered.held_for_review)


In = TypeVar("In", bound=api.TicketIn)


def _body(model_: type[In], **given: str | None) -> In:
    """The arguments checked by the REST route's own body model (the same fields named)."""
    return parse(model_, {k: v for k, v in given.items() if v is not None})


def _scored(info: Info, principal: Principal, body: api.TicketIn) -> Entry:
    """What the bot scoring reads of the request the operation came in (HTTP, or the
    WebSocket's handshake), exactly as the REST route reads it."""
    request = info.context.request
    assert request is not None  # an operation comes over HTTP or a WebSocket
    return api.scored(request, principal, body)


@strawberry.type
class DropsSubscription:
    @strawberry.subscription(description=(
        "a ticket's standing, live: the same `standing` events as GET "
        "/v1/drops/{id}/tickets/{ticket}/events (now, on each move worth telling, at admission "
        "and at a sell-out), for as long as the client stays. The signed ticket is the "
        "credential, so no pass is sent: ask `dropTicket` for it once admitted"))
    async def drop_standing(self, info: Info, drop_id: str, ticket: str,
                            ) -> AsyncGenerator[DropLiveStanding, None]:
        watcher = await service(info).watch(drop_id, _ticket(ticket))
        heartbeat: float = info.context.state.settings.live_heartbeat_seconds
        try:
            while True:
                view = await watcher.next(heartbeat)
                if view is not None:
                    yield _live(view, watcher.drop)
        finally:
            watcher.close()
