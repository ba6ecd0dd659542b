"""Pure data types shared by the recommender models and the offline evaluation (no I/O).

Items, sequences and attribute values are dense integer codes so that every model can work on
NumPy arrays and SciPy sparse matrices; mapping raw ids to codes is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Event kinds. Search and removals carry little purchase intent, so they share OTHER.
VIEW, CART, WISHLIST, PURCHASE, OTHER = 0, 1, 2, 3, 4
KIND_NAMES = ("view", "cart", "wishlist", "purchase", "other")
N_KINDS = len(KIND_NAMES)

_KIND_ALIASES = {
    "view": VIEW,
    "pv": VIEW,
    "click": VIEW,
    "product_view": VIEW,
    "cart": CART,
    "add_to_cart": CART,
    "addtocart": CART,
    "fav": WISHLIST,
    "wishlist": WISHLIST,
    "purchase": PURCHASE,
    "buy": PURCHASE,
    "transaction": PURCHASE,
    "order": PURCHASE,
}


def kind_code(name: str) -> int:
    """Map a raw event-type label (any of the logs' spellings) to a kind code."""
    return _KIND_ALIASES.get(name.strip().lower(), OTHER)


@dataclass(frozen=True)
class Event:
    """One behaviour event, as fed to `Recommender.update` for online learning."""

    seq: int
    item: int
    time: float
    kind: int = VIEW


@dataclass(frozen=True)
class Context:
    """What a recommender knows about the shopper right now: earlier events, oldest first.

    `preferences` holds stated attribute values (poll answers such as a preferred category or
    brand) keyed by attribute name; it is the cold-start signal when there are no events yet.
    """

    items: IntArray
    kinds: IntArray
    times: FloatArray
    seq: int | None = None
    preferences: Mapping[str, Sequence[int]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        items: Sequence[int] | IntArray,
        kinds: Sequence[int] | IntArray | None = None,
        times: Sequence[float] | FloatArray | None = None,
        seq: int | None = None,
        preferences: Mapping[str, Sequence[int]] | None = None,
    ) -> Context:
        it = np.asarray(items, dtype=np.int64)
        kd = np.full(len(it), VIEW, np.int64) if kinds is None else np.asarray(kinds, np.int64)
        tm = np.arange(len(it), dtype=np.float64) if times is None else np.asarray(times, float)
        return cls(it, kd, tm, seq, dict(preferences or {}))

    def __len__(self) -> int:
        return len(self.items)


def sort_order(seq: npt.ArrayLike, time: npt.ArrayLike) -> IntArray:
    """Order by (sequence, time); stable, so file order breaks equal timestamps."""
    s, t = np.asarray(seq), np.asarray(time, np.float64)
    return np.lexsort((np.arange(len(s)), t, s)).astype(np.int64)


@dataclass
class EventLog:
    """Events as parallel arrays sorted by (seq, time); `attributes` maps a name to per-item codes.

    Attribute code -1 means unknown. Items are 0..n_items-1. `features` (items x features, when
    given) holds multi-valued content such as tags and title words.
    """

    seq: IntArray
    item: IntArray
    time: FloatArray
    kind: IntArray
    n_items: int
    attributes: dict[str, IntArray] = field(default_factory=dict)
    features: sp.csr_matrix | None = None

    @classmethod
    def build(
        cls,
        seq: npt.ArrayLike,
        item: npt.ArrayLike,
        time: npt.ArrayLike,
        kind: npt.ArrayLike | None = None,
        n_items: int | None = None,
        attributes: Mapping[str, npt.ArrayLike] | None = None,
    ) -> EventLog:
        s = np.asarray(seq, np.int64)
        i = np.asarray(item, np.int64)
        t = np.asarray(time, np.float64)
        k = np.full(len(s), VIEW, np.int64) if kind is None else np.asarray(kind, np.int64)
        order = sort_order(s, t)
        n = int(i.max()) + 1 if n_items is None and len(i) else int(n_items or 0)
        attrs = {name: np.asarray(v, np.int64) for name, v in (attributes or {}).items()}
        return cls(s[order], i[order], t[order], k[order], n, attrs)

    def __len__(self) -> int:
        return len(self.seq)

    def select(self, mask: BoolArray) -> EventLog:
        """Subset of events (still sorted); the item catalogue is unchanged."""
        return EventLog(
            self.seq[mask],
            self.item[mask],
            self.time[mask],
            self.kind[mask],
            self.n_items,
            self.attributes,
            self.features,
        )

    def starts(self) -> IntArray:
        """Index of the first event of each event's sequence."""
        if not len(self.seq):
            return np.zeros(0, np.int64)
        new = np.r_[True, self.seq[1:] != self.seq[:-1]]
        first = np.flatnonzero(new)
        return first[np.cumsum(new) - 1]

    def context_before(self, pos: int, start: int) -> Context:
        """Events start..pos-1 (one sequence, `start` its first event) as a scoring context."""
        sl = slice(start, pos)
        return Context(self.item[sl], self.kind[sl], self.time[sl], int(self.seq[start]))
