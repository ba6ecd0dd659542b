"""The drop lane against a real database: concurrent reservations are group-committed, and the
outcome is exactly the one-after-the-other outcome in arrival order; the sold-out flag refuses
without the database and is cleared the moment stock returns."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instock.app import Container, build
from instock.inventory.errors import CustomerLimitExceeded, InsufficientStockConflict
from instock.inventory.model import Line, Reservation
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.entry_context import EntryContext
from instock.platform.errors import InstockError
from tests.integration.helpers import CTX, add_location, add_product, receive, stocked
from tests.support import REDIS_URL, make_settings

_skus = itertools.count()


@pytest.fixture
def c(container: Container) -> Container:
    return container


@dataclass(frozen=True)
class Ask:
    customer: int
    quantity: int
    key: int | None  # idempotency key, per customer

    def request(self, sku: str) -> tuple[ReserveRequest, EntryContext]:
        ctx = EntryContext(actor=f"buyer-{self.customer}",
                           idempotency_key=None if self.key is None else f"{sku}-{self.key}")
        return ReserveRequest([Line(sku, self.quantity)], customer_id=f"c{self.customer}"), ctx


def one_after_the_other(stock: int, limit: int | None, asks: list[Ask]) -> list[int | str]:
    """The oracle: each ask decided alone, in order. An int is the index of the ask whose
    reservation it got (itself, or an earlier one with the same key); a str is the refusal."""
    held: dict[int, int] = {}
    made: dict[tuple[int, int], int] = {}
    outcomes: list[int | str] = []
    for i, ask in enumerate(asks):
        if ask.key is not None and (ask.customer, ask.key) in made:
            outcomes.append(made[(ask.customer, ask.key)])
        elif ask.quantity > stock:
            outcomes.append("insufficient")
        elif limit is not None and held.get(ask.customer, 0) + ask.quantity > limit:
            outcomes.append("limit")
        else:
            stock -= ask.quantity
            held[ask.customer] = held.get(ask.customer, 0) + ask.quantity
            if ask.key is not None:
                made[(ask.customer, ask.key)] = i
            outcomes.append(i)
    return outcomes


async def burst(c: Container, sku: str, asks: list[Ask]) -> list[Reservation | InstockError]:
    """All asks at once: each enqueues in list order (nothing before the lane suspends)."""
    results = await asyncio.gather(*(c.inventory.reserve(*ask.request(sku)) for ask in asks),
                                   return_exceptions=True)
    for result in results:
        if not isinstance(result, Reservation | InsufficientStockConflict | CustomerLimitExceeded):
            raise AssertionError(f"unexpected outcome {result!r}")
    return results  # type: ignore[return-value]


def labelled(results: list[Reservation | InstockError]) -> list[int | str]:
    first_of: dict[str, int] = {}
    out: list[int | str] = []
    for i, result in enumerate(results):
        if isinstance(result, Reservation):
            out.append(first_of.setdefault(result.id, i))
        else:
            out.append("limit" if isinstance(result, CustomerLimitExceeded) else "insufficient")
    return out


asks_strategy = st.lists(st.builds(Ask, st.integers(0, 4), st.integers(1, 3),
                                   st.none() | st.integers(0, 2)), min_size=1, max_size=60)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stock=st.integers(0, 40), limit=st.none() | st.integers(1, 6), asks=asks_strategy,
       waves=st.integers(1, 3))
def test_a_burst_is_decided_exactly_as_one_after_the_other(
        database_url: str, tmp_path: Path, stock: int, limit: int | None, asks: list[Ask],
        waves: int) -> None:
    async def scenario() -> None:
        c = build(make_settings(database_url, tmp_path))
        try:
            sku = f"LANE-{next(_skus)}"
            await stocked(c, sku, stock) if stock else await add_product(c, f"p-{sku}", [sku])
            if limit is not None:
                await c.inventory.set_policy(sku, per_customer_limit=limit,
                                             low_stock_threshold=None)
            results: list[Reservation | InstockError] = []
            size = -(-len(asks) // waves)
            for start in range(0, len(asks), size):  # waves: later ones meet earlier commits
                results += await burst(c, sku, asks[start:start + size])
            assert labelled(results) == one_after_the_other(stock, limit, asks)
            view = await c.inventory.stock(sku)
            confirmed = {r.id: r for r in results if isinstance(r, Reservation)}
            assert view.totals.reserved == sum(r.lines[0].quantity for r in confirmed.values())
            assert (await c.inventory.audit()).problems == []
        finally:
            await c.close()

    asyncio.run(scenario())


async def test_one_batch_honours_limits_keys_bundles_and_lots(container: Container) -> None:
    c = container
    await add_location(c, "wh")
    await add_product(c, "tee", ["TEE", "CAP"], bundles={"KIT": {"TEE": 1, "CAP": 1}})
    await receive(c, "TEE", "wh", 10)
    await receive(c, "CAP", "wh", 5, lot="late", expires_on=date.today() + timedelta(days=90))
    await receive(c, "CAP", "wh", 2, lot="early", expires_on=date.today() + timedelta(days=30))
    await c.inventory.set_policy("TEE", per_customer_limit=2, low_stock_threshold=None)

    def ask(sku: str, qty: int, customer: str, key: str | None = None) -> asyncio.Future[object]:
        ctx = EntryContext(actor=customer, idempotency_key=key)
        return asyncio.ensure_future(c.inventory.reserve(
            ReserveRequest([Line(sku, qty)], customer_id=customer), ctx))

    # One lane per set of SKUs: TEE alone, CAP alone, and the kit (TEE + CAP) each batch.
    work = [ask("TEE", 1, "ann"), ask("TEE", 1, "ann"), ask("TEE", 1, "ann"),
            ask("CAP", 1, "bob", "same"), ask("CAP", 1, "bob", "same"),
            ask("KIT", 2, "cy"), ask("CAP", 3, "dee"), ask("KIT", 1, "eve")]
    out = await asyncio.gather(*work, return_exceptions=True)
    assert isinstance(out[0], Reservation) and isinstance(out[1], Reservation)
    assert isinstance(out[2], CustomerLimitExceeded)  # ann's third TEE: limit 2
    assert isinstance(out[3], Reservation) and out[4] == out[3]  # one key, one reservation
    assert all(isinstance(o, Reservation) for o in out[5:]), out[5:]
    made = {o.id: o for o in out if isinstance(o, Reservation)}
    caps = [a for r in made.values() for a in r.allocations if a.sku == "CAP"]
    assert sum(a.quantity for a in caps) == 1 + 2 + 3 + 1
    view = await c.inventory.stock("CAP")
    lots = {code: lot.buckets.reserved for code, lot in view.levels[0].lots.items()}
    assert lots == {"early": 2, "late": 5}  # first-expiry-first-out across the batch
    assert (await c.inventory.audit()).problems == []


async def test_sold_out_is_refused_from_the_flag_until_stock_returns(c: Container) -> None:
    await stocked(c, "HOT", 3)
    made = await asyncio.gather(*(c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), CTX)
                                  for _ in range(3)))
    assert await c.inventory.sold_out.raised(["HOT"]) == {"HOT"}
    transactions = c.inventory.stock_transactions
    with pytest.raises(InsufficientStockConflict) as refused:
        await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), CTX)
    assert refused.value.extensions["short"] == [{"sku": "HOT", "requested": 1, "available": 0}]
    assert c.inventory.stock_transactions == transactions  # the database was never asked
    await c.inventory.release(made[0].id, CTX)  # stock returns: the flag is cleared at once
    assert await c.inventory.sold_out.raised(["HOT"]) == set()
    assert isinstance(await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), CTX),
                      Reservation)


async def test_a_retry_with_its_key_still_gets_its_reservation_after_sell_out(
        c: Container) -> None:
    await stocked(c, "HOT", 1)
    ctx = EntryContext(actor="ann", idempotency_key="checkout-1")
    first = await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), ctx)
    assert await c.inventory.sold_out.raised(["HOT"]) == {"HOT"}
    again = await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), ctx)
    assert again.id == first.id


@pytest.mark.skipif(REDIS_URL is None, reason="needs INSTOCK_TEST_REDIS_URL")
async def test_processes_sharing_redis_see_each_others_sell_out_and_restock(
        database_url: str, tmp_path: Path) -> None:
    one, other = (build(make_settings(database_url, tmp_path / name, redis_url=REDIS_URL,
                                      sold_out_ttl_seconds=30))
                  for name in ("one", "other"))
    try:
        sku = f"SHARED-{next(_skus)}"
        await stocked(one, sku, 1)
        await one.inventory.reserve(ReserveRequest([Line(sku, 1)]), CTX)
        with pytest.raises(InsufficientStockConflict):
            await other.inventory.reserve(ReserveRequest([Line(sku, 1)]), CTX)
        assert other.inventory.stock_transactions == 0  # refused from Redis alone
        await receive(other, sku, "wh", 1)  # the other process restocks
        assert isinstance(await one.inventory.reserve(ReserveRequest([Line(sku, 1)]), CTX),
                          Reservation)  # and the first sees it at once, not after the ttl
    finally:
        await one.close()
        await other.close()


async def test_a_bundle_is_refused_by_its_sold_out_component(c: Container) -> None:
    await add_location(c, "wh")
    await add_product(c, "set", ["TOP", "HAT"], bundles={"SET": {"TOP": 1, "HAT": 1}})
    await receive(c, "TOP", "wh", 1)
    await receive(c, "HAT", "wh", 5)
    await c.inventory.reserve(ReserveRequest([Line("TOP", 1)]), CTX)  # TOP sells out
    transactions = c.inventory.stock_transactions
    with pytest.raises(InsufficientStockConflict) as refused:
        await c.inventory.reserve(ReserveRequest([Line("SET", 1), Line("HAT", 1)]), CTX)
    assert refused.value.extensions["short"] == [{"sku": "SET", "requested": 1, "available": 0}]
    assert c.inventory.stock_transactions == transactions
    assert isinstance(await c.inventory.reserve(ReserveRequest([Line("HAT", 2)]), CTX),
                      Reservation)  # the other component still sells


async def test_one_key_twice_in_a_flagged_batch_gets_its_reservation_both_times(
        c: Container) -> None:
    await stocked(c, "HOT", 1)
    ctx = EntryContext(actor="ann", idempotency_key="checkout-2")
    first = await c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), ctx)
    again = await asyncio.gather(*(c.inventory.reserve(ReserveRequest([Line("HOT", 1)]), ctx)
                                   for _ in range(3)))  # one batch, refused by the flag
    assert [r.id for r in again] == [first.id] * 3
