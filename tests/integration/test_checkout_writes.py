"""The checkout saga's writes, transaction by transaction (issue 17): the order adopts the holds
its reservation step made, and the saga stores that step done, in the transaction that records
the payment before the provider is asked, not in one of their own; a rerun after a crash in
between finds the reservation again and adopts it then. A checkout neither reads back the order
it placed nor the authorisation it stored: its steps start from what they wrote, conditionally
on it still being so, and read the row when someone else changed it. On a real database, paying
through the payment sandbox as a real process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from instock.app import Container, build
from instock.inventory.model import Line, ReservationStatus
from instock.orders.model import Order, OrderStatus, Saga, SagaStatus, Step
from instock.platform.db import Database
from tests.integration.helpers import counting, stocked
from tests.payment_sandbox import Sandbox, payment_sandbox
from tests.support import make_settings

SKU = "TEE-01"


@pytest.fixture(scope="module")
def running_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with payment_sandbox(tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture
async def c(database_url: str, tmp_path: Path, running_sandbox: Sandbox
            ) -> AsyncIterator[Container]:
    await running_sandbox.reset()
    container = build(make_settings(database_url, tmp_path, payment_provider="sandbox",
                                    payments_url=running_sandbox.url))
    await stocked(container, SKU, 5)
    yield container
    await container.close()


class Transactions:
    """The statements of each write transaction committed through `db`, in commit order."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine.sync_engine
        self.open: dict[int, list[str]] = {}
        self.committed: list[list[str]] = []

    def statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self.open.setdefault(id(conn), []).append(" ".join(statement.split()))

    def commit(self, conn: Any) -> None:
        self.committed.append(self.open.pop(id(conn), []))

    def __enter__(self) -> Transactions:
        sa.event.listen(self.engine, "before_cursor_execute", self.statement)
        sa.event.listen(self.engine, "commit", self.commit)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self.statement)
        sa.event.remove(self.engine, "commit", self.commit)

    def holding(self, start: str) -> list[list[str]]:
        return [tx for tx in self.committed if any(s.startswith(start) for s in tx)]


async def test_the_holds_are_adopted_with_the_payment_recorded_before_the_provider_call(
        c: Container, running_sandbox: Sandbox) -> None:
    with Transactions(c.db) as seen:
        order, saga = await c.orders.checkout(channel="web", customer_id="ann",
                                              lines=[Line(SKU, 2)])
    assert order.status is OrderStatus.PAID and saga.status is SagaStatus.COMPLETED
    [reservation_id] = order.reservation_ids
    assert (await c.inventory.get_reservation(reservation_id)).status is \
        ReservationStatus.COMMITTED
    assert await c.orders.holders({reservation_id}) == {reservation_id: (order.id,
                                                                         OrderStatus.PAID)}
    # The payment is recorded (pending) in one transaction with the order's adoption of its
    # holds and the saga's progress; no transaction adopts them alone.
    [recorded] = seen.holding("INSERT INTO payments")
    assert any(s.startswith("UPDATE orders") for s in recorded)
    assert any(s.startswith("INSERT INTO order_reservations") for s in recorded)
    assert any(s.startswith("UPDATE sagas") for s in recorded)
    adoptions = seen.holding("INSERT INTO order_reservations")
    assert adoptions == [recorded]
    stats = await running_sandbox.stats()
    assert (stats["intents_created"], stats["captures"]) == (1, 1)


class Crash(BaseException):
    """The process dies here: nothing after it runs (not an Exception: no step catches it)."""


async def test_a_rerun_after_the_reservation_finds_it_and_adopts_it(
        c: Container, database_url: str, tmp_path: Path, running_sandbox: Sandbox) -> None:
    """A crash right after the reservation step (its progress not stored yet): the saga, run
    again from its stored state by another process, gets the same reservation back, adopts it
    with the payment recorded, and the checkout completes."""
    steps = c.orders.runner._steps
    reserve = steps[Step.RESERVE]
    reached: list[str] = []

    async def reserve_then_crash(saga: Any) -> None:
        await reserve(saga)
        reached.extend(saga.data["reservation_ids"])
        raise Crash

    steps[Step.RESERVE] = reserve_then_crash
    with pytest.raises(Crash):
        await c.orders.checkout(channel="web", customer_id="bob", lines=[Line(SKU, 1)])
    steps[Step.RESERVE] = reserve
    [order] = await c.orders.find("bob", None)
    [stored] = await c.orders.sagas(order.id)
    assert stored.step is Step.RESERVE and order.reservation_ids == [] and len(reached) == 1

    # Another process takes the saga over once the dead one's lease has run out.
    async with c.db.write() as conn:
        await conn.execute(sa.text("UPDATE sagas SET lease_until = NULL WHERE id = :s"),
                           {"s": stored.id})
    other = build(make_settings(database_url, tmp_path / "other", payment_provider="sandbox",
                                payments_url=running_sandbox.url))
    try:
        done = await other.orders.runner.drive(stored.id)
    finally:
        await other.close()
    assert done.status is SagaStatus.COMPLETED
    paid = await c.orders.get(order.id)
    assert paid.status is OrderStatus.PAID and paid.reservation_ids == reached
    reservation = await c.inventory.get_reservation(reached[0])
    assert reservation.status is ReservationStatus.COMMITTED
    assert (await c.inventory.stock(SKU)).totals.committed == 1


def _reads_of(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if " ".join(s.split()).startswith("SELECT")
            and f" FROM {table} " in f"{' '.join(s.split())} "]


async def test_a_checkout_reads_back_neither_its_order_nor_its_payment(c: Container) -> None:
    with counting(c.db) as seen:
        order, saga = await c.orders.checkout(channel="web", customer_id="cy",
                                              lines=[Line(SKU, 1)])
    assert order.status is OrderStatus.PAID and saga.status is SagaStatus.COMPLETED
    assert _reads_of(seen, "orders") == [] and _reads_of(seen, "payments") == []
    # The answer is the order as stored.
    assert order == await c.orders.get(order.id)
    payment = await c.payments.get(str(order.payment_id))
    assert payment.status.value == "captured" and payment.amount_captured == order.total


async def _checkout_meddled(c: Container, customer: str, statement: str,
                            params: Callable[[Any], dict[str, Any]]
                            ) -> tuple[Order, Saga, list[str]]:
    """A checkout during which someone else runs `statement` (its `params` from the saga)
    right after the commit step: the order, the saga and the statements the checkout sent."""
    steps = c.orders.runner._steps
    commit = steps[Step.COMMIT]

    async def commit_then_meddle(saga: Any) -> None:
        await commit(saga)
        async with c.db.write() as conn:
            await conn.execute(sa.text(statement), params(saga))

    steps[Step.COMMIT] = commit_then_meddle
    try:
        with counting(c.db) as seen:
            order, saga = await c.orders.checkout(channel="web", customer_id=customer,
                                                  lines=[Line(SKU, 1)])
    finally:
        steps[Step.COMMIT] = commit
    return order, saga, seen


async def test_an_order_changed_meanwhile_is_read_and_changed_as_it_is(c: Container) -> None:
    """Someone else writes the order between the saga's steps: the step that knew it finds
    another version stored, writes nothing from its copy, reads the order and goes on."""
    order, saga, seen = await _checkout_meddled(
        c, "di", "UPDATE orders SET version = version + 1, refund_refs = :refs WHERE id = :o",
        lambda saga: {"o": saga.order_id, "refs": '["elsewhere"]'})
    assert saga.status is SagaStatus.COMPLETED and order.status is OrderStatus.PAID
    assert len(_reads_of(seen, "orders")) == 1  # the fulfil step's, after its copy failed
    stored = await c.orders.get(order.id)
    assert stored == order and stored.refund_refs == ["elsewhere"]  # nothing overwritten
    async with c.db.read() as conn:
        paid = (await conn.execute(sa.text(
            "SELECT count(*) FROM outbox WHERE subject = :o AND type = 'order.paid.v1'"),
            {"o": order.id})).scalar_one()
    assert paid == 1


async def test_a_payment_changed_meanwhile_is_merged_as_stored(c: Container) -> None:
    """The authorisation's row changes between authorise and capture (a webhook, say): the
    capture's answer is not written over it from the saga's copy, but merged into it."""
    order, saga, seen = await _checkout_meddled(
        c, "ed", "UPDATE payments SET decline_reason = 'seen' WHERE id = :p",
        lambda saga: {"p": saga.data["payment_id"]})
    assert saga.status is SagaStatus.COMPLETED and order.status is OrderStatus.PAID
    assert len(_reads_of(seen, "payments")) == 1  # the capture's locked read, after all
    payment = await c.payments.get(str(order.payment_id))
    assert payment.status.value == "captured" and payment.amount_captured == order.total
