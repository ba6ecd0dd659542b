"""Catalog HTTP routes: parse, authorise, call the service, render."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StringConstraints

from instock.catalog.model import Product, Variant
from instock.catalog.service import CatalogService
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.ids import CALLER_ID_PATTERN

router = APIRouter(prefix="/v1/products", tags=["catalog"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))

CallerId = Annotated[str, StringConstraints(pattern=CALLER_ID_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]


class ComponentIn(BaseModel):
    sku: CallerId
    quantity: int = Field(ge=1, le=1000)


class VariantIn(BaseModel):
    sku: CallerId
    attributes: dict[ShortText, ShortText] = Field(default_factory=dict)
    components: list[ComponentIn] = Field(default_factory=list, max_length=50)


class ProductIn(BaseModel):
    id: CallerId
    title: Text
    brand: ShortText
    category: ShortText
    tags: list[ShortText] = Field(default_factory=list, max_length=50)
    attributes: dict[ShortText, ShortText] = Field(default_factory=dict)
    price: Decimal = Field(ge=0, max_digits=14, decimal_places=4)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    replenishable: bool = False
    variants: list[VariantIn] = Field(min_length=1, max_length=200)


class VariantOut(BaseModel):
    sku: str
    attributes: dict[str, str]
    components: list[ComponentIn]


class ProductOut(BaseModel):
    id: str
    title: str
    brand: str
    category: str
    tags: list[str]
    attributes: dict[str, str]
    price: Decimal
    currency: str
    replenishable: bool
    variants: list[VariantOut]


def render(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id, title=product.title, brand=product.brand, category=product.category,
        tags=product.tags, attributes=product.attributes, price=product.price,
        currency=product.currency, replenishable=product.replenishable,
        variants=[VariantOut(sku=v.sku, attributes=v.attributes,
                             components=[ComponentIn(sku=c, quantity=q)
                                         for c, q in v.components.items()])
                  for v in product.variants])


def service(request: Request) -> CatalogService:
    svc: CatalogService = request.app.state.catalog
    return svc


@router.post("", status_code=201, response_model=ProductOut)
async def create_product(
    body: ProductIn, request: Request,
    principal: Principal = Depends(requires(Role.MERCHANDISER)),
    catalog: CatalogService = Depends(service),
) -> ProductOut:
    product = Product(
        id=body.id, title=body.title, brand=body.brand, category=body.category,
        price=body.price, currency=body.currency or request.app.state.settings.currency,
        tags=body.tags, attributes=body.attributes, replenishable=body.replenishable,
        variants=[Variant(v.sku, v.attributes, {c.sku: c.quantity for c in v.components})
                  for v in body.variants])
    created = await catalog.create_product(product, request.state.correlation_id)
    return render(created)


@router.get("/{product_id}", response_model=ProductOut)
async def get_product(
    product_id: str,
    principal: Principal = Depends(requires(*STAFF, Role.CUSTOMER)),
    catalog: CatalogService = Depends(service),
) -> ProductOut:
    return render(await catalog.get_product(product_id))
