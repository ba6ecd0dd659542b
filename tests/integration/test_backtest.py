"""`instock analytics backtest` on the real Taobao log (../shared/data, never copied here) and on
a small CSV sales log: the report's shape, the rows it skips, and instock's forecasts beating
both baselines of the same run on MASE."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from instock.cli import app

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TAOBAO = DATA / "taobao_userbehavior_subset" / "UserBehavior_subset.csv"
BASELINES = ("seasonal_naive", "moving_average")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["analytics", "backtest", *map(str, args)])


@pytest.fixture(scope="module")
def taobao() -> tuple[dict[str, Any], Result]:
    if not TAOBAO.exists():
        pytest.skip(f"{TAOBAO} is not present")
    result = run("--data", TAOBAO, "--format", "taobao", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def test_report_shape(taobao: tuple[dict[str, Any], Result]) -> None:
    report, _ = taobao
    assert report["horizon_days"] == 1
    assert report["series"] > 0
    assert set(report["models"]) == {"instock", *BASELINES}
    for metrics in report["models"].values():
        assert {"mase", "bias"} <= set(metrics)
        assert metrics["mase"] > 0 and metrics["bias"] >= -1
    assert report["purchases"] == 1750  # every `buy` row of the file
    assert report["granularity"] == "6h" and report["series_level"] == "category"
    assert len(report["origins"]) == report["days"] - 3  # each midnight after 3 days of history
    assert sum(report["model_mix"].values()) == report["evaluations"]
    assert sum(report["demand_classes"].values()) == report["evaluations"]


def test_cut_short_last_line_is_skipped_and_reported(
    taobao: tuple[dict[str, Any], Result],
) -> None:
    report, result = taobao
    assert report["skipped_rows"] == 1
    assert ":84476:" in report["skipped_examples"][0]  # the file's last line
    assert "skipped 1 malformed row" in result.stderr


def test_instock_beats_both_baselines_on_aggregate_mase(
    taobao: tuple[dict[str, Any], Result],
) -> None:
    models = taobao[0]["models"]
    for name in BASELINES:
        assert models["instock"]["mase"] < models[name]["mase"], models


def test_csv_sales_log_and_its_picture(tmp_path: Path) -> None:
    lines = ["timestamp,sku,quantity,event_type"]
    for day in range(8):
        for hour, sku, quantity in [(9, "A", 2), (13, "A", 1), (20, "B", 1), (21, "A", 3)]:
            if (day + hour) % 3:  # not every day: intermittent
                lines.append(f"2024-03-{day + 1:02d}T{hour:02d}:10:00Z,{sku},{quantity},order")
        lines.append(f"2024-03-{day + 1:02d}T12:00:00Z,A,1,view")  # not a sale
    lines.append("2024-03-02T12:00:00Z,A,-1,order")  # a return is no demand: skipped
    lines.append("not a time,B,1,order")  # skipped
    log = tmp_path / "sales.csv"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    png = tmp_path / "backtest.png"
    result = run("--data", log, "--format", "csv", "--json", "--min-purchases", "3", "--png", png)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    sales = [row for row in lines[1:] if row.endswith(",order") and ",-1," not in row]
    assert report["purchases"] == len(sales) - 1
    assert report["skipped_rows"] == 2
    assert report["series_level"] == "sku" and report["series"] == 2
    assert report["days"] == 8 and len(report["origins"]) == 5
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (None, "csv", "is not a file"),
        ("timestamp,sku\n", "csv", "no purchases"),
        ("when,what\n1,2\n", "csv", "header needs timestamp"),
        ("1,2,3,pv,1511500000\n", "taobao", "no purchases"),
        ("timestamp,sku\n2024-03-01T10:00:00Z,A\n", "csv", "a backtest needs 4"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(
    tmp_path: Path, content: str | None, fmt: str, message: str
) -> None:
    log = tmp_path / "log.csv"
    if content is not None:
        log.write_text(content, encoding="utf-8")
    result = run("--data", log, "--format", fmt)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert message in " ".join(result.output.replace("│", " ").split())  # unwrap the box
    assert "Traceback" not in result.output


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    result = run("--data", tmp_path, "--format", "parquet")
    assert result.exit_code == 2 and "parquet" in result.output
