"""Importers: truncated rows are skipped and reported, never fatal; formats and the CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instock.recommendations.cli import recs_app
from instock.recommendations.data import kind_code
from instock.recommendations.evaluate import evaluate
from instock.recommendations.logs import FormatError, load, parse_time, read_taobao

TAOBAO_ROWS = [
    f"{u},{i},{i % 3},pv,{1511500000 + 60 * n}"
    for n, (u, i) in enumerate(
        [(u, i) for u in range(1, 7) for i in (10, 11, 12, 10, 11, 13, 12, 10)]
    )
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_taobao_truncated_last_row_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "ub.csv"
    path.write_text("1,10,1,pv,1511500000\n1,11,1,buy,1511500060\n1,12,1,pv", encoding="utf-8")
    raw = read_taobao(path)
    assert raw.item == ["10", "11"]
    assert raw.kind[1] == 3  # buy -> purchase
    assert raw.skipped == 1
    assert "ub.csv:3" in raw.skipped_examples[0]


def test_taobao_bad_values_do_not_crash(tmp_path: Path) -> None:
    path = write(tmp_path / "ub.csv", ["1,10,1,pv,notatime", "", "2,11,1,pv,1511500060"])
    raw = read_taobao(path)
    assert raw.item == ["11"] and raw.skipped == 2


def test_csv_format_with_user_ids_iso_times_and_attributes(tmp_path: Path) -> None:
    lines = ["user_id,item_id,event_type,timestamp,category,brand,price"]
    for n in range(40):
        item = n % 5
        kind = "purchase" if n % 7 == 6 else "view"
        lines.append(
            f"u{n % 4},i{item},{kind},2024-03-01T10:{n:02d}:00Z,c{item % 2},b{item},{item}.5"
        )
    lines.append("u1,,view,2024-03-01T11:00:00Z,c1,b1,1")  # no item: skipped
    lines.append("u1,i9,view,2024-03-01T09:00:00Z,c1,b1,n/a")  # bad price: kept, band unknown
    data = load(write(tmp_path / "shop.csv", lines), "csv")
    assert data.skipped == 1
    log = data.final.log
    assert log.attributes["price_band"][log.item[log.time == log.time.min()][0]] == -1
    assert set(data.final.log.attributes) == {"category", "brand", "price_band"}
    assert int(data.final.is_train.sum()) == 33  # 0.8 quantile of 41 distinct times: the 33rd


def test_csv_prefers_session_ids(tmp_path: Path) -> None:
    lines = ["session_id,user_id,item_id,event_type,timestamp"]
    lines += [f"s{n // 3},u1,i{n % 4},view,{1000 + n}" for n in range(30)]
    data = load(write(tmp_path / "s.csv", lines), "csv")
    assert len(set(data.final.log.seq.tolist())) == 10


def test_csv_user_level_log_without_event_types_is_all_views(tmp_path: Path) -> None:
    lines = ["user_id,item_id,timestamp"] + [f"u{n % 3},i{n % 7},{1000 + n}" for n in range(30)]
    data = load(write(tmp_path / "u.csv", lines), "csv")
    assert data.skipped == 0 and len(set(data.final.log.seq.tolist())) == 3
    assert set(data.final.log.kind.tolist()) == {kind_code("view")}
    with pytest.raises(FormatError, match="timestamp"):
        load(write(tmp_path / "bad.csv", ["user_id,item_id", "u1,i1"]), "csv")


def test_parse_time_accepts_unix_and_iso() -> None:
    assert parse_time("1396437466.94") == pytest.approx(1396437466.94)
    assert parse_time("1970-01-01 00:01:00 UTC") == 60.0
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        load(tmp_path, "parquet")


def test_evaluate_report_shape_on_a_tiny_log(tmp_path: Path) -> None:
    path = write(tmp_path / "ub.csv", TAOBAO_ROWS)
    report = evaluate(path, "taobao", k=5)
    assert report["k"] == 5 and report["dataset"] == "ub.csv"
    assert set(report["models"]) - {"gru4rec"} == {
        "instock",
        "popularity",
        "cooccurrence",
        "sequential_rules",
        "als",
    }
    # the neural component has a row of its own when the tuner trained it (PyTorch installed)
    assert ("gru4rec" in report["models"]) == bool(report["chosen"]["neural"].get("tried"))
    for metrics in report["models"].values():
        assert {"hr", "mrr", "ndcg", "coverage"} <= set(metrics)
        assert 0.0 <= metrics["mrr"] <= metrics["hr"] <= 1.0
    assert report["targets"] > 0


def test_cli_prints_only_json_on_stdout(tmp_path: Path) -> None:
    path = write(tmp_path / "ub.csv", [*TAOBAO_ROWS, "9,10,1,pv"])
    result = CliRunner().invoke(
        recs_app, ["evaluate", "--data", str(path), "--format", "taobao", "--k", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped_rows"] == 1
    assert report["models"]["instock"]["hr"] >= 0


def test_csv_without_required_columns_is_a_format_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", ["customer,sku,when", "1,2,3"])
    with pytest.raises(FormatError, match="item_id"):
        load(path, "csv")
    result = CliRunner().invoke(
        recs_app, ["evaluate", "--data", str(path), "--format", "csv", "--json"]
    )
    assert result.exit_code == 2 and "session_id or user_id" in result.output


def test_cli_rejects_missing_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        recs_app, ["evaluate", "--data", str(tmp_path / "nope"), "--format", "csv", "--json"]
    )
    assert result.exit_code != 0
