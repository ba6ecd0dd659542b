"""The rules every served list obeys (pure): in stock only, the shopper's size first, nothing
already bought unless it is replenished, variety across brands and categories, a reason each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

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
    "als": "shoppers with tastes like yours liked this",
    "content": "similar to {anchor}",
    "affinity_view": "you looked at this",
    "affinity_cart": "still in your cart",
    "affinity_wishlist": "on your wishlist",
    "affinity_purchase": "time to buy again",
    "preference": "matches what you told us you like",
    "new": "new in",
}


# Named tuples: a served list makes about a hundred of them, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (measured: no difference in a list's CPU either way).
class Variant(NamedTuple):
    sku: str
    size: str | None
    available: int


class Choice(NamedTuple):
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

    A shopper who loves one brand still sees it first, but not ten times in a row. Plain Python:
    a list's few dozen candidates cost less so than in NumPy calls. Each pick lowers only the
    candidates of its brand and category, found through an index of them rather than by
    testing every candidate left.
    """
    codes = [int(c) for c in order]
    at = np.asarray(codes, np.int64)
    brands, categories = brand[at].tolist(), category[at].tolist()
    adjusted = [scores[c] for c in codes]
    same_brand: dict[int, list[int]] = {}
    same_category: dict[int, list[int]] = {}
    for i, (b, c) in enumerate(zip(brands, categories, strict=True)):
        if b >= 0:  # -1 (unknown) shares nothing
            same_brand.setdefault(b, []).append(i)
        if c >= 0:
            same_category.setdefault(c, []).append(i)
    left = list(range(len(codes)))
    picked: list[int] = []
    for _ in range(min(limit, len(codes))):
        best = max(left, key=adjusted.__getitem__)  # ties: the earlier in `order`
        left.remove(best)
        picked.append(codes[best])
        # a candidate's brand first, then its category, as each pick always did (the same
        # products, to the bit); those already picked are lowered too, and never looked at
        for i in same_brand.get(brands[best], ()):
            adjusted[i] *= SAME_BRAND
        for i in same_category.get(categories[best], ()):
            adjusted[i] *= SAME_CATEGORY
    return picked


def main_reasons(parts: Mapping[str, FloatArray], indexes: Sequence[int | None]) -> list[str]:
    """Per candidate index, the component that contributed most to its score (parts: each
    component's weighted share per candidate); "new" for a filler (index None) or no share."""
    names = list(parts)
    known = [i for i in indexes if i is not None]
    if not names or not known:
        return ["new"] * len(indexes)
    shares = np.vstack([parts[name][known] for name in names])
    best = shares.argmax(axis=0).tolist()  # ties: the earlier component
    positive = (shares.max(axis=0) > 0).tolist()
    found = iter(zip(best, positive, strict=True))
    reasons = []
    for i in indexes:
        if i is None:
            reasons.append("new")
            continue
        top, has_share = next(found)
        reasons.append(names[top] if has_share else "new")
    return reasons
