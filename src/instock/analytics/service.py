"""Analytics use cases: keep the facts from the event stream, rebuild them from the ledger and
the behaviour log, and read a SKU's measures.

The facts follow the ledger, not the events' contents: a stock change tells the consumer which
SKUs moved, and the ledger entries after the last version it folded (inventory's service) say
how. So a lost, repeated or reordered event changes nothing (the next one picks up the same
entries), and the live facts and a rebuild are the same fold of the same entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from instock.analytics import model, store
from instock.analytics.events import StockoutPredicted
from instock.analytics.model import DAY, NO_CHANNEL, NO_LOCATION, FactKey, Folded, Move, hour_of
from instock.catalog.service import CatalogService
from instock.inventory.events import BUNDLE_LOCATION, DemandRefused, StockChanged
from instock.inventory.model import LedgerEntry
from instock.inventory.service import InventoryService
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.db import Database, utcnow
from instock.platform.errors import NotFound
from instock.polls.service import PollsService
from instock.recommendations.events import BehaviourRecorded
from instock.recommendations.service import RecommendationsService
from instock.waitlist.events import WaitlistJoined

# Behaviour kinds counted, and the counter each adds to.
BEHAVIOUR = {"view": "views", "add_to_cart": "carts"}
REBUILD_CHUNK = 200  # SKUs folded per rebuild transaction

Progress = Callable[[str, int, int | None], None]


def move_of(entry: LedgerEntry, channels: dict[str, str]) -> Move:
    reference = entry.context.reference
    d = entry.delta
    return Move(entry.sku, entry.location, entry.version, entry.kind, entry.at,
                channels.get(reference, NO_CHANNEL) if reference else NO_CHANNEL,
                d.on_hand, d.reserved, d.committed, d.safety_stock, d.unsellable, d.incoming)


def _wanted(envelope: Envelope) -> bool:
    data = envelope["data"]
    if envelope["type"] == StockChanged.type:
        return bool(data.get("location") != BUNDLE_LOCATION)
    if envelope["type"] == BehaviourRecorded.type:
        return data.get("kind") in BEHAVIOUR and bool(data.get("sku"))
    return True


def _demand(envelope: Envelope) -> tuple[FactKey, dict[str, int]]:
    """The fact a demand event adds to: behaviour, refused reservations, waitlist joins."""
    data = envelope["data"]
    match envelope["type"]:
        case DemandRefused.type:
            at, counts = data["until"], {"refused": data["units"]}
        case WaitlistJoined.type:
            at, counts = data["joined_at"], {"waitlist_joins": 1}
        case _:
            at, counts = data["occurred_at"], {BEHAVIOUR[data["kind"]]: 1}
    return FactKey(data["sku"], NO_CHANNEL, NO_LOCATION, hour_of(datetime.fromisoformat(at))), \
        counts


class AnalyticsService:
    def __init__(self, db: Database, catalog: CatalogService, inventory: InventoryService,
                 recommendations: RecommendationsService, polls: PollsService) -> None:
        self.db = db
        self.catalog = catalog
        self.polls = polls
        self.inventory = inventory
        self.recommendations = recommendations
        self.partitions = store.Partitions()

    # -- the facts, kept live ------------------------------------------------------------------

    def consumer(self) -> ConsumerSpec:
        return ConsumerSpec("analytics", frozenset({
            StockChanged.type, BehaviourRecorded.type, DemandRefused.type, WaitlistJoined.type}),
            self._heard, ordered=False, wants=_wanted, finish=self._finish)

    async def _heard(self, conn: Any, envelope: Envelope) -> None:
        data = envelope["data"]
        if envelope["type"] == StockChanged.type:
            gathered("analytics.skus", set).add(data["sku"])
            return
        gathered("analytics.demand", Folded).add(*_demand(envelope))

    async def _finish(self, conn: Any) -> None:
        skus: set[str] = gathered("analytics.skus", set)
        folded = await self._fold(conn, skus) if skus else Folded()
        for key, counts in gathered("analytics.demand", Folded).facts.items():
            folded.add(key, counts)
        await self._write(conn, folded)

    async def _fold(self, conn: Any, skus: Iterable[str], *,
                    facts_from: datetime | None = None) -> Folded:
        """The SKUs' ledger entries not folded yet, folded (their rows locked first: two
        consumers of the same SKU must not both count the same entries)."""
        wanted = sorted(set(skus))
        await store.lock_skus(conn, wanted)
        levels = await store.load_levels(conn, wanted)
        entries, channels = await self.inventory.ledger_after(
            wanted, {key: level.version for key, level in levels.items()})
        return model.fold((move_of(e, channels) for e in entries), levels,
                          await store.open_periods(conn, wanted), facts_from=facts_from)

    async def _write(self, conn: Any, folded: Folded) -> None:
        await self.partitions.ensure(conn, {store.month_of(key.hour) for key in folded.facts})
        await store.add_facts(conn, folded.facts)
        await store.save_levels(conn, folded.levels)
        await store.save_periods(conn, folded.periods.values())

    # -- rebuilt from the sources --------------------------------------------------------------

    async def rebuild(self, since: datetime, progress: Progress | None = None) -> dict[str, int]:
        """The facts from `since` again, from the ledger (each SKU's whole ledger is folded to
        know its levels; facts before `since` stay) and the behaviour log. Safe beside the live
        consumer for the ledger's facts (a SKU is rebuilt under its lock); a view recorded
        while the rebuild reads the log may count twice, so rebuild views with the consumers
        idle or accept that."""
        since = hour_of(since)
        report = {"skus": 0, "entries": 0, "fact_rows": 0, "views_and_carts": 0}
        skus = await self._all_skus()
        for start in range(0, len(skus), REBUILD_CHUNK):
            chunk = skus[start:start + REBUILD_CHUNK]
            async with self.db.write() as conn:
                await store.lock_skus(conn, chunk)
                await store.forget(conn, chunk, since)
                folded = await self._fold(conn, chunk, facts_from=since)
                await self._write(conn, folded)
            report["skus"] += len(chunk)
            report["entries"] += sum(level.version for level in folded.levels.values())
            report["fact_rows"] += len(folded.facts)
            if progress:
                progress("ledger", report["skus"], len(skus))
        report["views_and_carts"] = await self._rebuild_behaviour(since, progress)
        return report

    async def _all_skus(self) -> list[str]:
        found: list[str] = []
        while batch := await self.inventory.stocked_skus_after(found[-1] if found else None,
                                                               1000):
            found += batch
        return found

    async def _rebuild_behaviour(self, since: datetime, progress: Progress | None) -> int:
        counted = Folded()
        seen = 0
        async for sku, kind, at in self.recommendations.item_actions_since(
                list(BEHAVIOUR), since):
            counted.add(FactKey(sku, NO_CHANNEL, NO_LOCATION, hour_of(at)), {BEHAVIOUR[kind]: 1})
            seen += 1
            if progress and seen % 10_000 == 0:
                progress("behaviour", seen, None)
        async with self.db.write() as conn:
            await store.forget_behaviour(conn, since)
            await self._write(conn, counted)
        return seen

    # -- retention -----------------------------------------------------------------------------

    async def keep_months(self, months: int, now: datetime | None = None) -> dict[str, list[str]]:
        """Partitions for this month and the next two, and none older than `months` months."""
        month = store.month_of(now or utcnow())
        ahead = [month, store.next_month(month), store.next_month(store.next_month(month))]
        oldest = month
        for _ in range(months):
            oldest = store.month_of(oldest - timedelta(days=1))
        async with self.db.write() as conn:
            created = await self.partitions.ensure(conn, ahead)
            dropped = await self.partitions.drop_before(conn, oldest)
        return {"created": created, "dropped": dropped}

    # -- reads ---------------------------------------------------------------------------------

    async def sku(self, sku: str, now: datetime | None = None) -> dict[str, Any]:
        """The SKU's measures as of `now`: velocity over 7 and 28 days in stock, cover,
        projected stock-out, sell-through, conversion."""
        async with self.db.read() as conn:
            found = await self._measures(conn, sku, now or utcnow())
        if found is None:
            raise NotFound(f"no stock history for SKU {sku!r}")
        return found

    async def product(self, product_id: str, now: datetime | None = None) -> dict[str, Any]:
        """Each variant's (size's) measures and latest drop, the product's totals, and its
        size curve: each size's share of the units sold in 28 days."""
        product = await self.catalog.get_product(product_id)
        now = now or utcnow()
        sizes: list[dict[str, Any]] = []
        async with self.db.read() as conn:
            for variant in (v for v in product.variants if not v.is_bundle):
                found = await self._measures(conn, variant.sku, now)
                if found is None:
                    continue
                latest = await store.last_periods(conn, variant.sku, 1)
                found["attributes"] = variant.attributes
                found["last_drop"] = _drop(latest[0]) if latest else None
                sizes.append(found)
        sold = sum(size["sold_28d"] for size in sizes)
        return {"product_id": product_id, "as_of": now, "skus": sizes,
                "sold_7d": sum(size["sold_7d"] for size in sizes), "sold_28d": sold,
                "available": sum(size["available"] for size in sizes),
                "size_curve": {size["sku"]: round(size["sold_28d"] / sold, 4) if sold else None
                               for size in sizes}}

    async def days(self, sku: str, days: int = 28,
                   now: datetime | None = None) -> list[dict[str, Any]]:
        """The SKU's last `days` days (today so far the last): units sold, share in stock."""
        now = now or utcnow()
        async with self.db.read() as conn:
            if not await store.load_levels(conn, [sku]):
                raise NotFound(f"no stock history for SKU {sku!r}")
            found = await self._days(conn, sku, days, now)
        return [{"day": d.day, "sold": d.sold, "in_stock_share": d.in_stock} for d in found]

    async def _days(self, conn: Any, sku: str, days: int, now: datetime) -> list[model.Day]:
        first = (now - (days - 1) * DAY).date()
        since = datetime(first.year, first.month, first.day, tzinfo=now.tzinfo)
        return model.days_of(first, now.date(), await store.sold_by_hour(conn, sku, since),
                             await store.periods_of(conn, sku, since), now)

    async def size_curve(self, product_id: str, units: int, poll_id: str | None = None,
                         drops: int = 3) -> dict[str, Any]:
        """How to split `units` of the product's next drop over its sizes: each size's demand
        in its last `drops` drops (sold, plus refused or waited for after it sold out), and,
        with `poll_id`, the poll's answers naming a size."""
        product = await self.catalog.get_product(product_id)
        sizes = {v.sku: v.attributes.get("size", v.sku) for v in product.variants
                 if not v.is_bundle}
        past: dict[str, int] = {}
        async with self.db.read() as conn:
            for sku, size in sizes.items():
                past[size] = past.get(size, 0) + await self._demand_in_drops(conn, sku, drops)
        poll: dict[str, int] = {}
        respondents = 0
        if poll_id is not None:
            found = await self.polls.results(poll_id)
            respondents = found.respondents
            poll = {size: share.count for size, share in found.attributes.get("size", {}).items()
                    if size in sizes.values()}
        order = list(dict.fromkeys(sizes.values()))
        curve = sorted(model.size_curve(past, poll, units), key=lambda s: order.index(s.size))
        return {"product_id": product_id, "units": units, "drops_looked_at": drops,
                "poll_id": poll_id, "poll_respondents": respondents,
                "sizes": [{"size": s.size, "past_demand": s.past_demand,
                           "poll_answers": s.poll_answers, "share": s.share, "units": s.units}
                          for s in curve]}

    async def _demand_in_drops(self, conn: Any, sku: str, drops: int) -> int:
        """Units the SKU's last `drops` in-stock periods were asked for: sold while they
        lasted, then refused or waited for until the next one (or now)."""
        periods = await store.last_periods(conn, sku, drops)
        wanted = 0
        # Newest first: each period's demand runs until the next (newer) one began.
        for period, following in zip(periods, [None, *periods][:len(periods)], strict=True):
            until = following.start if following else None
            found = await store.sums(conn, sku, hour_of(period.start), until)
            wanted += found["sold"] + found["refused"] + found["waitlist_joins"]
        return wanted

    async def _measures(self, conn: Any, sku: str, now: datetime) -> dict[str, Any] | None:
        levels = await store.load_levels(conn, [sku])
        if not levels:
            return None
        since_7, since_28 = now - 7 * DAY, now - 28 * DAY
        week = await store.sums(conn, sku, hour_of(since_7))
        month = await store.sums(conn, sku, hour_of(since_28))
        periods = await store.periods_of(conn, sku, since_28)
        return measures(sku, now, sum(level.available for level in levels.values()), week,
                        month, periods)

    async def report(self, sku: str, *, days: int = 56, horizon: int = 14,
                     lead_time_days: float = 7, review_days: float = 7,
                     service_level: float = 0.95, now: datetime | None = None
                     ) -> dict[str, Any]:
        """The SKU's measures, its last `days` days (sold, share in stock), a forecast of its
        daily demand for `horizon` days from the days it was in stock, and a reorder point and
        quantity (ordering every `review_days`) for `lead_time_days` at `service_level`."""
        from instock.analytics import forecast  # statsforecast: only where it is used

        now = now or utcnow()
        async with self.db.read() as conn:
            found = await self._measures(conn, sku, now)
            if found is None:
                raise NotFound(f"no stock history for SKU {sku!r}")
            history = await self._days(conn, sku, days, now)
        # Whole days only: today so far would read as a fall in demand.
        predicted = forecast.forecast_demand(model.demand_history(history[:-1]), horizon)
        mean, sd = predicted.cycle_mean, predicted.cycle_sd
        return {**found, "history": [
            {"day": d.day, "sold": d.sold, "in_stock_share": d.in_stock} for d in history],
            "forecast": {
                "model": predicted.model, "demand_class": predicted.demand_class,
                "daily_mean": round(mean, 4), "daily_sd": round(sd, 4),
                "days": [{"day": now.date() + timedelta(days=i + 1), "mean": round(float(m), 4),
                          "lower": float(lo), "upper": float(hi)} for i, (m, lo, hi) in
                         enumerate(zip(predicted.mean, predicted.lower, predicted.upper,
                                       strict=True))]},
            "reorder": {
                "lead_time_days": lead_time_days, "review_days": review_days,
                "service_level": service_level,
                "reorder_point": round(model.reorder_point(mean, sd, lead_time_days,
                                                           service_level), 2),
                "order_quantity": model.reorder_quantity(
                    mean, sd, lead_time_days, review_days, service_level,
                    found["available"])}}

    async def reorder(self, *, lead_time_days: float = 7, review_days: float = 7,
                      service_level: float = 0.95, overstock_days: float = 120,
                      limit: int = 100, now: datetime | None = None) -> dict[str, Any]:
        """Every SKU's replenishment, three lists: what to order now (inventory position at
        or below the reorder point, least cover first), low cover (runs out before an order
        placed now could arrive), and overstock (more than `overstock_days` of cover, or
        nothing sold in 28 days with stock to sell)."""
        now = now or utcnow()
        rows = await self._replenishments(now, lead_time_days, review_days, service_level)

        def by_cover(row: model.Replenishment) -> tuple[float, str]:
            return (math.inf if row.cover.days is None else row.cover.days, row.sku)

        rows.sort(key=by_cover)
        return {
            "as_of": now, "lead_time_days": lead_time_days, "review_days": review_days,
            "service_level": service_level, "overstock_days": overstock_days,
            "reorder": [_replenishment(r) for r in rows if r.order_quantity > 0][:limit],
            "low_cover": [_replenishment(r) for r in rows if r.cover.days is not None
                          and r.available > 0 and r.cover.days < lead_time_days][:limit],
            "overstock": [_replenishment(r) for r in reversed(rows) if r.available > 0 and (
                r.cover.days is None or r.cover.days > overstock_days)][:limit]}

    async def _replenishments(self, now: datetime, lead_time_days: float, review_days: float,
                              service_level: float) -> list[model.Replenishment]:
        since = now - 28 * DAY
        async with self.db.read() as conn:
            sold = await store.sold_by_sku(conn, hour_of(since))
            levels = await store.every_level(conn)
            periods = await store.periods_reaching(conn, since)
        return [model.replenishment(
            sku, sum(lv.available for lv in found), sum(lv.incoming for lv in found),
            model.velocity(sold.get(sku, 0),
                           model.in_stock_time(periods.get(sku, []), since, now)),
            now.date(), lead_time_days=lead_time_days, review_days=review_days,
            service_level=service_level) for sku, found in levels.items()]

    async def predict_stockouts(self, horizon_days: int = 14,
                                now: datetime | None = None) -> dict[str, int]:
        """Publish `inventory.stockout_predicted.v1` for each SKU that runs out (at its
        28-day velocity) before its next expected receipt, or within `horizon_days` with none
        expected; once per worsening, each with its standing alert in the same transaction."""
        now = now or utcnow()
        rows = [r for r in await self._replenishments(now, 7, 7, 0.95)
                if r.available > 0 and r.cover.stockout_on is not None]
        expected = await self.inventory.receipts_expected(r.sku for r in rows if r.incoming)
        receipts: dict[str, date] = {}
        for (sku, _), day in expected.items():
            receipts[sku] = min(day, receipts.get(sku, day))
        found = {r.sku: (r, alert) for r in rows if (alert := model.at_risk(
            r, receipts.get(r.sku) if r.incoming else None, now.date(), horizon_days))}
        async with self.db.write() as conn:
            standing = await store.alerted(conn)  # locked: one pass at a time publishes
            told = {sku: alert for sku, (_, alert) in found.items()
                    if model.worth_telling(standing.get(sku), alert)}
            await outbox.add(conn, [_predicted(found[sku][0], alert)
                                    for sku, alert in sorted(told.items())])
            await store.save_alerts(conn, told, now)
            await store.clear_alerts(conn, standing.keys() - found.keys())
        return {"at_risk": len(found), "published": len(told),
                "cleared": len(standing.keys() - found.keys())}

    async def drops(self, sku: str, limit: int = 10) -> list[dict[str, Any]]:
        """The SKU's latest in-stock periods, newest first, each with its sell-out curve: the
        minutes from going on sale to 25, 50, 75 and 100 % of its units reserved."""
        async with self.db.read() as conn:
            found = await store.last_periods(conn, sku, limit)
            if not found:
                raise NotFound(f"SKU {sku!r} has never been in stock")
            drops = []
            for period, following in zip(found, [None, *found[:-1]], strict=True):
                drop = _drop(period)
                if period.end is not None:  # until it came back, or until now
                    after = await store.sums(conn, sku, hour_of(period.end),
                                             following.start if following else None)
                    drop["after_sell_out"] = {"refused_units": after["refused"],
                                              "waitlist_joins": after["waitlist_joins"]}
                drops.append(drop)
        return drops


def measures(sku: str, now: datetime, available: int, week: dict[str, int],
             month: dict[str, int], periods: Sequence[model.Period]) -> dict[str, Any]:
    """The document of `GET /v1/analytics/skus/{sku}`."""
    in_7 = model.in_stock_time(periods, now - 7 * DAY, now)
    in_28 = model.in_stock_time(periods, now - 28 * DAY, now)
    v7 = model.velocity(week["sold"], in_7)
    v28 = model.velocity(month["sold"], in_28)
    last = periods[-1] if periods else None
    out_since = last.end if last is not None and last.end is not None else None
    cover = model.cover(available, v28, now.date(), out_since)
    return {
        "sku": sku, "as_of": now, "available": available,
        "sold_7d": week["sold"], "sold_28d": month["sold"],
        "velocity_7d": round(v7.per_day, 4), "velocity_28d": round(v28.per_day, 4),
        "velocity_28d_interval": [round(v28.low, 4), round(v28.high, 4)],
        "in_stock_share_7d": round(in_7 / (7 * DAY), 4),
        "in_stock_share_28d": round(in_28 / (28 * DAY), 4),
        "days_of_cover": _round(cover.days),
        "days_of_cover_interval": [_round(cover.low), _round(cover.high)],
        "stockout_on": cover.stockout_on,
        "sell_through_28d": _round(model.sell_through(month["sold"], available)),
        "conversion_28d": model.conversion(month["views"], month["carts"], month["sold"]),
        "counts_28d": month,
    }


def _drop(period: model.Period) -> dict[str, Any]:
    return {"started_at": period.start, "sold_out_at": period.end, "units": period.units,
            "minutes_to": period.minutes_to()}


def _predicted(row: model.Replenishment, alert: model.Alert) -> StockoutPredicted:
    assert row.cover.days is not None
    return StockoutPredicted(sku=row.sku, available=row.available, incoming=row.incoming,
                             velocity_28d=round(row.velocity.per_day, 4),
                             days_of_cover=round(row.cover.days, 4), stockout_on=alert[0],
                             receipt_on=alert[1])


def _replenishment(row: model.Replenishment) -> dict[str, Any]:
    return {"sku": row.sku, "available": row.available, "incoming": row.incoming,
            "velocity_28d": round(row.velocity.per_day, 4),
            "days_of_cover": _round(row.cover.days), "stockout_on": row.cover.stockout_on,
            "reorder_point": row.reorder_point, "order_quantity": row.order_quantity}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
