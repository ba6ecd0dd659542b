"""Admission by measured checkout capacity (issue 24): a capacity drop's waiting room starts at
its admit_per_second and then admits as fast as its admitted shoppers get through checkout
(capacity_model.capacity_rate).

The measure: inventory says when a reservation of the drop's SKUs is created and how it ends
(`reservation.*.v1`, heard by the `drops-checkouts` consumer into a drops table: drops never
reads inventory's or orders' tables); while the drop admits, every such reservation is an
admitted shopper's, since the gate lets no one else reserve them. A shopper heard late counts
from when inventory wrote it.

The rate: every `period` seconds a duty (workers.run_drop_capacity, on every process that runs
the workers' duties) measures the last window and appends the rate it sets as a segment from the
next period boundary at least `lead` seconds ahead (model.capacity.next_change), so every process
has read it before it takes effect and no admission already told moves. Two processes measuring the
same period write one segment (its key); whichever wrote first stands, and every process sums
the same stored segments (model.admitted_through).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import model
from instock.drops.model import capacity as capacity_model
from instock.drops.store import capacity as capacity_store
from instock.platform.bus import Envelope
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.db import Database, utcnow

log = structlog.get_logger(__name__)
BEGAN = "reservation.created.v1"
# How a checkout ends: through it (paid, or the shopper let go) or stuck until it expired.
ENDINGS = {"reservation.committed.v1": capacity_store.THROUGH,
           "reservation.released.v1": capacity_store.THROUGH,
           "reservation.cancelled.v1": capacity_store.THROUGH,
           "reservation.expired.v1": capacity_store.EXPIRED}
_HEARD = "drops.capacity.heard"  # the consumer transaction's events (`gathered`)


class CapacityService:
    def __init__(self, db: Database, period: float, lead: float,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.period = period  # seconds between the rate's possible changes
        self.lead = lead  # how far ahead of its moment a change is written
        self.clock = clock

    def consumer(self) -> ConsumerSpec:
        # Unordered: each event is applied so that any order of one reservation's gives the
        # same row (store.capacity.began/ended).
        # The transaction's events are gathered by the handler and written by `finish`, with
        # one read of the admitting drops for all of them (not one an event).
        return ConsumerSpec("drops-checkouts", frozenset({BEGAN, *ENDINGS}), self.on_reservation,
                            ordered=False, finish=self.write_checkouts)

    async def on_reservation(self, conn: AsyncConnection, envelope: Envelope) -> None:
        heard: list[Envelope] = gathered(_HEARD, list)
        heard.append(envelope)

    async def write_checkouts(self, conn: AsyncConnection) -> None:
        """What the transaction's gathered events say of capacity drops' checkouts."""
        heard: list[Envelope] = gathered(_HEARD, list)
        if not heard:
            return
        events = [(envelope, datetime.fromisoformat(str(envelope["time"]))) for envelope in heard]
        heard.clear()
        moments = [at for _, at in events]
        # The few capacity drops admitting at any of these moments, then each event's own
        # moment and SKUs: most reservations are of no drop.
        drops = await capacity_store.admitting_within(conn, min(moments), max(moments))
        if not drops:
            return
        for envelope, at in events:
            data = envelope["data"]
            skus = {str(line["sku"]) for line in data.get("lines", [])}
            reservation = str(data["reservation_id"])
            for drop in drops:
                if not drop.started(at) or drop.over(at) or not skus & set(drop.skus):
                    continue
                if envelope["type"] == BEGAN:
                    await capacity_store.began(conn, drop.id, reservation, at)
                else:
                    await capacity_store.ended(conn, drop.id, reservation, at,
                                               ENDINGS[str(envelope["type"])])

    async def recompute(self) -> int:
        """Measure each admitting capacity drop and append the rate its measure sets (unless
        this period's is written already, or nothing was measured); how many were written."""
        now = self.clock()
        async with self.db.read() as conn:
            due = await capacity_store.admitting_drops(conn, now)
        written = 0
        for drop in due:
            at = capacity_model.next_change(drop, now, self.period, self.lead)
            if at is None:
                continue
            since = now - timedelta(seconds=capacity_model.measure_window(drop, now, self.period))
            async with self.db.write() as conn:
                measured = await capacity_store.throughput(conn, drop.id, since, now)
                rate = capacity_model.capacity_rate(drop, measured)
                if rate is not None and await capacity_store.add_segment(
                        conn, drop.id, model.Segment(at, rate), measured, now):
                    written += 1
                    log.info("drop_rate_set", drop_id=drop.id, rate=rate, from_at=at.isoformat(),
                             through=measured.through, open=measured.open)
        return written
