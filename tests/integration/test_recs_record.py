"""Recording behaviour: an event from the future is judged by the service's clock, and refuses
the whole batch without storing any of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from instock.app import Container
from instock.platform.errors import ValidationFailed
from instock.recommendations.store import behaviour_events

THEN = datetime(2020, 5, 1, 12, 0, tzinfo=UTC)  # far from the wall clock, on purpose


def view(occurred_at: datetime) -> dict[str, object]:
    return {"kind": "view", "session_id": "s-1", "product_id": "P-1",
            "occurred_at": occurred_at}


async def stored(c: Container) -> int:
    async with c.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count())
                                       .select_from(behaviour_events))).scalar_one())


async def test_the_future_is_judged_by_the_service_clock(container: Container) -> None:
    c = container
    c.recommendations.clock = lambda: THEN
    # Four minutes ahead of the service's clock: drift it allows.
    ids = await c.recommendations.record([view(THEN + timedelta(minutes=4))])
    assert len(ids) == 1 and await stored(c) == 1
    # Ten minutes ahead of it (and years before the wall clock): refused, naming the event.
    with pytest.raises(ValidationFailed) as refused:
        await c.recommendations.record([view(THEN), view(THEN + timedelta(minutes=10))])
    assert refused.value.extensions["errors"] == [
        {"field": "events[1].occurred_at", "reason": "is in the future"}]
    assert await stored(c) == 1  # nothing of the refused batch was kept
