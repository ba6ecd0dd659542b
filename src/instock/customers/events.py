"""Events the customers context publishes. None carries personal data (email, phone, name):
events travel to the bus, consumers and webhooks, where no key can erase them."""

from __future__ import annotations

from typing import ClassVar

from instock.platform.bus.envelope import DomainEvent


class ProfileUpdated(DomainEvent):
    """A customer's profile changed: what recommendations and notifications may act on."""

    type: ClassVar[str] = "customer.profile_updated.v1"
    customer_id: str
    version: int
    sizes: dict[str, str]  # category -> size
    preferences: dict[str, str | int | float | bool | list[str]]
    consents: dict[str, bool]  # purpose -> granted now

    @property
    def subject(self) -> str:
        """The customer's id."""
        return self.customer_id

    @property
    def sequence(self) -> int | None:
        return self.version
