"""The rules every served list obeys (pure): in stock only, the shopper's size first, nothing
already bought unless it is replenished, variety across brands and categories, a reason each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from instock.recommendations.data import BoolArray, FloatArray, IntArray

# A product with sizes, none of them the shopper's in stock, keeps this share of its score:
# shown only when little else fits.
SIZE_MISS = 0.3
# Each earlier pick of the same brand, and of the same category, multiplies a score by this.
SAME_BRAND = 0.7
SAME_CATEGORY = 0.8

REASONS: Mapping[str, str] = {
    "trending": "trending now",
    "popularity": "popular with shoppers",
    "cooccurrence": "often chosen together with {anchor}",
    "sequential": "shoppers looked at this next after {anchor}",
    "sequential_ctx": "shoppers looked at this next after {anchor}",
    "sknn": "shoppers with similar visits liked this",
    "content": "similar to {anchor}",
    "affinity_view": "you looked at this",
    "affinity_cart": "still in your cart",
    "affinity_wishlist": "on your wishlist",
    "affinity_purchase": "time to buy again",
    "preference": "matches what you told us you like",
    "new": "new in",
}


@dataclass(frozen=True)
class Variant:
    sku: str
    size: str | None
    available: int


@dataclass(frozen=True)
class Choice:
    """The variant a list shows for a product, and whether it is in the shopper's size."""

    sku: str | None
    in_size: bool | None  # None: the product has no sizes, or the shopper's size is unknown


def choose_variant(variants: Sequence[Variant], size: str | None) -> Choice:
    """The shopper's size when it is in stock, else the variant with the most units."""
    in_stock = [v for v in variants if v.available > 0]
    if not in_stock:
        return Choice(None, None)
    sized = any(v.size for v in variants)
    if size and sized:
        fits = [v for v in in_stock if v.size == size]
        if fits:
            return Choice(fits[0].sku, True)
        return Choice(max(in_stock, key=lambda v: v.available).sku, False)
    return Choice(max(in_stock, key=lambda v: v.available).sku, None)


def shortlist(scores: FloatArray, allowed: BoolArray, depth: int) -> IntArray:
    """Up to `depth` allowed items with a positive score, best first (a zero is no opinion)."""
    ok = np.flatnonzero(allowed[: len(scores)] & (scores > 0))
    if len(ok) > depth:
        ok = ok[np.argpartition(-scores[ok], depth - 1)[:depth]]
    # ties: the lower code (the older item) first, so lists are stable between calls
    return ok[np.lexsort((ok, -scores[ok]))]


def newest(allowed: BoolArray, exclude: Iterable[int], depth: int) -> IntArray:
    """The most recently added allowed items: the list of a shop without any history yet."""
    mask = allowed.copy()
    mask[[i for i in exclude if i < len(mask)]] = False
    return np.flatnonzero(mask)[::-1][:depth]


def diversify(order: Sequence[int], scores: Mapping[int, float], brand: IntArray,
              category: IntArray, limit: int) -> list[int]:
    """Greedy re-rank: each pick lowers the scores of its brand and category.

    A shopper who loves one brand still sees it first, but not ten times in a row.
    """
    cands = np.asarray(order, np.int64)
    base = np.array([scores[int(i)] for i in cands], float)
    # dense codes of the candidates' brands and categories (-1, unknown, shares nothing)
    brands = np.unique(brand[cands], return_inverse=True)[1].ravel()
    cats = np.unique(category[cands], return_inverse=True)[1].ravel()
    known_b, known_c = brand[cands] >= 0, category[cands] >= 0
    brand_seen = np.zeros(len(cands), float)
    cat_seen = np.zeros(len(cands), float)
    left = np.ones(len(cands), bool)
    picked: list[int] = []
    for _ in range(min(limit, len(cands))):
        adjusted = np.where(left, base * SAME_BRAND ** brand_seen[brands]
                            * SAME_CATEGORY ** cat_seen[cats], -np.inf)
        best = int(np.argmax(adjusted))  # ties: the earlier in `order`
        left[best] = False
        picked.append(int(cands[best]))
        if known_b[best]:
            brand_seen[brands[best]] += 1
        if known_c[best]:
            cat_seen[cats[best]] += 1
    return picked


def main_reason(parts: Mapping[str, FloatArray], index: int | None) -> str:
    """The component that contributed most to a candidate's score (parts: each component's
    weighted share per candidate); "new" for a filler that is no candidate (index None)."""
    best, top = "new", 0.0
    if index is None:
        return best
    for name, shares in parts.items():
        value = float(shares[index])
        if value > top:
            best, top = name, value
    return best
