"""The catalogue in GraphQL: products with their variants, each variant's live stock.

Products are public here (a storefront shows them to anyone); a page of them costs a fixed
number of reads: one for the page's ids, one batch of products, one batch of stock per channel."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types.nodes import SelectedField

from instock.catalog.model import Product as ProductModel
from instock.catalog.model import Variant as VariantModel
from instock.catalog.service import CatalogService
from instock.inventory.graphql import (
    Stock,
    prefetch_stock,
    render_stock,
    stock_of,
    stock_ready,
)
from instock.platform.errors import NotFound, ValidationFailed
from instock.platform.graphql import Info, PageInfo, decode_cursor, encode_cursor, reusable

MAX_PAGE = 100
DEFAULT_CHANNEL = "web"


def stock_channels(info: Info) -> set[str | None]:
    """The channels this query asks its variants' stock for (fragments included)."""
    channels: set[str | None] = set()

    def walk(selections: Sequence[Any], in_variants: bool) -> None:
        for selection in selections:
            if isinstance(selection, SelectedField):
                if in_variants and selection.name == "stock":
                    channels.add(selection.arguments.get("channel", DEFAULT_CHANNEL))
                else:
                    walk(selection.selections, selection.name == "variants")
            else:  # a fragment spread or an inline fragment
                walk(selection.selections, in_variants)

    walk(info.selected_fields, False)
    return channels


async def with_stock(info: Info, products: Sequence[ProductModel]) -> list[object]:
    """Read the stock the query asks for of every variant of these products, in one go;
    returns what was read (see `prefetch_stock`)."""
    channels = stock_channels(info)
    if not channels:
        return []
    return list(await prefetch_stock(info, [v.sku for p in products for v in p.variants],
                                     channels))


def service(info: Info) -> CatalogService:
    svc: CatalogService = info.context.state.catalog
    return svc


async def product_of(info: Info, product_id: str) -> ProductModel | None:
    catalog = service(info)

    async def load(ids: Sequence[str]) -> list[ProductModel | None]:
        found = await catalog.get_products(ids, cached=True)
        return [found.get(i) for i in ids]

    return await info.context.loader("product", load).load(product_id)


@strawberry.type
class Component:
    sku: str
    quantity: int


@strawberry.type
class Variant:
    sku: str
    size: str | None = strawberry.field(description="the `size` attribute, when it has one")
    attributes: JSON
    components: list[Component] = strawberry.field(description="a bundle's parts")
    product_id: strawberry.Private[str]

    @strawberry.field(description="the product it is a variant of")
    async def product(self, info: Info) -> Product:
        found = await product_of(info, self.product_id)
        if found is None:
            raise NotFound(f"product {self.product_id} does not exist")
        return render_product(found)

    @strawberry.field(graphql_type=Stock | None,
                      description="what is left to sell, live (subscribe to `stockChanged`)")
    def stock(self, info: Info, channel: str | None = DEFAULT_CHANNEL) -> Any:
        # Resolved at once when the product's resolver read its variants' stock (the usual
        # case), else later through the loader.
        ready, view = stock_ready(info, self.sku, channel)
        if ready:
            return None if view is None else render_stock(view)
        return self._stock_later(info, channel)

    async def _stock_later(self, info: Info, channel: str | None) -> Stock | None:
        view = await stock_of(info, self.sku, channel)
        return None if view is None else render_stock(view)


def render_variant(variant: VariantModel, product_id: str) -> Variant:
    return Variant(sku=variant.sku, product_id=product_id, size=variant.attributes.get("size"),
                   attributes=JSON(dict(variant.attributes)),
                   components=[Component(sku=s, quantity=q)
                               for s, q in sorted(variant.components.items())])


@strawberry.type
class Product:
    id: strawberry.ID
    title: str
    brand: str
    category: str
    tags: list[str]
    attributes: JSON
    price: Decimal
    currency: str
    replenishable: bool
    version: int
    variants: list[Variant]


def render_product(product: ProductModel) -> Product:
    return Product(id=strawberry.ID(product.id), title=product.title, brand=product.brand,
                   category=product.category, tags=list(product.tags),
                   attributes=JSON(dict(product.attributes)), price=product.price,
                   currency=product.currency, replenishable=product.replenishable,
                   version=product.version,
                   variants=[render_variant(v, product.id) for v in product.variants])


@strawberry.type
class ProductEdge:
    cursor: str
    node: Product


@strawberry.type
class ProductConnection:
    edges: list[ProductEdge]
    page_info: PageInfo


@strawberry.input
class ProductFilter:
    brand: str | None = None
    category: str | None = None


@strawberry.type
class CatalogQuery:
    @strawberry.field
    async def product(self, info: Info, id: strawberry.ID) -> Product:
        found = await product_of(info, str(id))
        if found is None:
            raise NotFound(f"product {id} does not exist")
        stock = await with_stock(info, [found])
        # The same product and stock copies as last time: last time's completed answer.
        return reusable(info, (found, *stock), lambda: render_product(found))

    @strawberry.field(description=f"products in id order, {MAX_PAGE} at most a page")
    async def products(self, info: Info, first: int = 20, after: str | None = None,
                       filter: ProductFilter | None = None) -> ProductConnection:
        if not 1 <= first <= MAX_PAGE:
            raise ValidationFailed("first", f"must be between 1 and {MAX_PAGE}")
        catalog = service(info)
        ids = await catalog.list_product_ids(
            first + 1, decode_cursor("p", after), brand=filter.brand if filter else None,
            category=filter.category if filter else None)
        page = ids[:first]
        found = await catalog.get_products(page, cached=True)
        await with_stock(info, list(found.values()))
        edges = [ProductEdge(cursor=encode_cursor("p", i), node=render_product(found[i]))
                 for i in page if i in found]
        return ProductConnection(edges=edges, page_info=PageInfo(
            has_next_page=len(ids) > first, end_cursor=edges[-1].cursor if edges else None))
