"""Committed stock against the orders that hold it: pure.

A unit is committed when an order has taken it (paid, or paying): a committed reservation that
one of our orders holds must be held by an order still paying or paid (not cancelled, say), and
every order paid for stock it has not shipped must hold committed (or shipped) reservations.
Either side can go wrong alone: an order cancelled whose units stayed committed (stuck, never
sold again), or an order's reservation released under it (units sold twice). A committed
reservation no order of ours holds is left alone: a storefront or an order system of its own
commits reservations through the API, and its orders live there.

Both sides move in separate transactions (a checkout commits, then captures, then marks the
order paid), so a mismatch counts only once it has lasted a grace period
(`model.Suspicions`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from instock.inventory.drift import Finding

ORPHAN = "orphan_commitment"  # committed stock whose order no longer takes it
UNSTOCKED = "order_unstocked"  # an order paid for stock whose reservation is not committed

# What a reservation of an order paid for its stock may be.
STOCKED = frozenset({"committed", "shipped"})

Allocations = list[tuple[str, str, int]]  # (sku, location, quantity)


def check(committed: Mapping[str, Allocations],
          holders: Mapping[str, tuple[str, str]],
          paid_orders: Mapping[str, Iterable[str]],
          reservations: Mapping[str, tuple[str, Allocations]],
          may_hold: Collection[str]) -> list[Finding]:
    """`committed`: committed reservations -> allocations; `holders`: reservation -> (order,
    order status) for those an order holds; `paid_orders`: orders paid for unshipped stock ->
    their reservations, whose (status, allocations) are in `reservations`; `may_hold`: the
    order statuses allowed to hold committed stock."""
    found: list[Finding] = []
    for reservation_id, allocations in sorted(committed.items()):
        if reservation_id not in holders:
            continue  # committed through the API by an order system of its own
        order_id, status = holders[reservation_id]
        if status in may_hold:
            continue
        for sku, location, quantity in allocations:
            found.append(Finding(
                ORPHAN, sku, location, {"committed": 0, "reservation": reservation_id},
                {"committed": quantity, "reservation": reservation_id, "order": order_id,
                 "order_status": status},
                f"{sku}@{location}: {quantity} unit(s) committed by reservation "
                f"{reservation_id}, but its order {order_id} is {status}"))
    for order_id, reservation_ids in sorted(paid_orders.items()):
        for reservation_id in reservation_ids:
            status, allocations = reservations.get(reservation_id, ("missing", []))
            if status in STOCKED:
                continue
            for sku, location, quantity in allocations or [("", "", 0)]:
                found.append(Finding(
                    UNSTOCKED, sku, location,
                    {"committed": quantity, "reservation": reservation_id, "order": order_id},
                    {"committed": 0, "reservation": reservation_id, "status": status},
                    f"order {order_id} is paid for {quantity} unit(s) of {sku}@{location}, "
                    f"but its reservation {reservation_id} is {status}"))
    return found
