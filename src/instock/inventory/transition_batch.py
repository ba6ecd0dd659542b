"""The group commit of reservation transitions (commit, release, ship, cancel, extend).

A checkout's commit, a cart's release: each used to read its reservation's SKUs, lock them, read
the reservation again and write, alone. Transitions that arrive together now share that: one read
of every reservation's SKUs, one stock transaction locking them all, three statements reading
every reservation, then each transition decided in arrival order and its status written (still a
compare-and-swap on the status it was read in). A batch holds one transition per reservation, so
a second one of the same reservation sees the first's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from instock.inventory import store
from instock.inventory.errors import domain_errors
from instock.inventory.model import Movement, Reservation
from instock.inventory.unit_of_work import StockTx
from instock.platform.entry_context import EntryContext
from instock.platform.errors import InstockError, NotFound, VersionConflict

LANE = "transitions"
Change = Callable[[Reservation, datetime], list[Movement]]
Check = Callable[[Reservation], None]


@dataclass(frozen=True)
class Transition:
    reservation_id: str
    ctx: EntryContext
    change: Change
    check: Check | None = None

    def claims(self) -> frozenset[str]:
        return frozenset({self.reservation_id})


def missing(reservation_id: str) -> NotFound:
    return NotFound(f"reservation {reservation_id} does not exist")


def apply(tx: StockTx, reservation: Reservation, transition: Transition) -> None:
    """One transition of a reservation read under its SKUs' locks (no one else can change it
    now): checked, moved, its status written, its events emitted."""
    if transition.check is not None:
        transition.check(reservation)
    before = reservation.status
    tx.move(transition.change(reservation, tx.now),
            replace(transition.ctx, reference=reservation.id))
    tx.moved.append((reservation, before))  # its status is written at flush
    tx.emit(reservation.events, transition.ctx.correlation_id, transition.ctx.traceparent)


async def decide(tx: StockTx, batch: Sequence[Transition]) -> list[Reservation | Exception]:
    """Each transition in arrival order: its reservation, or the refusal meant for it alone.
    One refused after moving stock (a bucket rule on a later allocation) fails the batch, which
    then runs each alone."""
    found = await store.get_reservations(tx.conn, (t.reservation_id for t in batch))
    outcomes: list[Reservation | Exception] = []
    for transition in batch:
        reservation = found.get(transition.reservation_id)
        if reservation is None:
            outcomes.append(missing(transition.reservation_id))
            continue
        entries = len(tx.entries)
        try:
            with domain_errors():
                apply(tx, reservation, transition)
        except VersionConflict:
            raise  # a lost race, not a refusal: the whole batch is tried again
        except InstockError as refused:
            if len(tx.entries) != entries:
                raise
            outcomes.append(refused)
            continue
        for sku in {a.sku for a in reservation.allocations}:
            tx.origins.setdefault(sku, transition.ctx)  # the first request that changed it
        outcomes.append(reservation)
    return outcomes
