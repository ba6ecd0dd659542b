"""The recommender of one API process: catalogue, stock and shoppers in memory, the hybrid fitted
from history off the request path and updated by every event; `recommend` serves a list.

No I/O here: the service feeds it rows and events and asks it for lists. Every API process holds
one, fed by the same bus, so any process answers within a second of any event.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from instock.recommendations import rules
from instock.recommendations.artefacts import Artefacts, install
from instock.recommendations.data import (
    CART,
    PURCHASE,
    VIEW,
    WISHLIST,
    BoolArray,
    Context,
    Event,
    EventLog,
    IntArray,
)
from instock.recommendations.model import Hybrid, default_components
from instock.recommendations.protocol import Split, price_bands, target_positions, time_split
from instock.recommendations.search import configured

DAY = 86_400.0
KINDS = {"view": VIEW, "click": VIEW, "add_to_cart": CART, "wishlist": WISHLIST,
         "purchase": PURCHASE}
ATTRIBUTES = ("brand", "category", "colour")
PREFERENCES = (*ATTRIBUTES, "tag", "size")
HISTORY_PER_SHOPPER = 50
ANSWERS_PER_SHOPPER = 20  # preference answers read with a shopper's history, however old
# A session is its customer's for this long after the login that merged them: storefront
# sessions expire long before, so an older session id does not come back.
SESSION_MEMORY = timedelta(days=30)
MAX_MERGED_SESSIONS = 1_000_000
# Below this many validation targets a tuned blend is noise: the starting blend serves instead.
MIN_TUNING_TARGETS = 200
# A refit (in a thread, off the request path) spends at most this long trying variants of the
# hybrid after tuning its blend: the thread shares the process's GIL with the requests, so a
# long search every refit would show in their latency (offline, `recs evaluate` takes longer).
FIT_BUDGET_SECONDS = 15.0
# The blend of a shop without enough history to tune on: every signal counts, content and
# stated preferences most (they are all a new shop has); ALS waits for a tuned blend (factors
# of a short history are noise).
STARTING_WEIGHTS: Mapping[str, float] = {
    "trending": 0.5, "popularity": 0.25, "cooccurrence": 1.0, "sequential": 1.0,
    "sequential_ctx": 0.5, "sknn": 1.0, "als": 0.0, "content": 1.0, "affinity_view": 0.5,
    "affinity_cart": 1.0, "affinity_wishlist": 1.0, "affinity_purchase": 0.5,
}
# What an experiment's variant may name as its model: the blend, or one of its parts alone.
MODEL_NAMES = frozenset({"hybrid", *STARTING_WEIGHTS})
_WORD = re.compile(r"[a-z0-9]{3,}")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class Item:
    product_id: str
    title: str
    brand: str
    category: str
    colour: str
    tags: list[str]
    price: float
    replenishable: bool
    variants: list[tuple[str, str | None]]  # (sku, size)


def item_of(row: Mapping[str, Any]) -> Item:
    """An item from a `rec_items` row (or a product event's data)."""
    attributes = row.get("attributes") or {}
    variants = row.get("variants") or [{"sku": sku} for sku in row.get("skus", [])]
    return Item(
        product_id=row.get("product_id") or row["id"], title=row["title"], brand=row["brand"],
        category=row["category"],
        colour=str(attributes.get("colour") or attributes.get("color") or ""),
        tags=[str(t).lower() for t in row.get("tags") or []], price=float(row["price"]),
        replenishable=bool(row["replenishable"]),
        variants=[(v["sku"], (v.get("attributes") or {}).get("size")) for v in variants])


class Catalogue:
    """Products as dense codes, the attribute codes the models use, and what is in stock.

    Attribute codes are kept per item as products arrive, so that handing the models fresh
    arrays costs NumPy time, not a Python pass over a 100,000-item catalogue.
    """

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.code: dict[str, int] = {}
        self.sku_item: dict[str, int] = {}
        self.available: dict[str, int] = {}
        self._versions: dict[str, int] = {}
        self._in_stock: BoolArray = np.zeros(1024, bool)  # grown by doubling, see `upsert`
        self.vocab: dict[str, dict[str, int]] = {name: {} for name in ATTRIBUTES}
        self.features: dict[str, int] = {}
        self._codes: dict[str, list[int]] = {name: [] for name in ATTRIBUTES}
        self._item_features: list[list[int]] = []
        self._arrays: dict[str, IntArray] = {}  # `codes`, rebuilt when items change
        self._prices: list[float] = []
        self.changed = False  # items arrived since the models last saw the arrays
        # Per product, the variant shown to a shopper whose size is unknown: asked for every
        # pick of every list, it changes only with the product's stock (see `_restock`).
        self._unsized: dict[int, rules.Choice] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def in_stock(self) -> BoolArray:
        """Per item: is any of its SKUs available (a view, so do not keep it across calls)."""
        return self._in_stock[: len(self.items)]

    def upsert(self, item: Item) -> int:
        code = self.code.get(item.product_id)
        codes = {name: self.value_code(name, getattr(item, name)) for name in ATTRIBUTES}
        names = {*(f"tag:{t}" for t in item.tags), *(f"word:{w}" for w in words(item.title))}
        features = sorted(self.features.setdefault(f, len(self.features)) for f in names)
        if code is None:
            code = self.code[item.product_id] = len(self.items)
            self.items.append(item)
            if code >= len(self._in_stock):
                self._in_stock = np.r_[self._in_stock, np.zeros(len(self._in_stock), bool)]
            for name in ATTRIBUTES:
                self._codes[name].append(codes[name])
            self._item_features.append(features)
            self._prices.append(item.price)
        else:
            self.items[code] = item
            for name in ATTRIBUTES:
                self._codes[name][code] = codes[name]
            self._item_features[code] = features
            self._prices[code] = item.price
            self._arrays.clear()
        for sku, _ in item.variants:
            self.sku_item[sku] = code
        self._restock(code)
        self.changed = True
        return code

    def set_stock(self, sku: str, version: int, available: int) -> int | None:
        """Record a SKU's availability at its version; the product's code when its in-stock
        state changed. Older news is ignored: events of one SKU may arrive out of order (from
        several relays, or a stored projection loaded after a newer event was heard)."""
        if version < self._versions.get(sku, -1):
            return None
        self._versions[sku] = version
        self.available[sku] = available
        code = self.sku_item.get(sku)
        if code is None:
            return None
        was = bool(self.in_stock[code])
        self._restock(code)
        return code if bool(self.in_stock[code]) != was else None

    def _restock(self, code: int) -> None:
        self.in_stock[code] = any(self.available.get(sku, 0) > 0
                                  for sku, _ in self.items[code].variants)
        self._unsized.pop(code, None)

    def unsized_choice(self, code: int) -> rules.Choice:
        """What `rules.choose_variant` picks for a shopper of unknown size: the first variant
        with the most units; kept until the product's stock or variants change."""
        found = self._unsized.get(code)
        if found is None:
            sku, most = None, 0
            for candidate, _ in self.items[code].variants:
                units = self.available.get(candidate, 0)
                if units > most:  # the first with the most units, as max() picks
                    sku, most = candidate, units
            found = self._unsized[code] = rules.Choice(sku, None)
        return found

    def sellable(self, codes: IntArray) -> BoolArray:
        """Per code: a product of this catalogue with a SKU in stock."""
        in_stock = self.in_stock
        known = codes < len(in_stock)
        return known & in_stock[np.where(known, codes, 0)]

    def variants(self, code: int) -> list[rules.Variant]:
        return [rules.Variant(sku, size, self.available.get(sku, 0))
                for sku, size in self.items[code].variants]

    def value_code(self, attribute: str, value: str) -> int:
        """Dense code of an attribute value, -1 for unknown or empty."""
        if not value:
            return -1
        vocab = self.vocab[attribute]
        return vocab.setdefault(value.lower(), len(vocab))

    def codes(self, attribute: str) -> IntArray:
        """Per item, the code of its value of `attribute` (brand, category, colour)."""
        cached = self._arrays.get(attribute)
        if cached is None or len(cached) != len(self.items):
            cached = self._arrays[attribute] = np.asarray(self._codes[attribute], np.int64)
        return cached

    def feature(self, name: str) -> int | None:
        return self.features.get(name)

    def arrays(self) -> tuple[dict[str, IntArray], sp.csr_matrix]:
        """Per-item attribute codes and the item x feature matrix (tags and title words)."""
        attrs = {name: np.asarray(codes, np.int64) for name, codes in self._codes.items()}
        attrs["price_band"] = price_bands(np.asarray(self._prices, float))
        lengths = np.fromiter(map(len, self._item_features), np.int64, len(self.items))
        indptr = np.r_[0, np.cumsum(lengths)]
        indices = np.fromiter((f for fs in self._item_features for f in fs), np.int64,
                              int(indptr[-1]))
        matrix = sp.csr_matrix((np.ones(len(indices)), indices, indptr),
                               shape=(len(self.items), len(self.features)))
        return attrs, matrix


class RecentIds:
    """The last `size` event ids seen: an event heard again (the bus echoing what this process
    applied, or history loaded from the database) is recognised and applied once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


@dataclass
class Shopper:
    """What one shopper did lately, what they told us, and what they bought."""

    events: deque[tuple[int, int, float]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_PER_SHOPPER))
    seen: RecentIds = field(default_factory=lambda: RecentIds(4 * HISTORY_PER_SHOPPER))
    preferences: dict[str, list[str]] = field(default_factory=dict)
    searches: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    bought: set[int] = field(default_factory=set)

    @property
    def blank(self) -> bool:
        """Nothing is known of them yet: every blank shopper gets the same list."""
        return not (self.events or self.preferences or self.searches or self.bought)

    @property
    def size(self) -> str | None:
        stated = self.preferences.get("size")
        return stated[-1] if stated else None


class Pick(NamedTuple):  # a named tuple, as rules.Variant is: a list makes dozens
    product_id: str
    sku: str | None
    in_size: bool | None
    score: float
    reason: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """What a refit needs from the live catalogue, copied on the event loop."""

    code: dict[str, int]
    attributes: dict[str, IntArray]
    features: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return len(self.code)


@dataclass
class FitReport:
    events: int
    weights: dict[str, float]
    tuned_on: int  # validation targets, 0 when the starting blend was kept
    seconds: float
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)  # hyper-parameters chosen


class Engine:
    def __init__(self, max_shoppers: int = 100_000) -> None:
        self.catalogue = Catalogue()
        self.hybrid = Hybrid(default_components(DAY), STARTING_WEIGHTS)
        self.hybrid.fit(EventLog.build([], [], [], n_items=0))
        self.shoppers: OrderedDict[str, Shopper] = OrderedDict()
        self._loading: dict[str, Shopper] = {}
        self._heard = RecentIds(100_000)  # the models learn each event once
        self.max_shoppers = max_shoppers
        self._since_fit: list[Event] | None = None
        # session -> the customer it merged into (on login), oldest merge first
        self._merged: OrderedDict[str, str] = OrderedDict()

    # -- catalogue and stock ---------------------------------------------------------------

    def add_items(self, items: Iterable[Item]) -> None:
        """Products created or changed; the models see them at the next `share_catalogue`."""
        for item in items:
            self.catalogue.upsert(item)

    def share_catalogue(self) -> None:
        """Hand content similarity the current attribute arrays (the service calls this at
        most a few times a second: a product change must not cost every request O(catalogue))."""
        content = self.hybrid.components.get("content")
        if self.catalogue.changed and content is not None:
            self.catalogue.changed = False
            content.set_attributes(*self.catalogue.arrays())  # type: ignore[attr-defined]

    def set_stock(self, sku: str, version: int, available: int) -> int | None:
        return self.catalogue.set_stock(sku, version, available)

    # -- shoppers ------------------------------------------------------------------------

    def shopper(self, subject: str) -> Shopper | None:
        found = self.shoppers.get(subject)
        if found is not None:
            self.shoppers.move_to_end(subject)
        return found

    def begin_loading(self, subject: str) -> None:
        """A shopper's history is being read: events heard meanwhile are kept for them."""
        self._loading.setdefault(subject, Shopper())

    def remember(self, subject: str, history: Sequence[Mapping[str, Any]]) -> Shopper:
        """A shopper loaded from stored events; events heard while loading still count."""
        shopper = self._loading.pop(subject, None) or self.shoppers.get(subject) or Shopper()
        for row in history:
            self._apply(shopper, row)
        shopper.events = deque(sorted(shopper.events, key=lambda e: e[2]),
                               maxlen=HISTORY_PER_SHOPPER)
        self.shoppers[subject] = shopper
        if len(self.shoppers) > self.max_shoppers:
            self.shoppers.popitem(last=False)
        return shopper

    def merge(self, session_id: str, customer_id: str) -> None:
        """From now on the session is the customer (asked by every anonymous list, so held
        here rather than read per list; every process hears every merge from the bus)."""
        self._merged[session_id] = customer_id
        self._merged.move_to_end(session_id)
        if len(self._merged) > MAX_MERGED_SESSIONS:
            self._merged.popitem(last=False)

    def customer_of(self, session_id: str) -> str | None:
        return self._merged.get(session_id)

    def forget(self, subject: str) -> None:
        self.shoppers.pop(subject, None)
        self._loading.pop(subject, None)

    def observe(self, subject: str, row: Mapping[str, Any]) -> bool:
        """One behaviour event: teach the models, update the shopper if held; True if new."""
        if not self._heard.first_time(str(row["id"])):
            return False  # this process applied it on the way in; the bus brings it back
        shopper = self.shoppers.get(subject) or self._loading.get(subject)
        if shopper is not None and not self._apply(shopper, row):
            return False
        code = self.catalogue.code.get(row.get("product_id") or "")
        kind = KINDS.get(row["kind"])
        if code is not None and kind is not None:
            event = Event(seq_of(subject), code, epoch(row["occurred_at"]), kind)
            self.hybrid.update(event)
            if self._since_fit is not None:
                self._since_fit.append(event)
        return True

    def bought(self, subject: str, skus: Iterable[str]) -> None:
        """An order was paid: those products are bought (shown again only if replenished)."""
        shopper = self.shoppers.get(subject)
        if shopper is not None:
            shopper.bought |= {self.catalogue.sku_item[s] for s in skus
                               if s in self.catalogue.sku_item}

    def _apply(self, shopper: Shopper, row: Mapping[str, Any]) -> bool:
        if not shopper.seen.first_time(str(row["id"])):
            return False
        kind = row["kind"]
        if kind == "preference" and row.get("attribute") in PREFERENCES and row.get("value"):
            answers = shopper.preferences.setdefault(row["attribute"], [])
            answers.append(str(row["value"]).lower() if row["attribute"] != "size"
                           else str(row["value"]))
            del answers[:-5]
        elif kind == "search" and row.get("query"):
            shopper.searches.append(row["query"])
        code = self.catalogue.code.get(row.get("product_id") or "")
        if code is not None and kind in KINDS:
            shopper.events.append((code, KINDS[kind], epoch(row["occurred_at"])))
            if kind == "purchase":
                shopper.bought.add(code)
        return True

    # -- fitting -------------------------------------------------------------------------

    def start_fit(self) -> Snapshot:
        """Begin a refit: a snapshot for the fitting thread; events from now on are kept to
        replay onto the new model."""
        self._since_fit = []
        self.catalogue.changed = False
        attrs, features = self.catalogue.arrays()
        return Snapshot(dict(self.catalogue.code), attrs, features)

    def install(self, hybrid: Hybrid) -> None:
        """Swap in a model fitted off the loop, then teach it what happened meanwhile."""
        for event in self._since_fit or ():
            hybrid.update(event)
        self._since_fit = None
        self.hybrid = hybrid
        self.catalogue.changed = True
        self.share_catalogue()

    # -- serving -------------------------------------------------------------------------

    def model(self, config: Mapping[str, Any] | None) -> Hybrid:
        """The hybrid, one of its components alone, or the hybrid with other weights."""
        config = config or {}
        name = config.get("model", "hybrid")
        if name != "hybrid" and name in self.hybrid.components:
            return Hybrid({name: self.hybrid.components[name]}, {name: 1.0})
        if config.get("weights"):
            return Hybrid(self.hybrid.components, {**self.hybrid.weights, **config["weights"]})
        return self.hybrid

    def context(self, shopper: Shopper, where: str) -> tuple[Context, set[int]]:
        """The scoring context for a page, and the items that page must not recommend."""
        events = list(shopper.events)
        exclude = {code for code in shopper.bought
                   if not self.catalogue.items[code].replenishable}
        if where.startswith("product:"):
            code = self.catalogue.code.get(where.removeprefix("product:"))
            if code is not None:
                events.append((code, VIEW, time.time()))
                exclude.add(code)
        elif where == "cart":
            carted = [e for e in events if e[1] == CART]
            events = carted or events
            exclude |= {e[0] for e in carted}
        items = [e[0] for e in events]
        ctx = Context.of(items, [e[1] for e in events], [e[2] for e in events],
                         preferences=self._stated(shopper))
        return ctx, exclude

    def _stated(self, shopper: Shopper) -> dict[str, list[int]]:
        """Poll answers and search words as codes the content model understands."""
        stated: dict[str, list[int]] = {}
        for name in ATTRIBUTES:
            vocab = self.catalogue.vocab[name]
            codes = [vocab[v] for v in shopper.preferences.get(name, ()) if v in vocab]
            if codes:
                stated[name] = codes
        names = [f"tag:{t}" for t in shopper.preferences.get("tag", ())]
        names += [f"word:{w}" for q in shopper.searches for w in words(q)]
        features = [f for f in map(self.catalogue.feature, names) if f is not None]
        if features:
            stated["features"] = features
        return stated

    def recommend(self, shopper: Shopper, where: str, limit: int,
                  config: Mapping[str, Any] | None = None) -> list[Pick]:
        ctx, exclude = self.context(shopper, where)
        blend = self.model(config).blend(ctx)
        allowed = self.catalogue.sellable(blend.items)
        if exclude:
            allowed &= ~np.isin(blend.items, np.fromiter(exclude, np.int64, len(exclude)))
        # room to skip other sizes and repeat brands, no more
        ranked = rules.shortlist(blend.scores, allowed, 3 * limit)
        # Python values once (indexing an array per item costs more than the list)
        position = dict(zip(blend.items[ranked].tolist(), ranked.tolist(), strict=True))
        score = dict(zip(position, blend.scores[ranked].tolist(), strict=True))
        codes = list(position)
        if len(codes) < limit:  # too little signal: fill up with what is new and in stock
            codes += rules.newest(self.catalogue.in_stock, {*exclude, *codes},
                                  limit - len(codes)).tolist()
            score.update((c, 0.0) for c in codes if c not in score)
        # a variant is chosen before the re-rank only where the shopper's size can demote it
        choices = {c: self.choose(c, shopper.size) for c in codes} if shopper.size else {}
        adjusted = {c: (score[c] or 1e-9) * (rules.SIZE_MISS if c in choices
                                             and choices[c].in_size is False else 1.0)
                    for c in codes}
        brand = self.catalogue.codes("brand")
        category = self.catalogue.codes("category")
        picked = rules.diversify(codes, adjusted, brand, category, limit)
        top = max((score[c] for c in picked), default=0.0) or 1.0
        reasons = rules.main_reasons(blend.parts, [position.get(c) for c in picked])
        anchor = self.catalogue.items[int(ctx.items[-1])].title if len(ctx.items) else "this"
        # the shown score is the blend's, 0 for a filler with no signal behind it
        return [self._pick(c, choices.get(c) or self.choose(c, shopper.size), score[c] / top,
                           reason, ctx, anchor) for c, reason in zip(picked, reasons, strict=True)]

    def choose(self, code: int, size: str | None) -> rules.Choice:
        if size is None:
            return self.catalogue.unsized_choice(code)
        return rules.choose_variant(self.catalogue.variants(code), size)

    def _pick(self, code: int, choice: rules.Choice, score: float, reason: str,
              ctx: Context, anchor: str) -> Pick:
        if reason == "content" and ctx.preferences and not len(ctx.items):
            reason = "preference"
        item = self.catalogue.items[code]
        return Pick(item.product_id, choice.sku, choice.in_size, round(score, 4), reason,
                    rules.REASONS[reason].format(anchor=anchor))


def fit(snapshot: Snapshot, history: Sequence[Mapping[str, Any]], k: int = 20,
        trained: Artefacts | None = None, budget_seconds: float = FIT_BUDGET_SECONDS
        ) -> tuple[Hybrid, FitReport]:
    """Fit (and, with enough history, tune) a new hybrid; CPU work for a thread.

    Weights are tuned on a time split of the stored history (the last 20% of time as
    validation), as the offline evaluation does; a shop with too little keeps the starting blend.
    `trained` statistics (`instock recs train`, of a longer log than the history read here)
    replace the ones the history gives.
    """
    began = time.perf_counter()
    log = history_log(snapshot, history)
    span = max(float(np.ptp(log.time)) if len(log) else 0.0, DAY)
    weights = dict(STARTING_WEIGHTS)
    changes: dict[str, dict[str, Any]] = {}
    split = Split(log, time_split(log.time), snapshot.n_items)
    positions = target_positions(split)
    tuned = len(positions) >= MIN_TUNING_TARGETS
    if tuned:
        from instock.recommendations.evaluate import tune_hybrid  # heavy: not on every import

        chosen = tune_hybrid(split, positions, k, budget_seconds=budget_seconds)
        weights, changes = chosen.weights, chosen.changes
    hybrid = Hybrid(serving_components(span, changes), weights)
    hybrid.fit(log)
    if trained is not None:
        install(trained, hybrid, snapshot.code)
    return hybrid, FitReport(len(log), weights, len(positions) if tuned else 0,
                             round(time.perf_counter() - began, 2), changes)


def serving_components(span: float, changes: Mapping[str, Mapping[str, Any]] | None = None
                       ) -> dict[str, Any]:
    """The default components with the hyper-parameters a refit chose changed."""
    components = configured(span, changes or {})
    components["sknn"].auto_flush = False  # type: ignore[attr-defined]
    return components


def history_log(snapshot: Snapshot, history: Sequence[Mapping[str, Any]]) -> EventLog:
    """Stored behaviour rows as the models' event log (items the catalogue lost are dropped)."""
    seq, item, when, kind = [], [], [], []
    for row in history:
        code = snapshot.code.get(row.get("product_id") or "")
        if code is None or row["kind"] not in KINDS:
            continue
        subject = subject_of(row.get("customer_id"), row.get("session_id"))
        seq.append(seq_of(subject))
        item.append(code)
        when.append(epoch(row["occurred_at"]))
        kind.append(KINDS[row["kind"]])
    log = EventLog.build(seq, item, when, kind, snapshot.n_items, snapshot.attributes)
    log.features = snapshot.features
    return log


def seq_of(subject: str) -> int:
    """A shopper's sequence number for the models: the same in every process and every refit."""
    return int.from_bytes(hashlib.blake2b(subject.encode(), digest_size=7).digest(), "big")


def subject_of(customer_id: str | None, session_id: str | None) -> str:
    """The key a shopper is known by: the customer when known, else the session."""
    return f"c:{customer_id}" if customer_id else f"s:{session_id}"


def epoch(value: datetime | str | float) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value)




