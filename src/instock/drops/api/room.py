"""Drop routes: merchandisers schedule drops; shoppers (or the storefront's service acting for
them) take a place in a drop's waiting room and ask for their standing, which carries the pass
that reservations of the drop's SKUs require (`Drop-Pass` header on POST /v1/reservations), or
watch it live (SSE)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from instock.drops import model
from instock.drops.api.common import (
    MERCHANDISERS,
    READERS,
    SHOPPERS,
    DropIn,
    DropOut,
    TicketIn,
    TicketToken,
    drop_of,
    render,
    router,
    scored,
    service,
)
from instock.drops.room import Watcher
from instock.drops.service import DropsService
from instock.platform.auth import Principal
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId, customer_of
from instock.platform.sse import event_stream
from instock.platform.telemetry import correlation_id


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


@router.post("", status_code=201, response_model=DropOut, responses=problem_responses(409),
             response_model_exclude_unset=True)
async def schedule_drop(body: DropIn, request: Request,
                        principal: Principal = Depends(MERCHANDISERS),
                        drops: DropsService = Depends(service)) -> DropOut:
    """Schedule a drop: until `starts_at` its SKUs cannot be reserved; from then on `mode`
    decides who may. A SKU is in one live drop at a time (409 otherwise)."""
    return render(await drops.schedule(drop_of(body, principal), correlation_id(request)))


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
