"""gRPC between the house's processes (platform/rpc.py, inventory/grpc.py): who may call, the
errors that cross the wire as themselves, the deadline, retries only for calls that are safe
to repeat, and the breaker. A real server on a real port; the callee's flakiness is made by
overriding one servicer method, the way a callee that drops calls would behave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from instock.app import Container, build
from instock.drops.errors import DropPassRequired
from instock.drops.model import Drop, Mode
from instock.inventory.errors import InsufficientStockConflict, InvalidTransition
from instock.inventory.grpc import SERVICE_NAME, InventoryServicer, RemoteInventory
from instock.inventory.model import Adjustment, AdjustmentKind, Line, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.auth import TokenAuthority
from instock.platform.db import utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import NotFound, Unauthorized, ValidationFailed
from instock.platform.principal import Role
from instock.platform.rpc import CallPolicy, RemoteUnavailable, RpcServer, serving
from instock.rpc import inventory_pb2 as pb
from instock.rpc import inventory_pb2_grpc as pb_grpc
from tests.integration.helpers import CTX, stocked
from tests.support import make_settings

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Flaky(InventoryServicer):
    """Answers UNAVAILABLE to the first `drops` calls of GetReservation and Commit, counting
    every call; sleeps `slow` seconds before each GetChannel."""

    def __init__(self, *args: Any, drops: int = 0, slow: float = 0.0) -> None:
        super().__init__(*args)
        self.drops, self.slow = drops, slow
        self.calls: dict[str, int] = {}

    async def _flake(self, what: str, context: grpc.aio.ServicerContext) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if self.calls[what] <= self.drops:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "dropped")

    async def GetReservation(self, request: Any, context: Any) -> Any:
        await self._flake("GetReservation", context)
        return await super().GetReservation(request, context)

    async def Commit(self, request: Any, context: Any) -> Any:
        await self._flake("Commit", context)
        return await super().Commit(request, context)

    async def GetChannel(self, request: Any, context: Any) -> Any:
        await asyncio.sleep(self.slow)
        return await super().GetChannel(request, context)


@pytest.fixture
async def home(database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    c = build(make_settings(database_url, tmp_path))
    yield c
    await c.close()


async def served(c: Container, servicer: InventoryServicer) -> Any:
    return serving("127.0.0.1", 0, [(SERVICE_NAME, servicer.add_to)], grace=0.5)


def remote(server: RpcServer, tokens: TokenAuthority, **policy: Any) -> RemoteInventory:
    # A generous deadline unless a test is about deadlines: the production 5 s once ran out
    # on a test's first call (channel connect and a SQLite write) in a CI run on a machine
    # loaded by other work.
    policy.setdefault("deadline_seconds", 30.0)
    return RemoteInventory(f"grpc://127.0.0.1:{server.port}", tokens, CallPolicy(**policy))


async def test_the_callee_s_errors_arrive_as_themselves(home: Container) -> None:
    await stocked(home, "TEE", 1)
    async with await served(home, InventoryServicer(home.inventory, home.tokens)) as server:
        inventory = remote(server, home.tokens)
        try:
            held = await inventory.reserve(ReserveRequest([Line("TEE", 1)], "web", "c-1", 60),
                                           CTX)
            assert (held.status, held.lines, held.customer_id) == (
                ReservationStatus.ACTIVE, [Line("TEE", 1)], "c-1")
            assert held == await home.inventory.get_reservation(held.id)  # the same, in full
            with pytest.raises(InsufficientStockConflict) as short:
                await inventory.reserve(ReserveRequest([Line("TEE", 1)]), CTX)
            assert short.value.extensions["short"] == [
                {"sku": "TEE", "requested": 1, "available": 0}]
            with pytest.raises(NotFound, match="reservation nope"):
                await inventory.get_reservation("nope")
            assert (await inventory.commit(held.id, CTX)).status is ReservationStatus.COMMITTED
            with pytest.raises(InvalidTransition):
                await inventory.commit(held.id, CTX)
            with pytest.raises(ValidationFailed, match="kind") as invalid:
                await inventory.remote.call(pb_grpc.InventoryStub, "Adjust", pb.AdjustRequest(
                    sku="TEE", location="wh", kind="steal", quantity=1), safe=False)
            assert invalid.value.extensions["errors"] == [
                {"field": "kind", "reason": "unknown adjustment kind 'steal'"}]
        finally:
            await inventory.close()


async def test_a_drop_pass_goes_over_the_wire_and_a_refusal_comes_back_as_itself(
        home: Container) -> None:
    await stocked(home, "HYPE", 2)
    now = utcnow()
    drop = await home.drops.schedule(Drop(
        id="", skus=("HYPE",), starts_at=now - timedelta(seconds=1), mode=Mode.QUEUE,
        admit_per_second=10, per_customer_limit=None, channels=(), ends_at=None, seed="",
        created_at=now, created_by="test"))
    tokens = home.drops.tokens
    drop_pass = tokens.admission_pass(tokens.pass_for(drop.id, "c-1", now), now)
    async with await served(home, InventoryServicer(home.inventory, home.tokens)) as server:
        inventory = remote(server, home.tokens)
        try:
            with pytest.raises(DropPassRequired):
                await inventory.reserve(ReserveRequest([Line("HYPE", 1)], "web", "c-1", 60), CTX)
            held = await inventory.reserve(
                ReserveRequest([Line("HYPE", 1)], "web", "c-1", 60, drop_pass), CTX)
            assert held.status is ReservationStatus.ACTIVE
        finally:
            await inventory.close()


async def test_an_adjustment_with_a_reference_happens_once_however_often_it_is_sent(
        home: Container) -> None:
    await stocked(home, "CAP", 2)
    async with await served(home, InventoryServicer(home.inventory, home.tokens)) as server:
        inventory = remote(server, home.tokens)
        ctx = EntryContext("saga:return", "returned", reference="order-1:0")
        for _ in range(3):
            await inventory.adjust(Adjustment("CAP", "wh", AdjustmentKind.RETURN, 1), ctx)
        await inventory.close()
    assert (await home.inventory.stock("CAP")).available == 3


async def test_only_services_and_admins_may_call(home: Container) -> None:
    async with await served(home, InventoryServicer(home.inventory, home.tokens)) as server:
        inventory = remote(server, home.tokens)
        shopper = home.tokens.mint(Role.CUSTOMER, "c-1")
        try:
            for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                                   ((("authorization", "Bearer forged"),),
                                    grpc.StatusCode.UNAUTHENTICATED),
                                   ((("authorization", f"Bearer {shopper}"),),
                                    grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await pb_grpc.InventoryStub(inventory.remote.channel).GetChannel(
                        pb.GetChannelRequest(channel_id="web"), metadata=metadata)
                assert refused.value.code() is code
            stranger = TokenAuthority("another fleet's key" * 2, "instock", 3600)
            outsider = remote(server, stranger)
            with pytest.raises(Unauthorized):
                await outsider.channel("web")
            await outsider.close()
            assert (await inventory.channel("web")).id == "web"  # a service is answered
        finally:
            await inventory.close()


async def test_reads_are_retried_and_transitions_are_not(home: Container) -> None:
    await stocked(home, "TEE", 2)
    held = await home.inventory.reserve(ReserveRequest([Line("TEE", 1)]), CTX)
    flaky = Flaky(home.inventory, home.tokens, drops=2)
    async with await served(home, flaky) as server:
        inventory = remote(server, home.tokens, attempts=3)
        try:
            assert (await inventory.get_reservation(held.id)).id == held.id
            assert flaky.calls["GetReservation"] == 3  # two dropped, then answered
            with pytest.raises(RemoteUnavailable):
                await inventory.commit(held.id, CTX)
            assert flaky.calls["Commit"] == 1  # not sent again: it might have happened
        finally:
            await inventory.close()
    assert (await home.inventory.get_reservation(held.id)).status is ReservationStatus.ACTIVE


async def test_a_slow_callee_meets_the_deadline_and_a_dead_one_opens_the_breaker(
        home: Container) -> None:
    async with await served(home, Flaky(home.inventory, home.tokens, slow=2.0)) as server:
        inventory = remote(server, home.tokens, deadline_seconds=0.2, attempts=1)
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="deadline_exceeded"):
            await inventory.channel("web")
        assert time.monotonic() - started < 1.5
        await inventory.close()
    # The server is gone: after `threshold` failures the breaker answers at once.
    inventory = remote(server, home.tokens, deadline_seconds=0.5, attempts=1,
                       breaker_threshold=2, breaker_cooldown_seconds=30)
    try:
        for _ in range(2):
            with pytest.raises(RemoteUnavailable, match="unavailable"):
                await inventory.channel("web")
        started = time.monotonic()
        with pytest.raises(RemoteUnavailable, match="circuit") as open_:
            await inventory.channel("web")
        assert time.monotonic() - started < 0.05 and open_.value.status == 503
        assert inventory.remote.breaker.state == "open"
    finally:
        await inventory.close()
