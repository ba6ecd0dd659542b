"""Events the recommendations context publishes: shoppers' behaviour, as it was recorded.

Every API process's recommender learns from them within a second (instock.platform.bus
listen), and the experiments attribute clicks, add-to-carts and purchases with them. Their
subject is the shopper: the customer id when known, else the session id.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from instock.platform.bus.envelope import DomainEvent

BehaviourType = Literal["view", "click", "add_to_cart", "purchase", "wishlist", "search",
                        "preference"]


class BehaviourRecorded(DomainEvent):
    """One behaviour event of a shopper (anonymous session, known customer, or both)."""

    type: ClassVar[str] = "behaviour.recorded.v1"
    event_id: str = Field(description="the id `POST /v1/events` answered with")
    kind: BehaviourType
    session_id: str | None
    customer_id: str | None
    product_id: str | None = Field(description="the product acted on (item events)")
    sku: str | None = Field(description="the variant acted on, when the shop knows it")
    query: str | None = Field(description="search text (search events)")
    attribute: str | None = Field(description="what a preference answer is about, e.g. brand")
    value: str | None = Field(description="the preference answer, e.g. the brand chosen")
    occurred_at: datetime

    @property
    def subject(self) -> str:
        return self.customer_id or self.session_id or self.event_id


class SessionMerged(DomainEvent):
    """An anonymous session logged in: its history now belongs to the customer."""

    type: ClassVar[str] = "behaviour.session_merged.v1"
    session_id: str
    customer_id: str

    @property
    def subject(self) -> str:
        return self.customer_id
