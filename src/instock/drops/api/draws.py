"""Draw routes: shoppers enter a draw drop; a merchandiser draws (or the worker at close);
anyone reads the published draw; entrants ask for their standing and pass."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BaseModel, Field

from instock.drops.api.common import (
    MERCHANDISERS,
    READERS,
    SHOPPERS,
    TicketIn,
    router,
    scored,
    service,
)
from instock.drops.draws import Published
from instock.drops.model import draws as draw_model
from instock.drops.service import DropsService
from instock.platform.auth import Principal
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId, customer_of
from instock.platform.telemetry import correlation_id

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
