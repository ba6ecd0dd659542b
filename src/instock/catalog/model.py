"""The catalog domain, pure: products, their variants, and bundles (kits) of component SKUs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from instock.catalog.events import (
    ProductCreated,
    ProductEvent,
    ProductUpdated,
    VariantData,
)


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
    # One more per change; 0 until created. The ETag, and the sequence of the product's events.
    version: int = 0
    events: list[ProductEvent] = field(default_factory=list, compare=False)

    @classmethod
    def create(cls, product: Product, known_bundles: set[str]) -> Product:
        """Validate a new product; `known_bundles` are existing SKUs that are bundles."""
        check_variants(product.variants, known_bundles)
        check_price(product.price)
        product.version = 1
        product.events.append(ProductCreated(**product._state()))
        return product

    def update(self, patch: ProductPatch) -> list[str]:
        """Apply the fields the patch sets; returns the names of those that changed.

        A patch that changes nothing is no change at all: no new version, no event.
        """
        if patch.price is not None:
            check_price(patch.price)
        changed = sorted(name for name, value in patch.values().items()
                         if getattr(self, name) != value)
        if not changed:
            return []
        for name in changed:
            setattr(self, name, getattr(patch, name))
        self.version += 1
        self.events.append(ProductUpdated(**self._state(), changed=changed))
        return changed

    def _state(self) -> dict[str, Any]:
        return dict(id=self.id, version=self.version, title=self.title, brand=self.brand,
                    category=self.category, tags=list(self.tags),
                    attributes=dict(self.attributes), price=self.price,
                    currency=self.currency, replenishable=self.replenishable,
                    skus=[v.sku for v in self.variants],
                    variants=[VariantData(sku=v.sku, attributes=dict(v.attributes),
                                          bundle=v.is_bundle) for v in self.variants])


@dataclass(frozen=True)
class ProductPatch:
    """Product-level fields to change; None leaves a field as it is. Variants (SKUs, bundle
    compositions) are not here on purpose: other contexts rely on them never changing."""

    title: str | None = None
    brand: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, str] | None = None
    price: Decimal | None = None
    currency: str | None = None
    replenishable: bool | None = None

    def values(self) -> dict[str, object]:
        """The fields the patch sets."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


def check_price(price: Decimal) -> None:
    if not price.is_finite():
        raise CatalogError("price", "must be a finite amount")
    if price < 0:
        raise CatalogError("price", "must not be negative")


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
