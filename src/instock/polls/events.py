"""Events the polls context publishes. An answer names the shopper by session and customer
ids (no contact data) and carries the product attributes its options map to, so
recommendations and customers act on it without reading polls' tables."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, Field

from instock.platform.bus.envelope import DomainEvent


class ChosenOption(BaseModel):
    question_id: str
    option_id: str


class StatedAttribute(BaseModel):
    attribute: str = Field(description="brand, category, colour, size or tag")
    value: str


class PollAnswered(DomainEvent):
    """A shopper answered a poll: the options chosen and what they say about the shopper."""

    type: ClassVar[str] = "poll.answered.v1"
    answer_id: str
    poll_id: str
    session_id: str | None
    customer_id: str | None
    choices: list[ChosenOption]
    attributes: list[StatedAttribute] = Field(
        description="the product attributes the chosen options map to, in answer order")
    answered_at: datetime

    @property
    def subject(self) -> str:
        """The answer's id: answers are independent of each other (no order among them)."""
        return self.answer_id
