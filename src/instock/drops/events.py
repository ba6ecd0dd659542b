"""Events the drops context publishes. A scheduled drop is news to every API process: each
keeps a copy of which SKUs are in a drop (the reservation gate) and refreshes it on hearing one."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from instock.platform.bus.envelope import DomainEvent


class DropScheduled(DomainEvent):
    """A merchandiser scheduled a drop: from now on its SKUs are gated."""

    type: ClassVar[str] = "drop.scheduled.v1"
    drop_id: str
    skus: list[str]
    mode: str = Field(description="first_come, queue or draw")
    starts_at: datetime
    ends_at: datetime | None
    entries_close_at: datetime | None = Field(None, description=(
        "draw mode: when its entries close (the draw follows)"))
    admit_per_second: float = Field(description=(
        "queue mode: the rate it admits at (by capacity: the starting rate)"))
    admission: str = Field("fixed", description=(
        "queue mode: fixed (admit_per_second throughout) or capacity (measured checkout "
        "capacity decides the rate from the start on)"))
    max_admit_per_second: float | None = Field(None, description=(
        "admission by capacity: the most it admits per second (none: no ceiling of its own)"))
    per_customer_limit: int | None
    channels: list[str] = Field(description="the channels it sells on; empty: every channel")

    @property
    def subject(self) -> str:
        return self.drop_id


class DropWon(DomainEvent):
    """An entrant of a draw drop holds a right to reserve its SKUs until `claim_until`: drawn
    as a winner (`rank` within the winners), or reached when an earlier right lapsed unused.
    Notifications tells the customer; nobody else needs to act."""

    type: ClassVar[str] = "drop.won.v1"
    drop_id: str
    entry_id: str
    customer_id: str
    rank: int = Field(description="1-based place in the draw's order")
    rolled_over: bool = Field(description="reached by a rollover, not drawn among the first")
    skus: list[str]
    claim_until: datetime

    @property
    def subject(self) -> str:
        return self.drop_id
