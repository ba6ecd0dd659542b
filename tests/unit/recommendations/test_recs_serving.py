"""The serving engine and its list rules, without I/O: stock, sizes, bought items, variety,
cold start from stated preferences, and a refit that tunes its blend on stored history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from instock.recommendations import rules
from instock.recommendations.comparison import hyper_parameters
from instock.recommendations.data import VIEW
from instock.recommendations.engine import Engine, Item, fit, serving_components, subject_of
from instock.recommendations.logs import RawEvents
from instock.recommendations.training import AlsSettings, train_local


def item(pid: str, brand: str = "Acme", category: str = "hoodies",
         sizes: tuple[str, ...] = ("M",), replenishable: bool = False,
         tags: tuple[str, ...] = ()) -> Item:
    return Item(pid, f"{brand} {category} {pid}", brand, category, "", list(tags), 40.0,
                replenishable, [(f"{pid}-{s}", s) for s in sizes])


def engine_with(*items: Item, stock: int = 5) -> Engine:
    engine = Engine()
    engine.add_items(items)
    for it in items:
        for sku, _ in it.variants:
            engine.set_stock(sku, 1, stock)
    engine.share_catalogue()
    return engine


T0 = datetime(2026, 11, 1, tzinfo=UTC)
_ids = iter(range(10**9))


def event(kind: str, product_id: str | None = None, at: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"e{next(_ids)}", "kind": kind, "product_id": product_id,
            "occurred_at": T0 + timedelta(seconds=at), **extra}


def shown(engine: Engine, subject: str, where: str = "home", limit: int = 10) -> list[str]:
    shopper = engine.shopper(subject) or engine.remember(subject, [])
    return [p.product_id for p in engine.recommend(shopper, where, limit)]


def test_choose_variant_prefers_the_shoppers_size_in_stock() -> None:
    variants = [rules.Variant("t-S", "S", 3), rules.Variant("t-M", "M", 0),
                rules.Variant("t-L", "L", 9)]
    assert rules.choose_variant(variants, "S") == rules.Choice("t-S", True)
    assert rules.choose_variant(variants, "M") == rules.Choice("t-L", False)  # M sold out
    assert rules.choose_variant(variants, None) == rules.Choice("t-L", None)
    assert rules.choose_variant([rules.Variant("x", None, 0)], "M") == rules.Choice(None, None)


def test_diversify_mixes_brands_but_keeps_the_best_first() -> None:
    brand = np.array([0, 0, 0, 0, 1, 2])
    category = np.array([0, 0, 0, 0, 0, 1])
    scores = {0: 1.0, 1: 0.95, 2: 0.9, 3: 0.85, 4: 0.6, 5: 0.5}
    picked = rules.diversify(list(scores), scores, brand, category, 4)
    assert picked[0] == 0
    assert len({int(brand[i]) for i in picked}) >= 2


def test_stock_events_decide_what_may_be_shown() -> None:
    engine = engine_with(item("a"), item("b"), item("c"))
    engine.observe("s:1", event("view", "a"))
    assert set(shown(engine, "s:1")) == {"a", "b", "c"}
    assert engine.set_stock("b-M", 2, 0) == engine.catalogue.code["b"]  # in-stock state flipped
    assert "b" not in shown(engine, "s:1")
    engine.set_stock("b-M", 3, 2)
    assert "b" in shown(engine, "s:1")


def test_preference_answers_start_a_new_visitors_list() -> None:
    engine = engine_with(*(item(f"a{i}", brand="Acme") for i in range(3)),
                         *(item(f"n{i}", brand="Nova") for i in range(3)))
    shopper = engine.remember("s:new", [event("preference", attribute="brand", value="Nova")])
    picks = engine.recommend(shopper, "home", 3)
    assert {p.product_id for p in picks} == {"n0", "n1", "n2"}
    assert picks[0].reason == "preference"


def test_bought_items_return_only_when_replenished() -> None:
    engine = engine_with(item("tee"), item("balm", category="cosmetics", replenishable=True),
                         item("cap", category="caps"))
    engine.remember("c:1", [event("purchase", "tee"), event("purchase", "balm", at=1)])
    assert "tee" not in shown(engine, "c:1")
    assert "balm" in shown(engine, "c:1")


def test_product_and_cart_pages_leave_out_what_is_already_there() -> None:
    engine = engine_with(*(item(f"p{i}") for i in range(5)))
    engine.remember("s:1", [event("add_to_cart", "p1")])
    assert "p3" not in shown(engine, "s:1", "product:p3")
    assert "p1" not in shown(engine, "s:1", "cart")


def test_an_event_heard_twice_counts_once() -> None:
    engine = engine_with(item("a"), item("b"))
    engine.remember("s:1", [])
    view = event("view", "a")
    assert engine.observe("s:1", view) is True
    assert engine.observe("s:1", view) is False
    assert len(engine.shopper("s:1").events) == 1  # type: ignore[union-attr]
    # a shopper this process does not hold: the models still learn the event only once
    other = event("view", "b")
    assert engine.observe("s:2", other) is True
    assert engine.observe("s:2", other) is False


def test_a_refit_tunes_the_blend_on_stored_history() -> None:
    # 300 sessions, each walking a "category" of 5 items in order: next-item structure that a
    # tuned blend must find, and enough validation targets to tune on.
    engine = engine_with(*(item(f"i{c}-{k}", category=f"c{c}") for c in range(20)
                           for k in range(5)))
    rng = np.random.default_rng(1)
    history = []
    for s in range(300):
        c = int(rng.integers(20))
        for k in range(5):
            history.append({**event("view", f"i{c}-{k}", at=s * 10 + k),
                            "session_id": f"s{s}", "customer_id": None})
    hybrid, report = fit(engine.start_fit(), history)
    engine.install(hybrid)
    assert report.events == 1500 and report.tuned_on > 0
    assert report.weights != {}
    # what is served is what was chosen: every component (ALS too), with the chosen changes
    assert set(hybrid.components) == set(report.weights)
    for name, change in report.changes.items():
        assert hyper_parameters(hybrid.components[name]).items() >= change.items()
    served = serving_components(1.0, {"sknn": {"k": 7}, "als": {"factors": 8}})
    assert hyper_parameters(served["sknn"])["k"] == 7 and not served["sknn"].auto_flush
    assert hyper_parameters(served["als"])["factors"] == 8
    shopper = engine.remember(subject_of(None, "fresh"), [event("view", "i3-1")])
    top = [p.product_id for p in engine.recommend(shopper, "home", 3)]
    assert "i3-2" in top  # what follows i3-1 in every stored session


def test_a_refit_takes_the_counts_of_a_trained_artefact() -> None:
    # trained elsewhere on a log where z always follows a; the refit's own history is empty
    raw = RawEvents()
    for s in range(30):
        for k, pid in enumerate(("a", "z", "gone")):
            raw.add(f"s{s}", pid, float(s * 10 + k), VIEW)
    trained = train_local(raw, AlsSettings(4, 0.1, 10.0, 2, 0))
    # the catalogue codes products in another order, and no longer has "gone"
    engine = engine_with(*(item(pid) for pid in ("m", "z", "n", "a", "o")))
    hybrid, report = fit(engine.start_fit(), [], trained=trained)
    engine.install(hybrid)
    assert report.events == 0
    code = engine.catalogue.code
    sequential = engine.hybrid.components["sequential"].pairs.base  # type: ignore[attr-defined]
    assert sequential[code["a"], code["z"]] == 30.0 and sequential.sum() == 30.0
    shopper = engine.remember(subject_of(None, "fresh"), [event("view", "a")])
    assert shown(engine, subject_of(None, "fresh"))[0] == "z"
    assert shopper.events


def test_merged_sessions_are_remembered_newest_kept(monkeypatch: Any) -> None:
    from instock.recommendations import engine as engine_module

    monkeypatch.setattr(engine_module, "MAX_MERGED_SESSIONS", 2)
    engine = Engine()
    assert engine.customer_of("s1") is None
    engine.merge("s1", "alice")
    engine.merge("s2", "bob")
    engine.merge("s1", "alice")  # heard again (the bus echoes this process's own merge)
    engine.merge("s3", "carol")  # over the bound: the oldest merge (s2) is forgotten
    assert [engine.customer_of(s) for s in ("s1", "s2", "s3")] == ["alice", None, "carol"]


def test_main_reasons_name_the_largest_share() -> None:
    parts = {"trending": np.array([0.5, 0.0, 0.2]), "content": np.array([0.1, 0.0, 0.2])}
    # index 2 ties: the earlier component; index 1 has no share; None is a filler
    assert rules.main_reasons(parts, [0, 1, None, 2]) == ["trending", "new", "new", "trending"]
    assert rules.main_reasons({}, [0, None]) == ["new", "new"]


def test_every_served_component_has_a_reason_to_show() -> None:
    """A pick names the component that scored it most; each must have words for shoppers."""
    assert set(serving_components(86_400.0)) <= set(rules.REASONS)
