"""What others were told of stock against the stock: pure.

Consumers of the event stream keep their own copies: recommendations' in-stock view, and each
marketplace listing's last pushed quantity; a marketplace keeps what it was pushed. Each copy
may lag the stock by its freshness bound (a push waits for the channel's rate, a consumer for
its batch), so a difference counts only once it has lasted the grace period with the stock
standing still (a finding's `expected` changes with every change of stock, and `Suspicions`
starts its clock again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from instock.channels.model import ListingGap
from instock.inventory.drift import Finding

RECS_STALE = "recs_stock_stale"  # recommendations' in-stock view is not the stock
LISTING_STALE = "listing_stale"  # a listing was not told what its channel may sell
MARKETPLACE = "marketplace_mismatch"  # the marketplace lists what we never pushed

KINDS = frozenset({RECS_STALE, LISTING_STALE, MARKETPLACE})


def recs_view(stock: Mapping[str, tuple[int, int]],
              projected: Mapping[str, tuple[int, int]]) -> list[Finding]:
    """`stock` and `projected`: sku -> (version, available). A SKU the projection never heard
    of is left alone (it may not run here); one it holds must say what the stock says is
    available. Its version may be older: recommendations hear stock changes only, and a SKU's
    version also moves when its policy is set (inventory.policy_changed.v1), which changes
    nothing a recommendation shows."""
    found = []
    for sku, (version, available) in sorted(projected.items()):
        if sku not in stock or stock[sku][1] == available:
            continue
        now_version, now_available = stock[sku]
        found.append(Finding(
            RECS_STALE, sku, "", {"version": now_version, "available": now_available},
            {"version": version, "available": available},
            f"{sku}: recommendations hold {available} available (version {version}), the "
            f"stock says {now_available} (version {now_version})"))
    return found


def listings(gaps: Iterable[ListingGap]) -> list[Finding]:
    return [Finding(
        LISTING_STALE, g.sku, "",
        {"quantity": g.expected, "version": g.version, "channel": g.channel_id},
        {"quantity": g.actual, "channel": g.channel_id},
        f"{g.sku} on {g.channel_id}: last pushed {g.actual}, the channel may sell {g.expected}")
        for g in gaps]


def marketplace(gaps: Iterable[ListingGap]) -> list[Finding]:
    return [Finding(
        MARKETPLACE, g.sku, "", {"quantity": g.expected, "channel": g.channel_id},
        {"quantity": g.actual, "channel": g.channel_id},
        f"{g.sku} on {g.channel_id}: the marketplace lists {g.actual}, we last pushed "
        f"{g.expected}") for g in gaps]
