"""Events the catalog context publishes.

Their subject is the product id and their sequence the product's version after the change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from instock.platform.bus.envelope import DomainEvent, event_types

# Fixed-point text ("100", "89.90"), never "1E+2": the exact amount, readable by any consumer.
Amount = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str),
                   Field(json_schema_extra={"pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
                         description="decimal amount as a string, e.g. \"89.90\"")]


class VariantData(BaseModel):
    """One SKU of the product with its own attributes (size, colour...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str
    attributes: dict[str, str] = Field(default_factory=dict)
    bundle: bool = Field(False, description="a virtual SKU made of other SKUs")


class ProductEvent(DomainEvent):
    """The product's state after the change (its variants as SKUs; bundles are SKUs too)."""

    id: str
    version: int = Field(description="the product's version after the change; also the "
                                     "envelope's sequence")
    title: str
    brand: str
    category: str
    tags: list[str]
    attributes: dict[str, str]
    price: Amount
    currency: str = Field(description="ISO 4217 code of `price`")
    replenishable: bool
    skus: list[str]
    variants: list[VariantData] = Field(
        default_factory=list, description="the SKUs with their attributes, in `skus` order")

    @property
    def subject(self) -> str:
        """The product id."""
        return self.id

    @property
    def sequence(self) -> int:
        return self.version


class ProductCreated(ProductEvent):
    """A product and its variants were added to the catalogue."""

    type: ClassVar[str] = "product.created.v1"


class ProductUpdated(ProductEvent):
    """Product-level fields changed (never its SKUs or bundle compositions)."""

    type: ClassVar[str] = "product.updated.v1"
    changed: list[str] = Field(description="names of the fields this change altered, sorted")


# Events whose subject is a product and whose sequence is its version after the change.
PRODUCT_EVENTS = event_types(ProductEvent)
