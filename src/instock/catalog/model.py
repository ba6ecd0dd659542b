"""The catalog domain, pure: products, their variants, and bundles (kits) of component SKUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from instock.catalog.events import ProductCreated, ProductEvent


class CatalogError(Exception):
    """A catalog rule was broken; `field` names the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Variant:
    sku: str
    attributes: dict[str, str] = field(default_factory=dict)
    # A variant with components is a bundle: a virtual SKU made of other SKUs.
    components: dict[str, int] = field(default_factory=dict)

    @property
    def is_bundle(self) -> bool:
        return bool(self.components)


@dataclass
class Product:
    id: str
    title: str
    brand: str
    category: str
    price: Decimal
    currency: str
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    replenishable: bool = False
    events: list[ProductEvent] = field(default_factory=list, compare=False)

    @classmethod
    def create(cls, product: Product, known_bundles: set[str]) -> Product:
        """Validate a new product; `known_bundles` are existing SKUs that are bundles."""
        check_variants(product.variants, known_bundles)
        if product.price < 0:
            raise CatalogError("price", "must not be negative")
        product.events.append(ProductCreated(id=product.id, title=product.title,
                                             brand=product.brand, category=product.category,
                                             skus=[v.sku for v in product.variants]))
        return product


def check_variants(variants: list[Variant], known_bundles: set[str]) -> None:
    if not variants:
        raise CatalogError("variants", "a product needs at least one variant")
    skus = [v.sku for v in variants]
    if len(set(skus)) != len(skus):
        raise CatalogError("variants", "SKUs must be unique within a product")
    new_bundles = {v.sku for v in variants if v.is_bundle}
    for i, variant in enumerate(variants):
        for component, quantity in variant.components.items():
            where = f"variants[{i}].components.{component}"
            if component == variant.sku:
                raise CatalogError(where, "a bundle cannot contain itself")
            if component in new_bundles or component in known_bundles:
                raise CatalogError(where, "a bundle component cannot itself be a bundle")
            if quantity < 1:
                raise CatalogError(where, "quantity must be at least 1")
