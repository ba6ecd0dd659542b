"""Who is asking: a role, and the principal a verified token names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from instock.platform.errors import Forbidden


class Role(StrEnum):
    ADMIN = "admin"
    MERCHANDISER = "merchandiser"
    INVENTORY = "inventory"
    FULFILMENT = "fulfilment"
    SUPPORT = "support"
    SERVICE = "service"
    CUSTOMER = "customer"


STAFF = frozenset(Role) - {Role.CUSTOMER}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role

    @property
    def is_customer(self) -> bool:
        return self.role is Role.CUSTOMER

    def assert_acts_for(self, customer_id: str | None) -> None:
        """A customer may only act for itself; staff may act for anyone."""
        if self.is_customer and customer_id != self.subject:
            raise Forbidden("a customer may only act for itself")
