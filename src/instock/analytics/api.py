"""Analytics routes: a SKU's sales velocity, cover and projected stock-out, for staff."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from instock.analytics.service import AnalyticsService
from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses

router = APIRouter(tags=["analytics"], responses=problem_responses(401, 403, 404, 422))
STAFF = requires(Role.MERCHANDISER, Role.INVENTORY, Role.FULFILMENT, Role.SUPPORT, Role.SERVICE)


async def service(request: Request) -> AnalyticsService:
    svc: AnalyticsService = request.app.state.analytics
    return svc


class Conversion(BaseModel):
    views: int
    carts: int
    orders: int = Field(description="units sold")
    view_to_cart: float | None
    cart_to_order: float | None


class SkuAnalytics(BaseModel):
    sku: str
    as_of: datetime
    available: int = Field(description="what the SKU's locations can sell now, as analytics "
                                       "has folded the ledger (within seconds of inventory)")
    sold_7d: int
    sold_28d: int
    velocity_7d: float = Field(description="units sold per day in stock over the last 7 days "
                                           "(today's sales included); time out of stock is "
                                           "left out, and less than a day in stock counts as "
                                           "one day")
    velocity_28d: float = Field(description="the same over 28 days")
    velocity_28d_interval: list[float] = Field(description="90 % interval of velocity_28d "
                                                           "(sales as a Poisson count)")
    in_stock_share_7d: float
    in_stock_share_28d: float = Field(description="share of the last 28 days the SKU could be "
                                                  "bought somewhere")
    days_of_cover: float | None = Field(description="available ÷ velocity_28d; null when "
                                                    "nothing sells")
    days_of_cover_interval: list[float | None]
    stockout_on: date | None = Field(description="the day the stock runs out at velocity_28d "
                                                 "(the day it sold out, if it is out)")
    sell_through_28d: float | None = Field(description="sold ÷ (sold + available) over 28 days")
    conversion_28d: Conversion
    counts_28d: dict[str, int] = Field(description="every fact counter summed over 28 days")


@router.get("/v1/analytics/skus/{sku}", response_model=SkuAnalytics)
async def sku_analytics(sku: str, _: Principal = Depends(STAFF),
                        analytics: AnalyticsService = Depends(service)) -> SkuAnalytics:
    """A SKU's sales velocity (time out of stock excluded), days of cover with an interval,
    projected stock-out date, sell-through and conversion, from the hourly facts."""
    return SkuAnalytics.model_validate(await analytics.sku(sku))


class AfterSellOut(BaseModel):
    refused_units: int = Field(description="units asked for in reservations refused")
    waitlist_joins: int


class Drop(BaseModel):
    started_at: datetime = Field(description="when the SKU came into stock")
    sold_out_at: datetime | None = Field(description="when nothing was left to sell (null: "
                                                     "still selling)")
    units: int = Field(description="what there was to sell: the available units when it "
                                   "came into stock, plus any received while it sold")
    minutes_to: dict[str, float | None] = Field(
        description='minutes from `started_at` until 25, 50, 75 and 100 % of the units were '
                    'reserved ("25", "50", "75", "100"; null: not reached)')
    after_sell_out: AfterSellOut | None = Field(
        default=None, description="demand it could not meet once sold out (until it came "
                                  "back or now, by the hour); null while it still sells")


class SizeAnalytics(SkuAnalytics):
    attributes: dict[str, str] = Field(description="the variant's attributes, e.g. its size")
    last_drop: Drop | None = Field(description="its latest in-stock period's sell-out curve")


class ProductAnalytics(BaseModel):
    product_id: str
    as_of: datetime
    skus: list[SizeAnalytics] = Field(description="each variant (size) that has had stock")
    sold_7d: int
    sold_28d: int
    available: int
    size_curve: dict[str, float | None] = Field(
        description="each SKU's share of the product's units sold in 28 days")


class Drops(BaseModel):
    sku: str
    drops: list[Drop] = Field(description="the latest in-stock periods, newest first")


class DaysIn(BaseModel):
    days: int = Field(28, ge=7, le=365, description="how many days, today the last")


class SalesDay(BaseModel):
    day: date
    sold: int
    in_stock_share: float = Field(description="share of the day the SKU could be bought")


@router.get("/v1/analytics/skus/{sku}/days", response_model=list[SalesDay])
async def sales_days(sku: str, params: Annotated[DaysIn, Query()],
                     _: Principal = Depends(STAFF),
                     analytics: AnalyticsService = Depends(service)) -> list[SalesDay]:
    """The SKU's units sold and share of time in stock, day by day (UTC)."""
    return [SalesDay.model_validate(d) for d in await analytics.days(sku, params.days)]


@router.get("/v1/analytics/drops/{sku}", response_model=Drops)
async def drop_curves(sku: str, _: Principal = Depends(STAFF),
                      analytics: AnalyticsService = Depends(service)) -> Drops:
    """How fast the SKU sold out each time it came into stock: its sell-out curve."""
    return Drops(sku=sku, drops=[Drop.model_validate(d) for d in await analytics.drops(sku)])


@router.get("/v1/analytics/products/{product_id}", response_model=ProductAnalytics)
async def product_analytics(product_id: str, _: Principal = Depends(STAFF),
                            analytics: AnalyticsService = Depends(service)) -> ProductAnalytics:
    """A product's sizes side by side: each one's measures and latest drop, the totals, and
    the size curve of its sales."""
    return ProductAnalytics.model_validate(await analytics.product(product_id))


class Replenishment(BaseModel):
    sku: str
    available: int
    incoming: int = Field(description="units on order (the incoming bucket)")
    velocity_28d: float
    days_of_cover: float | None
    stockout_on: date | None
    reorder_point: float = Field(description="order when available + incoming falls to this: "
                                             "lead-time demand plus safety stock")
    order_quantity: int = Field(description="units to order now (up to the order-up-to level "
                                            "for lead time + review period)")


class ReorderLists(BaseModel):
    as_of: datetime
    lead_time_days: float
    review_days: float
    service_level: float
    overstock_days: float
    reorder: list[Replenishment] = Field(description="to order now, least cover first")
    low_cover: list[Replenishment] = Field(description="runs out before an order placed now "
                                                       "arrives (cover below the lead time)")
    overstock: list[Replenishment] = Field(description="more cover than overstock_days, or "
                                                       "nothing sold in 28 days; most first")


class ReorderIn(BaseModel):
    """How to reorder: the same rules for REST's query and GraphQL's arguments."""

    lead_time_days: float = Field(7, ge=0, le=365, description="days an order takes to arrive")
    review_days: float = Field(7, ge=0, le=365, description="days between orders")
    service_level: float = Field(0.95, gt=0.5, lt=1, description="chance of no stock-out "
                                                                 "before an order arrives")
    overstock_days: float = Field(120, gt=0, description="more cover than this is overstock")
    limit: int = Field(100, ge=1, le=1000, description="entries per list")


@router.get("/v1/analytics/reorder", response_model=ReorderLists)
async def reorder_lists(params: Annotated[ReorderIn, Query()], _: Principal = Depends(STAFF),
                        analytics: AnalyticsService = Depends(service)) -> ReorderLists:
    """What to reorder now, what runs out before a reorder could arrive, and what is
    overstocked, from every SKU's 28-day velocity in stock (demand as a Poisson count)."""
    return ReorderLists.model_validate(await analytics.reorder(**params.model_dump()))


class SizeCurveIn(BaseModel):
    units: int = Field(ge=1, le=10_000_000, description="units of the next drop to split")
    poll_id: str | None = Field(default=None, min_length=1,
                                description="a poll whose answers name sizes")
    drops: int = Field(3, ge=1, le=20, description="past drops of each size to look at")


class SizeShare(BaseModel):
    size: str = Field(description="the variant's `size` attribute (its SKU without one)")
    past_demand: int = Field(description="units wanted in its past drops: sold, then refused "
                                         "or waited for after it sold out")
    poll_answers: int
    share: float
    units: int


class SizeCurve(BaseModel):
    product_id: str
    units: int
    drops_looked_at: int
    poll_id: str | None
    poll_respondents: int
    sizes: list[SizeShare] = Field(description="each unit wanted and each answer counts once; "
                                               "whole units that add up to `units`")


@router.get("/v1/analytics/products/{product_id}/size-curve", response_model=SizeCurve)
async def size_curve(product_id: str, params: Annotated[SizeCurveIn, Query()],
                     _: Principal = Depends(STAFF),
                     analytics: AnalyticsService = Depends(service)) -> SizeCurve:
    """How to split the next drop's units over the product's sizes, from how its past drops
    sold out (and the demand refused after) and, if given, a poll's answers."""
    return SizeCurve.model_validate(await analytics.size_curve(
        product_id, params.units, params.poll_id, params.drops))
