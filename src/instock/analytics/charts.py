"""The picture of `instock analytics report --png`: a SKU's sales, its velocity, the forecast
with its interval, and the stock it leaves (cover and the stock-out day)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np


def _midnight(day: object) -> datetime:
    return datetime.combine(date.fromisoformat(str(day)), time())


def report_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    history, ahead = report["history"], report["forecast"]["days"]
    days = [_midnight(d["day"]) for d in history]
    future = [_midnight(d["day"]) for d in ahead]
    fig, (sales, stock) = plt.subplots(2, 1, figsize=(10, 7),
                                       gridspec_kw={"height_ratios": [3, 2]})
    sales.bar(days, [d["sold"] for d in history], color="#3b6ea5", label="units sold")
    for day, d in zip(days, history, strict=True):  # grey where it could not be bought
        if d["in_stock_share"] < 1:
            sales.axvspan(day - timedelta(hours=12), day + timedelta(hours=12),
                          color="#999999", alpha=0.35 * (1 - d["in_stock_share"]), lw=0)
    for window, style in ((7, "--"), (28, ":")):
        sales.hlines(report[f"velocity_{window}d"], days[-1] - timedelta(days=window - 1),
                     days[-1], colors="#c0392b", linestyles=style,
                     label=f"velocity {window} d in stock: {report[f'velocity_{window}d']:g}/day")
    mean = np.array([d["mean"] for d in ahead])
    sales.plot(future, mean, color="#e67e22", label=f"forecast ({report['forecast']['model']})")
    sales.fill_between(future, [d["lower"] for d in ahead], [d["upper"] for d in ahead],
                       color="#e67e22", alpha=0.25, label="80 % interval")
    sales.set_ylabel("units a day")
    sales.set_title(f"{report['sku']}: sales, grey where out of stock")
    sales.legend(fontsize=8, loc="upper left")

    left = report["available"] - np.cumsum(mean)
    stock.plot([days[-1], *future], [report["available"], *np.maximum(left, 0)],
               color="#27ae60", label=f"available, projected ({report['available']} now)")
    stock.axhline(report["reorder"]["reorder_point"], color="#8e44ad", linestyle="--",
                  label=f"reorder point {report['reorder']['reorder_point']:g}")
    if report["stockout_on"] is not None:
        out = _midnight(report["stockout_on"])
        cover = report["days_of_cover"]
        stock.axvline(out, color="#c0392b", linestyle=":",
                      label=f"stock-out {out:%Y-%m-%d} ({cover:.1f} days of cover)"
                      if cover is not None else f"stock-out {out:%Y-%m-%d}")
    stock.set_ylabel("units")
    stock.set_title("available, projected at the forecast")
    stock.legend(fontsize=8, loc="upper right")
    for ax in (sales, stock):  # both keep their dates (autofmt_xdate would drop the top's)
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
