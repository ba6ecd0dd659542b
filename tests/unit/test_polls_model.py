"""Polls' pure rules: validation, which poll a shopper sees, Wilson intervals, aggregates."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from instock.customers.model import merge_stated
from instock.polls import model
from instock.polls.model import Choice, InvalidPoll, Option, Poll, Question, Shown

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def poll(poll_id: str = "p1", *, contexts: tuple[str, ...] = ("product_page",),
         products: tuple[str, ...] = (), categories: tuple[str, ...] = (),
         created: datetime = NOW - HOUR, ends: datetime | None = None) -> Poll:
    sizes = Question("size", "Your size?", (Option("s", "S", {"size": "S"}),
                                            Option("m", "M", {"size": "M"}),
                                            Option("l", "L", {"size": "L"})))
    brand = Question("brand", "Favourite brand?", (
        Option("acme", "Acme", {"brand": "Acme"}), Option("nova", "Nova", {"brand": "Nova"}),
        Option("none", "No idea", {})))
    return Poll(poll_id, "Sizes", (sizes, brand), contexts, products, categories,
                NOW - 2 * HOUR, ends, created, "merchandiser:m")


def test_a_valid_poll_passes_and_bad_ones_name_the_field() -> None:
    assert model.check_poll(poll()) == poll()
    one_option = replace(poll(), questions=(Question("q", "?", (Option("a", "A", {}),)),))
    cases = [
        (replace(poll(), contexts=("homepage",)), "contexts[0]"),
        (replace(poll(), questions=()), "questions"),
        (one_option, "questions[0].options"),
        (replace(poll(), questions=(poll().questions[0], poll().questions[0])), "questions[1].id"),
        (replace(poll(), questions=(Question("q", "?", (
            Option("a", "A", {"shoe_width": "wide"}), Option("b", "B", {}))),)),
         "questions[0].options[0].attributes.shoe_width"),
        (poll(contexts=("sold_out",), products=("tee",)), "product_ids"),
        (poll(ends=NOW - 3 * HOUR), "ends_at"),
    ]
    for bad, field in cases:
        with pytest.raises(InvalidPoll) as caught:
            model.check_poll(bad)
        assert caught.value.field == field


def test_answers_name_the_unknown_question_or_option() -> None:
    p = poll()
    good = [Choice("size", "m"), Choice("brand", "nova")]
    assert model.check_answer(p, good, NOW) == tuple(good)
    for choices, field in [([Choice("size", "xxl")], "answers[0].option_id"),
                           ([Choice("size", "m"), Choice("colour", "red")],
                            "answers[1].question_id"),
                           ([Choice("size", "m"), Choice("size", "s")], "answers[1].question_id"),
                           ([], "answers")]:
        with pytest.raises(InvalidPoll) as caught:
            model.check_answer(p, choices, NOW)
        assert caught.value.field == field
    with pytest.raises(InvalidPoll):
        model.check_answer(poll(ends=NOW - HOUR), good, NOW)  # closed


def test_an_answer_maps_to_attributes_in_its_event() -> None:
    p = poll()
    answer = model.Answer("a1", "p1", "s1", None, (Choice("size", "m"), Choice("brand", "none")),
                          NOW)
    event = model.answered(p, answer)
    assert [(a.attribute, a.value) for a in event.attributes] == [("size", "M")]
    assert event.subject == "a1" and event.sequence is None


def choose(polls: list[Poll], **kwargs: object) -> str | None:
    args: dict[str, object] = {"context": "product_page", "now": NOW, "answered": set(),
                               "last_shown": None, "interval": timedelta(minutes=30)}
    args.update(kwargs)
    chosen = model.choose(polls, **args)  # type: ignore[arg-type]
    return chosen.id if chosen else None


def test_the_next_poll_is_open_for_the_context_and_not_answered() -> None:
    general = poll("general", created=NOW - HOUR)
    newer = poll("newer", created=NOW - timedelta(minutes=5))
    for_tee = poll("tee", products=("tee",), created=NOW - 3 * HOUR)
    for_caps = poll("caps", categories=("caps",))
    closed = poll("closed", ends=NOW - HOUR / 2, created=NOW)
    sold_out = poll("sold", contexts=("sold_out",))
    everything = [general, newer, for_tee, for_caps, closed, sold_out]
    assert choose(everything) == "newer"  # newest general one; targeted ones need their page
    assert choose(everything, product_id="tee") == "tee"  # its own product's first
    assert choose(everything, product_id="cap-1", category="caps") == "caps"
    assert choose(everything, context="sold_out") == "sold"
    assert choose(everything, context="checkout_abandoned") is None
    assert choose(everything, answered={"newer"}) == "general"
    assert choose(everything, answered={"newer", "general"}) is None


def test_one_poll_per_session_per_interval() -> None:
    polls = [poll("a", created=NOW - HOUR), poll("b", created=NOW - 2 * HOUR)]
    recently = Shown("a", NOW - timedelta(minutes=10))
    assert choose(polls, last_shown=recently) == "a"  # the same again (a reload)
    assert choose(polls, last_shown=recently, answered={"a"}) is None  # not another yet
    later = Shown("a", NOW - timedelta(minutes=31))
    assert choose(polls, last_shown=later, answered={"a"}) == "b"


def by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson interval, written out: (p + z²/2n ± z √(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    z = 1.959963984540054
    p = k / n
    root = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((p + z * z / (2 * n) - root) / (1 + z * z / n),
            (p + z * z / (2 * n) + root) / (1 + z * z / n))


def test_wilson_intervals_match_the_formula_and_known_values() -> None:
    for k, n in [(3, 10), (0, 5), (5, 5), (50, 100), (1, 1000)]:
        low, high = model.wilson(k, n)
        expected = by_hand(k, n)
        assert low == pytest.approx(max(0.0, expected[0]), abs=1e-12)
        assert high == pytest.approx(min(1.0, expected[1]), abs=1e-12)
    # published values: 3 of 10 -> [0.1078, 0.6032]; 0 of 10 -> [0, 0.2775]
    assert model.wilson(3, 10) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert model.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert model.wilson(0, 0) == (0.0, 1.0)


def test_results_share_per_option_and_per_attribute() -> None:
    counts = {("size", "s"): 1, ("size", "m"): 3, ("size", "l"): 2, ("brand", "nova"): 4}
    results = model.results(poll(), counts, respondents=6)
    size, brand = results.questions
    assert size.answers == 6 and brand.answers == 4
    assert size.options["m"].share == pytest.approx(0.5)
    assert (size.options["m"].low, size.options["m"].high) == pytest.approx(by_hand(3, 6))
    assert brand.options["acme"].count == 0 and brand.options["nova"].share == 1.0
    curve = results.attributes["size"]
    assert {v: s.share for v, s in curve.items()} == pytest.approx(
        {"S": 1 / 6, "M": 3 / 6, "L": 2 / 6})
    assert set(results.attributes) == {"brand", "size"}  # "No idea" maps to nothing


def test_answers_merge_into_a_profiles_preferences() -> None:
    merged = merge_stated({"brand": "Acme", "newsletter": True, "size": ["S", "M"]},
                          [("brand", "Nova"), ("size", "S"), ("colour", "red")])
    assert merged == {"brand": ["Acme", "Nova"], "newsletter": True, "size": ["M", "S"],
                      "colour": ["red"]}
