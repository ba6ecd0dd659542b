"""The offline evaluation on the real shared data sets (../shared/data, never copied here).

instock's hybrid must beat every baseline of the same run on HR@20 and MRR@20. The baselines'
figures are also checked against the published ones for these files: that is what shows the
protocol is implemented as specified, and that the baselines are not strawmen.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from instock.recommendations.cli import recs_app
from instock.recommendations.evaluate import evaluate

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
YOOCHOOSE = DATA / "yoochoose_rsc15_100k"
TAOBAO = DATA / "taobao_userbehavior_subset" / "UserBehavior_subset.csv"
REES46 = DATA / "rees46_schema_sample" / "2019-Oct-sample.csv"
BASELINES = ("popularity", "cooccurrence", "sequential_rules", "als")


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


def assert_shape(report: dict[str, Any], k: int = 20) -> None:
    assert report["k"] == k
    assert set(report["models"]) >= {"instock", *BASELINES}
    for metrics in report["models"].values():
        assert {"hr", "mrr", "ndcg", "coverage"} <= set(metrics)
        assert 0 <= metrics["mrr"] <= metrics["ndcg"] <= metrics["hr"] <= 1
        assert 0 <= metrics["coverage"] <= 1
    json.dumps(report)  # serialisable as is


@pytest.mark.slow
@needs(YOOCHOOSE)
def test_yoochoose_hybrid_beats_every_baseline() -> None:
    report = evaluate(YOOCHOOSE, "yoochoose", k=20)
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
    report = evaluate(TAOBAO, "taobao", k=20, target="next")
    assert_shape(report)
    assert report["skipped_rows"] == 1  # the truncated last line, reported, not fatal
    assert report["targets"] > 1000
    # implicit ALS is the strongest baseline here: about 0.246 / 0.074 in the issue
    assert report["models"]["als"]["hr"] == pytest.approx(0.246, abs=0.03)
    assert_hybrid_wins(report)


@pytest.mark.slow
@needs(TAOBAO)
def test_taobao_next_purchase_hybrid_beats_every_baseline() -> None:
    report = evaluate(TAOBAO, "taobao", k=20, target="purchase")
    assert_shape(report)
    assert 50 <= report["targets"] < 1750  # purchases only
    assert_hybrid_wins(report)


@needs(REES46)
def test_cli_evaluates_the_rees46_sample_as_json() -> None:
    result = CliRunner().invoke(
        recs_app, ["evaluate", "--data", str(REES46), "--format", "rees46", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert_shape(report)
    assert report["dataset"] == REES46.name
    assert report["skipped_rows"] == 0
    assert report["events"]["train"] + report["events"]["held_out"] == 1000
