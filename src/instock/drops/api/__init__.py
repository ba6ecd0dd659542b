"""The drops context's HTTP routes, in one router: a drop and its waiting room (`room`), draws
(`draws`) and staff's views (`staff`); `common` holds what they and GraphQL share."""

from instock.drops.api import draws, room, staff
from instock.drops.api.common import (
    SHOPPER_ROLES,
    TICKET_MAX,
    DropIn,
    TicketIn,
    drop_of,
    render,
    router,
    scored,
)
from instock.drops.api.draws import EntryIn
from instock.drops.api.room import waitlist_offer

__all__ = ["SHOPPER_ROLES", "TICKET_MAX", "DropIn", "EntryIn", "TicketIn", "draws", "drop_of",
           "render", "room", "router", "scored", "staff", "waitlist_offer"]
