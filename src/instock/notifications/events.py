"""Events the notifications context publishes."""

from __future__ import annotations

from typing import ClassVar

from instock.platform.bus.envelope import DomainEvent


class NotificationDeadLettered(DomainEvent):
    """A notification could not be sent (attempts used up, a permanent provider failure or a
    template that does not render): staff may look at why. Carries no contact data."""

    type: ClassVar[str] = "notification.dead_lettered.v1"
    notification_id: str
    reason: str
    channel: str
    attempts: int
    error: str

    @property
    def subject(self) -> str:
        return self.notification_id
