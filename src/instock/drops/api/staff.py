"""Staff routes: every live drop with its room's figures (the ops console), and review of the
asks the bot scoring held."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, Field

from instock.drops.api.common import (
    DropOut,
    render,
    router,
    service,
)
from instock.drops.bots import Decision
from instock.drops.review import HeldAsk
from instock.drops.service import DropsService
from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId

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
