"""The demo's queue drop (`make run`): seeded once, kept while live, made afresh once it ended."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from instock.app import Container
from instock.drops.service import DropsService
from instock.platform.db import utcnow
from instock.seed import DROP_LEAD, DROP_LENGTH, DROP_RATE, DROP_SKUS, seed_demo, seed_demo_drop


async def test_the_demo_drop_is_scheduled_once_and_again_after_it_ended(
        container: Container) -> None:
    assert await seed_demo(container)
    before = utcnow()
    drop = await seed_demo_drop(container)
    assert drop.skus == DROP_SKUS and drop.mode.value == "queue"
    assert drop.admit_per_second == DROP_RATE and drop.per_customer_limit == 1
    assert before + DROP_LEAD - timedelta(seconds=1) <= drop.starts_at <= utcnow() + DROP_LEAD
    assert drop.ends_at == drop.starts_at + DROP_LENGTH
    assert await container.drops.get(drop.id) == drop

    # Seeding again (another `make run`): the catalogue is there, the live drop is the one.
    assert not await seed_demo(container)
    assert await seed_demo_drop(container) == drop

    # Once it has ended, the next run schedules a fresh one ahead of its clock.
    later = drop.ends_at + timedelta(seconds=1)
    c = container
    c.drops = DropsService(c.drops.db, c.drops.catalog, c.drops.inventory, c.drops.tokens,
                           replace(c.drops.settings), clock=lambda: later)
    fresh = await seed_demo_drop(c)
    assert fresh.id != drop.id and fresh.starts_at > later + DROP_LEAD - timedelta(seconds=1)
    assert await seed_demo_drop(c) == fresh
