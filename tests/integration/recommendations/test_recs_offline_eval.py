"""The offline evaluation on the real shared data sets (../shared/data, never copied here).

instock's hybrid must beat every baseline of the same run on HR@20 and MRR@20. The baselines'
figures are also checked against the published ones for these files: that is what shows the
protocol is implemented as specified, and that the baselines are not strawmen.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from instock.recommendations.cli import recs_app
from instock.recommendations.evaluate import evaluate

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
YOOCHOOSE = DATA / "yoochoose_rsc15_100k"
TAOBAO = DATA / "taobao_userbehavior_subset" / "UserBehavior_subset.csv"
REES46 = DATA / "rees46_schema_sample" / "2019-Oct-sample.csv"
BASELINES = ("popularity", "cooccurrence", "sequential_rules", "als")
# The budget for choosing the hybrid in these tests: none, so the base configuration is tuned
# (ALS's alpha and the blend weights) and no variant tried; CI time, not the best hybrid
# possible. The search itself is tested in tests/unit/recommendations/test_recs_search.py.
SMALL_BUDGET = 0.0


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is not present")


def assert_hybrid_wins(report: dict[str, Any]) -> None:
    models = report["models"]
    ours = models["instock"]
    for name in BASELINES:
        for metric in ("hr", "mrr"):
            assert ours[metric] > models[name][metric], (
                f"instock {metric}={ours[metric]:.4f} does not beat {name} "
                f"{metric}={models[name][metric]:.4f}"
            )
    for metric in ("hr", "mrr"):  # and the interval of the lead over the best says so
        versus = report["versus_best_baseline"][metric]
        assert versus["wins"], f"instock's {metric} lead over {versus['baseline']}: {versus}"


def assert_shape(report: dict[str, Any], k: int = 20) -> None:
    assert report["k"] == k
    assert set(report["models"]) >= {"instock", *BASELINES}
    for metrics in report["models"].values():
        assert {"hr", "mrr", "ndcg", "coverage"} <= set(metrics)
        assert 0 <= metrics["mrr"] <= metrics["ndcg"] <= metrics["hr"] <= 1
        assert 0 <= metrics["coverage"] <= 1
        for metric in ("hr", "mrr"):  # each metric's 95% bootstrap interval holds its value
            low, high = metrics[f"{metric}_ci"]
            assert 0 <= low <= metrics[metric] <= high <= 1
    versus = report["versus_best_baseline"]
    others = [name for name in report["models"] if name != "instock"]  # gru4rec too, if run
    for metric in ("hr", "mrr"):
        best = versus[metric]["baseline"]
        assert report["models"][best][metric] == max(
            report["models"][name][metric] for name in others)
        assert versus[metric]["difference"] == pytest.approx(
            report["models"]["instock"][metric] - report["models"][best][metric], abs=1e-3)
        low, high = versus[metric]["ci"]
        assert low <= versus[metric]["difference"] <= high
        assert versus[metric]["wins"] == (low > 0)
    chosen = report["chosen"]
    assert chosen["components"] and set(chosen["weights"]) == set(chosen["components"])
    assert all(report["weights"][name] > 0 for name in chosen["components"])
    assert set(chosen["hyper_parameters"]) == set(chosen["components"])
    assert chosen["als_alpha"] == report["tuning"]["als_alpha"]
    # what the search tried: the base configuration first, then variants while time was left
    if report["tuning"]["validation_targets"]:
        assert chosen["searched"][0]["component"] is None and chosen["seconds"] > 0
        assert chosen["validation_objective"] == max(t["objective"] for t in chosen["searched"])
    json.dumps(report, allow_nan=False)  # serialisable as is, strict JSON


@pytest.mark.slow
@needs(YOOCHOOSE)
def test_yoochoose_hybrid_beats_every_baseline() -> None:
    report = evaluate(YOOCHOOSE, "yoochoose", k=20, budget_seconds=SMALL_BUDGET)
    assert_shape(report)
    assert report["targets"] == 10152  # every test click after the first, item seen in training
    models = report["models"]
    # the data README quotes 0.635 / 0.328 and 0.616 / 0.350 for these two on this sample
    assert models["cooccurrence"]["hr"] == pytest.approx(0.635, abs=0.01)
    assert models["cooccurrence"]["mrr"] == pytest.approx(0.328, abs=0.01)
    assert models["sequential_rules"]["hr"] == pytest.approx(0.616, abs=0.01)
    assert models["sequential_rules"]["mrr"] == pytest.approx(0.350, abs=0.01)
    assert report["tuning"]["tuned_on"] == "next"
    assert_hybrid_wins(report)


@pytest.mark.slow
@needs(TAOBAO)
def test_taobao_next_event_hybrid_beats_every_baseline() -> None:
    report = evaluate(TAOBAO, "taobao", k=20, target="next", budget_seconds=SMALL_BUDGET)
    assert_shape(report)
    assert report["skipped_rows"] == 1  # the truncated last line, reported, not fatal
    assert report["targets"] > 1000
    # implicit ALS is the strongest baseline here: about 0.246 / 0.074 in the issue
    assert report["models"]["als"]["hr"] == pytest.approx(0.246, abs=0.03)
    assert_hybrid_wins(report)


@pytest.mark.slow
@needs(TAOBAO)
def test_taobao_next_purchase_hybrid_beats_every_baseline() -> None:
    report = evaluate(TAOBAO, "taobao", k=20, target="purchase", budget_seconds=SMALL_BUDGET)
    assert_shape(report)
    assert 50 <= report["targets"] < 1750  # purchases only
    assert_hybrid_wins(report)


@needs(REES46)
def test_cli_evaluates_the_rees46_sample_as_json() -> None:
    result = CliRunner().invoke(
        recs_app, ["evaluate", "--data", str(REES46), "--format", "rees46", "--json",
                   "--budget-seconds", "0"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert_shape(report)
    assert report["dataset"] == REES46.name
    assert report["skipped_rows"] == 0
    assert report["events"]["train"] + report["events"]["held_out"] == 1000


def synthetic_shop_log(path: Path, seed: int) -> None:
    """A shop log unlike the shared files: users with a favourite category and brand who
    browse along product lines, come back to items, and sometimes cart or buy."""
    rng = np.random.default_rng(seed)
    n_items, n_cats = 1500, 30
    category = rng.integers(n_cats, size=n_items)
    brand = rng.integers(80, size=n_items)
    price = np.round(rng.lognormal(3.5, 0.6, size=n_items), 2)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    by_cat = {c: np.flatnonzero(category == c) for c in range(n_cats)}
    rows, t = [], 1_700_000_000.0
    for user in range(1200):
        favourite = int(rng.integers(n_cats))
        items = by_cat[favourite]
        weights = popularity[items] / popularity[items].sum()
        for _ in range(int(rng.integers(1, 4))):
            current = int(rng.choice(items, p=weights))
            for _ in range(int(rng.integers(3, 12))):
                t += float(rng.exponential(60))
                kind = rng.choice(["view", "cart", "purchase"], p=[0.86, 0.1, 0.04])
                rows.append((f"u{user}", f"i{current}", kind, int(t), int(category[current]),
                             int(brand[current]), float(price[current])))
                step = rng.random()
                line = np.flatnonzero(items == current)
                if step < 0.45 and len(line):  # along the product line
                    current = int(items[(int(line[0]) + 1) % len(items)])
                elif step < 0.8:
                    current = int(rng.choice(items, p=weights))
                else:
                    current = int(rng.choice(n_items, p=popularity / popularity.sum()))
            t += float(rng.exponential(86_400))
    with path.open("w") as out:
        out.write("user_id,item_id,event_type,timestamp,category,brand,price\n")
        out.writelines(",".join(map(str, row)) + "\n" for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23])
def test_a_shop_log_never_seen_before_hybrid_beats_every_baseline(tmp_path: Path,
                                                                  seed: int) -> None:
    """Nothing was tuned on this log: the hybrid tunes its blend on the log's own validation
    split, as it would for any shop's export."""
    log = tmp_path / "shop.csv"
    synthetic_shop_log(log, seed)
    report = evaluate(log, "csv", k=20, budget_seconds=SMALL_BUDGET)
    assert_shape(report)
    assert report["targets"] > 1000
    assert_hybrid_wins(report)


def latent_taste_log(path: Path, seed: int) -> None:
    """Users whose taste mixes two of twelve hidden topics: no order within a visit, no
    attribute naming the topics, so what predicts the next item is the user's whole history
    (the structure a factorisation finds); users also return to items they viewed."""
    rng = np.random.default_rng(seed)
    n_items, n_topics = 1200, 12
    topic = rng.integers(n_topics, size=n_items)
    popularity = rng.pareto(1.5, size=n_items) + 1.0
    by_topic = [np.flatnonzero(topic == z) for z in range(n_topics)]
    rows, t = [], 1_700_000_000.0
    for user in range(1500):
        taste = rng.choice(n_topics, size=2, replace=False)
        share = rng.dirichlet([2.0, 2.0])
        seen: list[int] = []
        for _ in range(int(rng.integers(2, 6))):
            for _ in range(int(rng.integers(3, 9))):
                t += float(rng.exponential(30))
                if seen and rng.random() < 0.15:
                    item = int(rng.choice(seen))
                else:
                    items = by_topic[int(rng.choice(taste, p=share))]
                    item = int(rng.choice(items, p=popularity[items] / popularity[items].sum()))
                seen.append(item)
                rows.append(f"u{user},i{item},{int(t)}\n")
            t += float(rng.exponential(86_400))
    with path.open("w") as out:
        out.write("user_id,item_id,timestamp\n")
        out.writelines(rows)


@pytest.mark.slow
def test_a_latent_taste_log_hybrid_beats_every_baseline(tmp_path: Path) -> None:
    """ALS's kind of structure: the hybrid, choosing its components on the log's own
    validation split, must use its ALS component and still beat the ALS baseline."""
    log = tmp_path / "taste.csv"
    latent_taste_log(log, seed=5)
    report = evaluate(log, "csv", k=20, budget_seconds=SMALL_BUDGET)
    assert_shape(report)
    assert report["targets"] > 1000
    assert "als" in report["chosen"]["components"]
    assert_hybrid_wins(report)
