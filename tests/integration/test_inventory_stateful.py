"""A Hypothesis state machine drives random stock commands through the real service and database.

After every step: no bucket is negative, the levels equal the folded ledger with every chain
intact, nothing is reserved beyond what active reservations hold, and FEFO was respected.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from instock.app import Container, build
from instock.inventory import store
from instock.inventory.model import Adjustment, AdjustmentKind, Line, ReservationStatus
from instock.inventory.reservation_batch import ReserveRequest
from instock.platform.db import utcnow
from instock.platform.errors import InstockError
from tests.integration.helpers import CTX, add_location, add_product
from tests.support import backends, make_settings, migrated_database

T = TypeVar("T")
LOCATIONS = ["h-wh1", "h-wh2"]
LOT_DAYS = {"L1": 3, "L2": 20, "L3": 90}
_examples = itertools.count()


class InventoryMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    container: Container

    def __init__(self) -> None:
        super().__init__()
        self.c = self.container
        self.now = utcnow()
        self.c.inventory.clock = lambda: self.now
        prefix = f"x{next(_examples)}"
        self.skus = [f"{prefix}-A", f"{prefix}-B"]
        self.kit = f"{prefix}-KIT"
        self.lot_expiry: dict[tuple[str, str], date] = {}
        self.active: list[str] = []
        self.run(add_product(self.c, prefix, self.skus, {self.kit: {self.skus[0]: 1,
                                                                    self.skus[1]: 2}}))

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def attempt(self, work: Awaitable[Any]) -> Any:
        """Run a command that may be refused; a refusal must be a clean domain error."""
        try:
            return self.run(work)
        except InstockError:
            return None

    @rule(sku=st.integers(0, 1), location=st.sampled_from(LOCATIONS),
          quantity=st.integers(1, 6), lot=st.sampled_from([None, "L1", "L2", "L3"]))
    def receive(self, sku: int, location: str, quantity: int, lot: str | None) -> None:
        expires_on = None
        if lot is not None:
            # A lot code is one production batch with one expiry, wherever it has been moved.
            key = (self.skus[sku], lot)
            expires_on = self.lot_expiry.setdefault(
                key, self.now.date() + timedelta(days=LOT_DAYS[lot]))
        self.run(self.c.inventory.adjust(Adjustment(
            self.skus[sku], location, AdjustmentKind.RECEIVE, quantity, lot, expires_on), CTX))

    @rule(kind=st.sampled_from([AdjustmentKind.DAMAGE, AdjustmentKind.QUARANTINE,
                                AdjustmentKind.RELEASE_QUARANTINE, AdjustmentKind.COUNT,
                                AdjustmentKind.WRITE_OFF, AdjustmentKind.TRANSFER,
                                AdjustmentKind.SAFETY_STOCK]),
          sku=st.integers(0, 1), location=st.integers(0, 1), quantity=st.integers(0, 8))
    def adjust(self, kind: AdjustmentKind, sku: int, location: int, quantity: int) -> None:
        to = LOCATIONS[1 - location] if kind is AdjustmentKind.TRANSFER else None
        self.attempt(self.c.inventory.adjust(Adjustment(
            self.skus[sku], LOCATIONS[location], kind, quantity, to_location=to), CTX))

    @rule(a=st.integers(0, 3), b=st.integers(0, 3), kits=st.integers(0, 1),
          ttl=st.integers(1, 600))
    def reserve(self, a: int, b: int, kits: int, ttl: int) -> None:
        lines = [Line(sku, n) for sku, n in ((self.skus[0], a), (self.skus[1], b),
                                             (self.kit, kits)) if n]
        if not lines:
            return
        before = self.run(self._levels())
        r = self.attempt(self.c.inventory.reserve(ReserveRequest(lines, ttl_seconds=ttl), CTX))
        if r is None:
            assert self.run(self._levels()) == before, "a refused reservation changed stock"
            return
        self.active.append(r.id)
        self._check_fefo(before, r.allocations)

    def _check_fefo(self, before: dict[tuple[str, str], Any], allocations: list[Any]) -> None:
        """No lot expiring earlier than one we drew from was left with free units."""
        today = self.now.date()
        for (sku, location), level in self.run(self._levels()).items():
            drawn = [a for a in allocations if (a.sku, a.location) == (sku, location)]
            if not drawn:
                continue
            latest = max((level.lots[a.lot].expires_on if a.lot else date.max) for a in drawn)
            for lot in level.lots.values():
                if lot.qualifies(today, 0) and lot.expires_on < latest:
                    assert lot.buckets.free == 0, f"FEFO skipped lot {lot.code} at {location}"

    @precondition(lambda self: self.active)
    @rule(pick=st.integers(0, 1000), action=st.sampled_from(["commit", "release", "extend"]))
    def settle(self, pick: int, action: str) -> None:
        rid = self.active[pick % len(self.active)]
        calls = {"commit": lambda: self.c.inventory.commit(rid, CTX),
                 "release": lambda: self.c.inventory.release(rid, CTX),
                 "extend": lambda: self.c.inventory.extend(rid, 300, CTX)}
        self.attempt(calls[action]())

    @rule(seconds=st.sampled_from([0, 30, 400, 86400, 86400 * 10]))
    def time_passes_and_the_sweeper_runs(self, seconds: int) -> None:
        self.now = self.now + timedelta(seconds=seconds)
        self.run(self.c.inventory.sweep())

    async def _levels(self) -> dict[tuple[str, str], Any]:
        async with self.c.db.read() as conn:
            return await store.load_levels(conn, self.skus)

    @invariant()
    def no_bucket_negative(self) -> None:
        for level in self.run(self._levels()).values():
            assert level.buckets.problems() == [], level
            assert level.unlotted.problems() == [], level
            for lot in level.lots.values():
                assert lot.buckets.problems() == [], lot

    @invariant()
    def ledger_folds_to_the_levels(self) -> None:
        report = self.run(self.c.inventory.audit())
        assert report.problems == []

    @invariant()
    def reserved_is_exactly_what_active_reservations_hold(self) -> None:
        held: dict[str, int] = {}
        still_active = []
        for rid in self.active:
            r = self.run(self.c.inventory.get_reservation(rid))
            if r.status is ReservationStatus.ACTIVE:
                still_active.append(rid)
                for a in r.allocations:
                    held[a.sku] = held.get(a.sku, 0) + a.quantity
        self.active = still_active
        for sku in self.skus:
            reserved = sum(lv.buckets.reserved for (s, _), lv in self.run(self._levels()).items()
                           if s == sku)
            assert reserved == held.get(sku, 0)


@pytest.fixture(params=backends())
def machine_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    with migrated_database(request.param, tmp_path) as url:
        container = build(make_settings(url, tmp_path))
        for location in LOCATIONS:
            loop.run_until_complete(add_location(container, location))
        InventoryMachine.loop, InventoryMachine.container = loop, container
        yield
        loop.run_until_complete(container.db.dispose())
    loop.close()


@pytest.mark.slow
def test_random_command_sequences_keep_every_invariant(machine_env: None) -> None:
    # No shrinking: every step hits a real database, and shrinking a failure would take longer
    # than CI allows; the unshrunk sequence is printed and replays from the example database.
    run_state_machine_as_test(InventoryMachine, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=list(HealthCheck)))
