"""Catalog HTTP routes: parse, authorise, call the service, render."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from instock.catalog.model import Product, ProductPatch, Variant
from instock.catalog.service import CatalogService
from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import ValidationFailed, problem_responses
from instock.platform.etags import etag, parse_if_match
from instock.platform.http import CallerId

router = APIRouter(prefix="/v1/products", tags=["catalog"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))

Text = Annotated[str, StringConstraints(min_length=1, max_length=300, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=120, strip_whitespace=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Price = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
Tags = Annotated[list[ShortText], Field(max_length=50)]


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
    tags: Tags = Field(default_factory=list)
    attributes: dict[ShortText, ShortText] = Field(default_factory=dict)
    price: Price
    currency: Currency | None = None
    replenishable: bool = False
    variants: list[VariantIn] = Field(min_length=1, max_length=200)


# The default of a PATCH field: never read (the handler takes only the fields the client
# sent), so the fields stay non-nullable and an explicit `null` is refused like any bad value.
LEFT_OUT: Any = None


def _patch_schema(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)  # LEFT_OUT is not a value a client may send
    schema["minProperties"] = 1  # an empty patch is refused: it is most likely a mistake


class ProductPatchIn(BaseModel):
    """Product-level fields to change; a field left out keeps its value. `tags` and
    `attributes` replace the whole list or map. Variants cannot be changed here."""

    # An unknown field (say `variants`) is a 422 naming it, not silently ignored.
    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)
    title: Text = LEFT_OUT
    brand: ShortText = LEFT_OUT
    category: ShortText = LEFT_OUT
    tags: Tags = LEFT_OUT
    attributes: dict[ShortText, ShortText] = LEFT_OUT
    price: Price = LEFT_OUT
    currency: Currency = LEFT_OUT
    replenishable: bool = LEFT_OUT


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
    version: int = Field(description="one more per change; also the ETag")
    variants: list[VariantOut]


def render(product: Product, response: Response) -> ProductOut:
    response.headers["ETag"] = etag(product.version)
    return ProductOut(
        id=product.id, title=product.title, brand=product.brand, category=product.category,
        tags=product.tags, attributes=product.attributes, price=product.price,
        currency=product.currency, replenishable=product.replenishable, version=product.version,
        variants=[VariantOut(sku=v.sku, attributes=v.attributes,
                             components=[ComponentIn(sku=c, quantity=q)
                                         for c, q in v.components.items()])
                  for v in product.variants])


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> CatalogService:
    svc: CatalogService = request.app.state.catalog
    return svc


@router.post("", status_code=201, response_model=ProductOut)
async def create_product(
    body: ProductIn, request: Request, response: Response,
    principal: Principal = Depends(requires(Role.MERCHANDISER)),
    catalog: CatalogService = Depends(service),
) -> ProductOut:
    product = Product(
        id=body.id, title=body.title, brand=body.brand, category=body.category,
        price=body.price, currency=body.currency or catalog.currency,
        tags=body.tags, attributes=body.attributes, replenishable=body.replenishable,
        variants=[Variant(v.sku, v.attributes, {c.sku: c.quantity for c in v.components})
                  for v in body.variants])
    created = await catalog.create_product(product, request.state.correlation_id)
    return render(created, response)


@router.get("/{product_id}", response_model=ProductOut)
async def get_product(
    product_id: str, response: Response,
    principal: Principal = Depends(requires(*STAFF, Role.CUSTOMER)),
    catalog: CatalogService = Depends(service),
) -> ProductOut:
    return render(await catalog.get_product(product_id), response)


@router.patch("/{product_id}", response_model=ProductOut, responses=problem_responses(412))
async def update_product(
    product_id: str, body: ProductPatchIn, request: Request, response: Response,
    if_match: str | None = Header(default=None),
    principal: Principal = Depends(requires(Role.MERCHANDISER)),
    catalog: CatalogService = Depends(service),
) -> ProductOut:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ValidationFailed("body", "name at least one field to change")
    updated = await catalog.update_product(product_id, ProductPatch(**changes),
                                           parse_if_match(if_match),
                                           request.state.correlation_id)
    return render(updated, response)
