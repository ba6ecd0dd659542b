"""Admission by measured checkout capacity, free of I/O: how fast the shoppers a queue drop
admitted got through checkout, the rate that follows from it, and when a new rate may begin
(the rates themselves are the drop's `segments`, summed by `admitted_through`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from instock.drops.model import MAX_ADMIT_PER_SECOND, Admission, Drop

# The capacity rule. A waiting room exists so that checkout is not swamped; what checkout can
# take is measured by how fast the shoppers it admitted get through it: their reservations of
# the drop's SKUs (heard from inventory) that ended in a checkout (committed) or that the
# shopper left (released or cancelled), per second over the last window. One that expired, or
# is still open, is a shopper stuck in checkout: it counts as nothing got through. The next
# rate is HEADROOM x that measured rate, so a room whose shoppers keep up grows by that factor
# a period (it can only measure what it admitted), and one whose checkout stalls falls to what
# gets through; bounded below by FLOOR_SHARE of the starting rate (the room never closes on a
# slow minute) and above by the drop's max_admit_per_second. With no checkout begun or ended
# in the window (the room is empty, or nobody admitted has reserved yet) there is nothing
# measured, and the rate stays.
HEADROOM = 1.5
FLOOR_SHARE = 0.1
WINDOW_PERIODS = 3  # the window measured is this many recomputation periods


@dataclass(frozen=True)
class Throughput:
    """Admitted shoppers' checkouts of a drop, measured over `seconds` up to now."""

    through: int  # ended in a checkout or left by the shopper within the window
    open: int  # begun and not ended now (or ended by expiring within the window)
    seconds: float


def capacity_rate(drop: Drop, measured: Throughput) -> float | None:
    """The rate the capacity rule sets from what was measured (None: nothing measured, the
    rate stays)."""
    if (measured.through == 0 and measured.open == 0) or measured.seconds <= 0:
        return None
    top = drop.max_admit_per_second or MAX_ADMIT_PER_SECOND
    floor = drop.admit_per_second * FLOOR_SHARE
    return min(top, max(floor, HEADROOM * measured.through / measured.seconds))


def next_change(drop: Drop, now: datetime, period: float, lead: float) -> datetime | None:
    """When a rate measured now takes effect: the first period boundary (the start plus a
    whole number of `period`s) at least `lead` seconds ahead, so that every process has read
    it (each reads the segments at least every `lead`) before it counts; never one in the
    past, which would move admissions already told. None until a full period has run (nothing
    to measure yet) or once the drop is over."""
    if drop.admission is not Admission.CAPACITY or period <= 0:
        return None
    since = (now - drop.starts_at).total_seconds()
    if since < period:
        return None
    at = drop.starts_at + timedelta(seconds=period * math.ceil((since + lead) / period))
    return None if drop.ends_at is not None and at >= drop.ends_at else at


def measure_window(drop: Drop, now: datetime, period: float) -> float:
    """The seconds measured: the last WINDOW_PERIODS periods, none before the start."""
    return min(period * WINDOW_PERIODS, max(0.0, (now - drop.starts_at).total_seconds()))
