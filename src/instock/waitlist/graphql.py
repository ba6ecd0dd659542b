"""The waitlist in GraphQL: join the wait for a sold-out SKU."""

from __future__ import annotations

import strawberry
from strawberry.experimental.pydantic import type as from_model

from instock.platform.graphql import Info, parse, require
from instock.platform.http import customer_of
from instock.waitlist import api
from instock.waitlist.service import WaitlistService


@from_model(model=api.EntryOut, all_fields=True)
class WaitlistEntry:
    pass


@strawberry.type
class WaitlistMutation:
    @strawberry.mutation(description="wait for a SKU: one notification when it is back")
    async def join_waitlist(self, info: Info, sku: str,
                            customer_id: str | None = None) -> WaitlistEntry:
        principal = require(info, *api.MEMBER_ROLES)
        body = parse(api.JoinIn, {"sku": sku, "customer_id": customer_id})
        waitlist: WaitlistService = info.context.state.waitlist
        entry = await waitlist.join(body.sku, customer_of(principal, body.customer_id))
        return WaitlistEntry.from_pydantic(api.render_entry(entry))
