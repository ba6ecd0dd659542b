"""Waitlist rules, free of I/O: who is told when a SKU comes back, in which order, how many at
a time, and what they are told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from instock.waitlist.events import BackInStockNotified


@dataclass(frozen=True)
class Entry:
    """One customer waiting for one SKU. `notified_at` is set once, when they are told."""

    sku: str
    customer_id: str
    created_at: datetime
    notified_at: datetime | None = None

    @property
    def waiting(self) -> bool:
        return self.notified_at is None


@dataclass(frozen=True)
class Wave:
    """A SKU's back-in-stock telling in progress: started by one `inventory.back_in_stock.v1`
    (its `cause`), it tells at most k x available customers at a time and looks again at
    `next_at`, until no one waits or the SKU is sold out again."""

    sku: str
    cause: str
    waves: int  # how many waves went out so far
    next_at: datetime


def in_line(entries: list[Entry]) -> list[Entry]:
    """The waiting entries, first subscribed first (ties by customer id, so the order is total:
    two processes, or a retry after a crash, pick the same customers)."""
    return sorted((e for e in entries if e.waiting), key=lambda e: (e.created_at, e.customer_id))


def wave_size(available: int, factor: int) -> int:
    """How many customers one wave may tell: k x the units that can be bought now. More than
    the units (k > 1) because many who are told never buy; bounded so that a 5-unit restock
    does not send 5,000 people to a page that says sold out."""
    return max(0, available) * max(1, factor)


def after_wave(sku: str, cause: str, waves_before: int, told: int, still_waiting: bool,
               now: datetime, interval: timedelta) -> Wave | None:
    """The wave state after telling `told` customers: the next look in `interval`, or None
    (nobody waits any more, or nobody could be told: sold out again, so the wave stops and a
    later restock starts a new one)."""
    if not still_waiting or told == 0:
        return None
    return Wave(sku, cause, waves_before + 1, now + interval)


def notices(entries: list[Entry], available: int, cause_event_id: str) -> list[BackInStockNotified]:
    """One notice per customer still waiting; those already told are not told again."""
    return [BackInStockNotified(sku=e.sku, customer_id=e.customer_id, available=available,
                                subscribed_at=e.created_at, cause=cause_event_id)
            for e in entries if e.waiting]
