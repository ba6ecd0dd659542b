"""Each model on tiny hand-made logs: the obviously right item comes first, updates count."""

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instock.recommendations import model as model_module
from instock.recommendations.data import CART, PURCHASE, VIEW, Context, Event, EventLog
from instock.recommendations.model import (
    VOTED_VALUES,
    Component,
    ContentSimilarity,
    CoOccurrence,
    CustomerAffinity,
    Hybrid,
    PairCounts,
    Recommender,
    SequentialRules,
    SessionKNN,
    Trending,
    default_components,
    normalise,
    only,
)


def log_of(sessions: list[list[int]], n_items: int = 6, **attrs: list[int]) -> EventLog:
    seq = [s for s, items in enumerate(sessions) for _ in items]
    item = [i for items in sessions for i in items]
    return EventLog.build(seq, item, np.arange(len(item)), None, n_items, attrs)


def best(model: Recommender, ctx: Context, exclude: tuple[int, ...] = ()) -> int:
    scores = model.score(ctx).copy()
    scores[list(exclude)] = -np.inf
    return int(np.argmax(scores))


SESSIONS = [[0, 1, 2], [0, 1], [3, 1, 0], [4, 5], [4, 5, 2], [1, 2]]


def test_popularity_and_trending_differ_as_time_decays() -> None:
    # item 0 is viewed often long ago, item 1 twice just now
    log = EventLog.build([0, 1, 2, 3, 4], [0, 0, 0, 1, 1], [0, 1, 2, 99, 100], None, 3)
    popular, trending = Trending(), Trending(half_life=5.0)
    popular.fit(log)
    trending.fit(log)
    assert best(popular, Context.of([])) == 0
    assert best(trending, Context.of([])) == 1


def test_trending_update_counts_one_event() -> None:
    model = Trending(half_life=10.0)
    model.fit(log_of(SESSIONS))
    before = model.score(Context.of([]))
    model.update(Event(seq=99, item=3, time=1000.0, kind=VIEW))
    after = model.score(Context.of([]))
    assert best(model, Context.of([])) == 3  # the newest event outweighs decayed history
    assert after[3] > before[3]


def test_trending_reanchors_without_overflow() -> None:
    model = Trending(half_life=1.0)
    model.fit(log_of(SESSIONS))
    for step in range(1, 5):
        model.update(Event(seq=1, item=step % 6, time=1e6 * step))
    scores = model.score(Context.of([]))
    assert np.all(np.isfinite(scores))
    assert best(model, Context.of([])) == 4


def test_cooccurrence_ranks_the_most_frequent_companion_first() -> None:
    model = CoOccurrence()
    model.fit(log_of(SESSIONS))
    assert best(model, Context.of([4]), exclude=(4,)) == 5
    assert best(model, Context.of([0]), exclude=(0,)) == 1


def test_cooccurrence_over_whole_sequences_counts_every_pair_of_positions() -> None:
    log = log_of([[0, 1, 0, 2], [1, 1], [3, 0, 1, 4, 5, 0]], n_items=6)
    whole, windowed = CoOccurrence(window=None), CoOccurrence(window=10)
    whole.fit(log)
    windowed.fit(log)
    for item in range(6):
        ctx = Context.of([item])
        np.testing.assert_allclose(whole.score(ctx), windowed.score(ctx))
    # by hand: 0 and 1 share session 0 (2 x 1 pairs) and session 2 (2 x 1 pairs)
    assert whole.score(Context.of([0]))[1] == 4
    assert whole.score(Context.of([1]))[1] == 2  # the two 1s of session 1, both directions


def test_cooccurrence_online_update_changes_scores() -> None:
    model = CoOccurrence()
    model.fit(log_of(SESSIONS))
    for _ in range(3):
        model.update(Event(seq=50, item=4, time=1.0))
        model.update(Event(seq=50, item=3, time=2.0))
    assert best(model, Context.of([4]), exclude=(4,)) == 3


def test_sequential_rules_respect_direction() -> None:
    model = SequentialRules(steps=2)
    model.fit(log_of([[0, 1], [0, 1], [1, 2], [2, 0]]))
    assert best(model, Context.of([0]), exclude=(0,)) == 1
    assert best(model, Context.of([1]), exclude=(1,)) == 2  # not 0: 1 never leads to 0
    assert model.score(Context.of([1]))[0] == 0.0


def test_sequential_rules_online_update() -> None:
    model = SequentialRules()
    model.fit(log_of([[0, 1], [0, 1]]))
    for s in range(3):
        model.update(Event(seq=10 + s, item=0, time=1.0))
        model.update(Event(seq=10 + s, item=5, time=2.0))
    assert best(model, Context.of([0]), exclude=(0,)) == 5


def test_sequential_rules_by_hand() -> None:
    """[0, 1, 2, 1] with steps=2 gives 0->1 1, 1->2 1, 0->2 1/2, 2->1 1 and 1->1 1/2 (the
    repeat; 0 is three steps before it); [0, 2] adds 0->2 1; [3, 4] and [3, 5] tie."""
    log = log_of([[0, 1, 2, 1], [0, 2], [3, 4], [3, 5]])
    model = SequentialRules(steps=2, pruning=0)
    model.fit(log)
    np.testing.assert_allclose(model.score(Context.of([0])), [0, 1, 1.5, 0, 0, 0])
    np.testing.assert_allclose(model.score(Context.of([1])), [0, 0.5, 1, 0, 0, 0])
    np.testing.assert_allclose(model.score(Context.of([2])), [0, 1, 0, 0, 0, 0])
    pruned = SequentialRules(steps=2, pruning=1)  # each item keeps its strongest rule
    pruned.fit(log)
    np.testing.assert_allclose(pruned.score(Context.of([0])), [0, 0, 1.5, 0, 0, 0])
    np.testing.assert_allclose(pruned.score(Context.of([1])), [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(pruned.score(Context.of([3])), [0, 0, 0, 0, 1, 0])


def session_rec_rules(sessions: list[list[int]], steps: int, pruning: int) -> dict[int, dict[
        int, float]]:
    """session-rec's sr.py fit (weighting 'div'), transcribed loop for loop."""
    rules: dict[int, dict[int, float]] = {}
    for items in sessions:
        last: list[int] = []
        for item in items:
            for i in range(1, min(steps, len(last)) + 1):
                row = rules.setdefault(last[-i], {})
                row[item] = row.get(item, 0.0) + 1.0 / i
            last.append(item)
    # most_common keeps insertion order among ties; ours keeps the lower item: compare sets
    # of scores, which agree either way
    return {a: dict(sorted(row.items(), key=lambda kv: -kv[1])[:pruning])
            for a, row in rules.items()}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), min_size=1, max_size=12), min_size=1, max_size=10),
       st.integers(1, 5), st.integers(1, 4))
def test_sequential_rules_match_session_rec(sessions: list[list[int]], steps: int,
                                            pruning: int) -> None:
    model = SequentialRules(steps=steps, pruning=pruning)
    model.fit(log_of(sessions, n_items=10))
    for a, row in session_rec_rules(sessions, steps, pruning).items():
        scores = model.score(Context.of([a]))
        assert sorted(scores[scores > 0].tolist()) == pytest.approx(sorted(row.values()))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=6), min_size=2, max_size=8),
    st.integers(1, 6),
)
def test_online_updates_equal_batch_fit(sessions: list[list[int]], cut: int) -> None:
    """Fitting on a prefix and then streaming the rest gives the same model as one fit."""
    cut = min(cut, len(sessions) - 1)
    full = log_of(sessions, n_items=8)
    head = log_of(sessions[:cut], n_items=8)
    for make in (lambda: SequentialRules(steps=3, context_size=2), lambda: CoOccurrence(window=4)):
        batch, online = make(), make()
        batch.fit(full)
        online.fit(head)
        for s, items in enumerate(sessions[cut:], start=cut):
            for pos, item in enumerate(items):
                online.update(Event(seq=s, item=item, time=float(pos)))
        for ctx in ([0], [1, 2], [7, 3, 3]):
            np.testing.assert_allclose(online.score(Context.of(ctx)), batch.score(Context.of(ctx)))


def test_pair_counts_compaction_keeps_totals() -> None:
    pairs = PairCounts(3, compact_at=4)
    for r, c in ((0, 1), (0, 1), (1, 2), (2, 0), (0, 4)):
        pairs.add(r, c, 1.0)
    assert pairs.n == 5
    np.testing.assert_allclose(pairs.combine(np.array([0]), np.array([1.0])).dense(5),
                               [0, 2, 0, 0, 1])
    pairs.compact()
    assert pairs.delta == {}
    np.testing.assert_allclose(
        pairs.combine(np.array([0, 0]), np.array([1.0, 1.0])).dense(5), [0, 4, 0, 0, 2]
    )


def test_session_knn_votes_with_similar_sessions() -> None:
    model = SessionKNN(k=2)
    model.fit(log_of([[0, 1, 2], [0, 1, 2], [3, 4], [3, 4, 5]]))
    assert best(model, Context.of([0, 1]), exclude=(0, 1)) == 2
    assert best(model, Context.of([3]), exclude=(3,)) == 4


def test_session_knn_update_and_no_self_neighbour() -> None:
    model = SessionKNN(k=5)
    model.fit(log_of([[0, 1], [2, 3]]))
    model.update(Event(seq=7, item=0, time=1.0))
    model.update(Event(seq=7, item=5, time=2.0))
    assert model.score(Context.of([0]))[5] > 0  # the new session is now a neighbour
    # ...but not a neighbour of itself, or it would just echo its own items back
    own = model.score(Context.of([0, 5], seq=7))
    assert own[1] > 0 and own[5] == 0


def test_content_similarity_prefers_same_category_and_answers_polls() -> None:
    log = log_of([[0, 1], [1, 1, 2], [3]], category=[0, 0, 1, 1, 2, 2])
    model = ContentSimilarity()
    model.fit(log)
    # context: item 2 (category 1) -> item 3 is the other category-1 item
    assert best(model, Context.of([2]), exclude=(2,)) == 3
    cold = model.score(Context.of([], preferences={"category": [0]}))
    assert best(model, Context.of([], preferences={"category": [0]})) == 1  # popular in category 0
    assert cold[2] == cold[4] == 0


def test_customer_affinity_weighs_kinds_and_recency() -> None:
    model = CustomerAffinity(kind_weights=(1.0, 3.0, 1.0, 0.0, 0.0), decay=0.9)
    model.fit(log_of(SESSIONS))
    ctx = Context.of([0, 1, 2], kinds=[CART, VIEW, PURCHASE])
    scores = model.score(ctx)
    assert best(model, ctx) == 0  # carted beats merely viewed, even if viewed later
    assert scores[2] == 0  # purchases weigh nothing with these weights
    carts = CustomerAffinity(only(CART))
    carts.fit(log_of(SESSIONS))
    assert list(np.flatnonzero(carts.score(ctx))) == [0]


def test_scores_for_candidates_and_unknown_items() -> None:
    model = CoOccurrence()
    model.fit(log_of(SESSIONS))
    full = model.score(Context.of([0, 99]))  # 99 is unknown to the model: ignored
    np.testing.assert_allclose(
        model.score(Context.of([0]), np.array([1, 2, 40])), [*full[[1, 2]], 0]
    )


def test_hybrid_blends_normalised_scores_with_weights() -> None:
    log = log_of(SESSIONS)
    parts: dict[str, Recommender] = {"pop": Trending(), "co": CoOccurrence()}
    ctx = Context.of([4])
    only_co = Hybrid(parts, {"pop": 0.0, "co": 1.0})
    only_co.fit(log)
    np.testing.assert_allclose(only_co.score(ctx), normalise(parts["co"].score(ctx)))
    both = Hybrid(parts, {"pop": 1.0, "co": 2.0})
    expected = normalise(parts["pop"].score(ctx)) + 2 * normalise(parts["co"].score(ctx))
    np.testing.assert_allclose(both.score(ctx), expected)
    both.update(Event(seq=9, item=3, time=100.0))
    assert both.score(ctx)[3] > expected[3]


def test_default_components_all_fit_and_score() -> None:
    log = log_of(SESSIONS, category=[0, 0, 1, 1, 2, 2])
    hybrid = Hybrid(default_components(time_span=float(log.time.max())))
    hybrid.fit(log)
    scores = hybrid.score(Context.of([4, 5], kinds=[VIEW, CART]))
    assert scores.shape == (6,) and np.all(np.isfinite(scores))
    opinions = hybrid.opinions(Context.of([4]), weighted_only=False)
    candidates = hybrid.candidates(opinions)
    scaled = hybrid.component_scores(opinions, candidates)
    assert scaled.shape == (len(hybrid.components), len(candidates))
    assert np.all(scaled.max(axis=1) <= 1.0) and np.isclose(scaled.max(), 1.0)


@pytest.mark.parametrize("decay", [0.5, 1.0])
def test_normalise_keeps_order(decay: float) -> None:
    x = np.array([0.0, 2.0, 1.0]) * decay
    assert normalise(x).max() == pytest.approx(1.0)
    assert list(np.argsort(normalise(x))) == list(np.argsort(x))
    assert not math.isnan(normalise(np.zeros(3)).sum())


def _true_top(scores: np.ndarray, n: int) -> set[int]:
    """The items an exact top-n must hold: every item scoring above the n-th best."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) <= n:
        return set(positive.tolist())
    kth = np.sort(scores[positive])[-n]
    return set(np.flatnonzero(scores > kth).tolist())


random_sessions = st.lists(st.lists(st.integers(0, 29), min_size=1, max_size=8),
                           min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(sessions=random_sessions, context=st.lists(st.integers(0, 29), max_size=6),
       later=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 29)), max_size=20),
       n=st.integers(1, 12))
def test_opinions_agree_with_dense_scores_and_their_top_is_exact(
        sessions: list[list[int]], context: list[int], later: list[tuple[int, int]],
        n: int) -> None:
    """What serving asks of each component (its best n, its scores at candidates) is exactly
    what the dense scores say, also after online updates. Content's top is an approximation
    (the most popular items of the values it votes for most), exact when it votes for no more
    than VOTED_VALUES values of an attribute and every value's items fit in its slots: here
    MIN_SLOTS is raised to the most items a value has (8)."""
    log = log_of(sessions, n_items=30, category=[i % 4 for i in range(30)],
                 brand=[i % VOTED_VALUES for i in range(30)])
    hybrid = Hybrid(default_components(time_span=100.0))
    hybrid.fit(log)
    for t, (seq, item) in enumerate(later):
        hybrid.update(Event(seq=100 + seq, item=item, time=1000.0 + t))
    ctx = Context.of(context, seq=100 if later else None)
    probe = np.array([0, 3, 17, 29, 31, 500])
    for name, opinion in hybrid.opinions(ctx, weighted_only=False).items():
        dense = hybrid.components[name].score(ctx)
        depth = 8 * VOTED_VALUES if name == "content" else n
        with mock.patch.object(model_module, "MIN_SLOTS", 8):
            top = set(opinion.top(depth).tolist())
        assert _true_top(dense, depth) <= top, name
        assert len(top) == min(depth, int((dense > 0).sum())), name
        assert all(dense[i] > 0 for i in top), name
        expected = [dense[i] if i < len(dense) else 0.0 for i in probe]
        np.testing.assert_allclose(opinion.at(probe), expected, err_msg=name)


def test_trending_top_stays_exact_across_pool_rebuilds() -> None:
    model = Trending(half_life=50.0)
    model.POOL, model.REBUILD_AFTER = 4, 3
    model.fit(log_of(SESSIONS, n_items=20))
    rng = np.random.default_rng(1)
    for t in range(200):
        model.update(Event(seq=1, item=int(rng.integers(20)), time=10.0 + t))
        assert _true_top(model.counts, 3) <= set(model.top(3).tolist())


def test_hybrid_blends_only_its_candidates() -> None:
    log = log_of(SESSIONS, n_items=6)
    parts: dict[str, Component] = {"pop": Trending(), "co": CoOccurrence()}
    hybrid = Hybrid(parts, {"pop": 1.0, "co": 2.0})
    hybrid.fit(log)
    ctx = Context.of([4])
    blend = hybrid.blend(ctx)
    expected = normalise(parts["pop"].score(ctx)) + 2 * normalise(parts["co"].score(ctx))
    np.testing.assert_allclose(blend.scores, expected[blend.items])
    np.testing.assert_allclose(blend.parts["pop"] + blend.parts["co"], blend.scores)
    # with a candidate depth of one, only each component's best item is blended
    narrow = hybrid.candidates(hybrid.opinions(ctx), depth=1)
    assert set(narrow.tolist()) == {int(np.argmax(parts["pop"].score(ctx))),
                                    int(np.argmax(parts["co"].score(ctx)))}
