"""Events the catalog context publishes."""

from __future__ import annotations

from typing import ClassVar

from instock.platform.bus.outbox import DomainEvent


class ProductEvent(DomainEvent):
    id: str
    title: str
    brand: str
    category: str
    skus: list[str]

    @property
    def subject(self) -> str:
        return self.id


class ProductCreated(ProductEvent):
    type: ClassVar[str] = "product.created.v1"
