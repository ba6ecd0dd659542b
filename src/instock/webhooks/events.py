"""Events the webhooks context publishes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from instock.platform.bus.envelope import DomainEvent


class SubscriptionEvent(DomainEvent):
    """An event about one webhook subscription."""

    subscription_id: str

    @property
    def subject(self) -> str:
        """The webhook subscription's id."""
        return self.subscription_id


class DeliveryDeadLettered(SubscriptionEvent):
    """A delivery failed every attempt and was given up on; it stays in the delivery log and
    can be sent again with `POST /v1/webhooks/deliveries/{id}/redeliver`. Never sent to the
    subscription it is about (a receiver that is down would feed itself)."""

    type: ClassVar[str] = "webhook.dead_lettered.v1"
    delivery_id: str
    url: str
    event_id: str = Field(description="the id of the event that could not be delivered")
    event_type: str
    attempts: int
    last_status_code: int | None = Field(description="the last answer's HTTP status, if any")
    last_error: str | None = Field(description="why the last attempt failed")


class Ping(SubscriptionEvent):
    """Sent by `POST /v1/webhooks/subscriptions/{id}/test` to that subscription alone, so a
    receiver can check its URL and its signature verification; it never passes the bus."""

    type: ClassVar[str] = "webhook.ping.v1"
    message: str = "ping from instock"
