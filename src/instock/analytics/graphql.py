"""Analytics in GraphQL, for staff: a SKU's velocity, cover and stock-out day, its drops'
sell-out curves, and the reorder lists, checked by the REST routes' own models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.experimental.pydantic import type as from_model

from instock.analytics import api
from instock.analytics.service import AnalyticsService
from instock.platform.graphql import Info, parse, require
from instock.platform.principal import Role

STAFF = (Role.MERCHANDISER, Role.INVENTORY, Role.FULFILMENT, Role.SUPPORT, Role.SERVICE)


def service(info: Info) -> AnalyticsService:
    require(info, *STAFF)
    svc: AnalyticsService = info.context.state.analytics
    return svc


# Named apart from the experiments' Conversion: two types of one name, and strawberry keeps
# one of them without a word (the ops console's experiment bars went blank).
@from_model(model=api.Conversion, all_fields=True, name="SalesConversion")
class SalesConversion:
    pass


@from_model(model=api.SkuAnalytics)
class SkuAnalytics:  # every field but counts_28d (a map, which GraphQL has no type for)
    sku: strawberry.auto
    as_of: strawberry.auto
    available: strawberry.auto
    sold_7d: strawberry.auto
    sold_28d: strawberry.auto
    velocity_7d: strawberry.auto
    velocity_28d: strawberry.auto
    velocity_28d_interval: strawberry.auto
    in_stock_share_7d: strawberry.auto
    in_stock_share_28d: strawberry.auto
    days_of_cover: strawberry.auto
    days_of_cover_interval: strawberry.auto
    stockout_on: strawberry.auto
    sell_through_28d: strawberry.auto
    conversion_28d: strawberry.auto


@strawberry.type(description="minutes from coming into stock until each share was reserved")
class SellOut:
    quarter: float | None
    half: float | None
    three_quarters: float | None
    all: float | None


@from_model(model=api.AfterSellOut, all_fields=True)
class AfterSellOut:
    pass


@strawberry.type
class Drop:
    started_at: datetime
    sold_out_at: datetime | None
    units: int
    minutes_to: SellOut
    after_sell_out: AfterSellOut | None = strawberry.field(
        description="demand it could not meet once sold out")


def _drop(doc: dict[str, Any]) -> Drop:
    minutes = doc["minutes_to"]
    after = doc.get("after_sell_out")
    return Drop(started_at=doc["started_at"], sold_out_at=doc["sold_out_at"], units=doc["units"],
                minutes_to=SellOut(quarter=minutes["25"], half=minutes["50"],
                                   three_quarters=minutes["75"], all=minutes["100"]),
                after_sell_out=AfterSellOut(**after) if after else None)


@from_model(model=api.SalesDay, all_fields=True)
class SalesDay:
    pass


@from_model(model=api.Replenishment, all_fields=True)
class Replenishment:
    pass


@strawberry.type
class ReorderLists:
    as_of: datetime
    reorder: list[Replenishment]
    low_cover: list[Replenishment]
    overstock: list[Replenishment]


def _rows(docs: list[dict[str, Any]]) -> list[Replenishment]:
    return [Replenishment.from_pydantic(api.Replenishment.model_validate(d)) for d in docs]


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(description="a SKU's sales velocity in stock, cover and stock-out day "
                                  "(GET /v1/analytics/skus/{sku})")
    async def sku_analytics(self, info: Info, sku: str) -> SkuAnalytics:
        found = api.SkuAnalytics.model_validate(await service(info).sku(sku))
        return SkuAnalytics.from_pydantic(found)

    @strawberry.field(description="the SKU's units sold and share in stock, day by day "
                                  "(GET /v1/analytics/skus/{sku}/days)")
    async def sales_days(self, info: Info, sku: str, days: int = 28) -> list[SalesDay]:
        analytics = service(info)
        params = parse(api.DaysIn, {"days": days})
        return [SalesDay.from_pydantic(api.SalesDay.model_validate(d))
                for d in await analytics.days(sku, params.days)]

    @strawberry.field(description="the SKU's latest in-stock periods, newest first, each with "
                                  "its sell-out curve")
    async def drop_curves(self, info: Info, sku: str) -> list[Drop]:
        return [_drop(d) for d in await service(info).drops(sku)]

    @strawberry.field(description="what to order now, low cover and overstock "
                                  "(GET /v1/analytics/reorder)")
    async def reorder_lists(self, info: Info, lead_time_days: float = 7,
                            review_days: float = 7, service_level: float = 0.95,
                            overstock_days: float = 120, limit: int = 20) -> ReorderLists:
        analytics = service(info)
        params = parse(api.ReorderIn, {
            "lead_time_days": lead_time_days, "review_days": review_days,
            "service_level": service_level, "overstock_days": overstock_days, "limit": limit})
        found = await analytics.reorder(**params.model_dump())
        return ReorderLists(as_of=found["as_of"], reorder=_rows(found["reorder"]),
                            low_cover=_rows(found["low_cover"]),
                            overstock=_rows(found["overstock"]))



