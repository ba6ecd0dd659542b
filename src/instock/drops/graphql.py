"""Draws in GraphQL: an entry's standing (with its pass while a right is open) and the published
draw, the same answers as REST's (one service method each). Entering stays on REST, where the
bot scoring reads the shopper's own request."""

from __future__ import annotations

from datetime import datetime

import strawberry

from instock.drops import api, model
from instock.drops.service import DropsService
from instock.platform.auth import STAFF, Role
from instock.platform.graphql import Info, require


def service(info: Info) -> DropsService:
    svc: DropsService = info.context.state.drops
    return svc


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
class DropDraw:
    drop_id: str
    seed: str
    drawn_at: datetime
    algorithm: str
    slots: int
    entries: list[str]
    winners: list[str]
    order: list[str]


@strawberry.type
class DropsQuery:
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
                        algorithm=model.DRAW_ALGORITHM, slots=drawn.slots,
                        entries=drawn.entries, winners=drawn.winners, order=drawn.order)
