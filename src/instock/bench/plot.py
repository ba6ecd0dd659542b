"""PNG charts beside the JSON a benchmark prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

GOAL_P99_MS = 50  # DESIGN.md: p99 of a reservation and of a push


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _cdf(ax: Any, ms: NDArray[np.float64], label: str) -> None:
    xs = np.sort(np.maximum(ms, 0.01))  # log scale: nothing at or below zero
    ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=label)


def _log_x(ax: Any) -> None:
    """A log x axis labelled at its decades only: over less than a decade matplotlib labels
    the minor ticks too, and they overlap."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _latency_cdfs(ax: Any, latencies_ms: dict[str, NDArray[np.float64]], xlabel: str,
                  ylabel: str, legend_size: float | None = None,
                  goal_ms: float | None = GOAL_P99_MS) -> None:
    """One latency CDF per series on a log axis, with the p99 goal and the 99% line."""
    for name, ms in latencies_ms.items():
        if len(ms):
            _cdf(ax, ms, name)
    if goal_ms is not None:
        ax.axvline(goal_ms, color="#c0392b", linestyle=":", label=f"goal p99 {goal_ms:g} ms")
    ax.axhline(0.99, color="#999999", linestyle=":", linewidth=0.8)
    _log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("latency CDF")
    ax.legend(fontsize=legend_size)


def analytics_chart(lags_ms: NDArray[np.float64], title: str, path: Path,
                    goal_ms: float = 2000) -> None:
    """The CDF of each sale's lag from its commit to the analytics facts, with the goal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _latency_cdfs(ax, {"sale committed -> counted in the facts": lags_ms},
                  "lag (ms, read every 20 ms)", "fraction of sales", goal_ms=goal_ms)
    fig.suptitle(title)
    _save(fig, path)


def events_chart(latencies_ms: dict[str, NDArray[np.float64]],
                 memory: list[tuple[int, float]], title: str, path: Path) -> None:
    """Left: commit-to-client latency CDF per bus. Right: server memory against clients held."""
    plt = _pyplot()
    # Without a capacity run (--clients 0) there is no memory curve: draw the latency alone.
    fig, axes = plt.subplots(1, 2 if memory else 1, figsize=(12 if memory else 7, 4.5),
                             squeeze=False)
    _latency_cdfs(axes[0][0], latencies_ms, "commit -> SSE client (ms, from the commit stamp)",
                  "fraction of changes received")
    if memory:
        right = axes[0][1]
        clients, rss = zip(*memory, strict=True)
        right.plot(clients, rss, marker="o", color="#3b6ea5")
        right.set_xlabel("SSE clients connected")
        right.set_ylabel("server RSS (MB)")
        right.set_title("memory (memory bus)")
    fig.suptitle(title)
    _save(fig, path)


def drop_chart(rows: list[dict[str, Any]], latencies_ms: dict[str, NDArray[np.float64]],
               title: str, path: Path, ceiling_rps: float | None = None) -> None:
    """Left: confirmed reservations/s per strategy (log scale), bad results (oversold, lost,
    failed requests) written on their bars. Right: each strategy's latency CDF, request start
    to answer."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [row["name"] for row in rows]
    rates = [max(float(row["throughput_rps"]), 0.1) for row in rows]  # log scale: above zero
    colors = ["#27ae60" if name == "drop_lane" else "#3b6ea5" for name in names]
    bars = left.bar(names, rates, color=colors)
    for bar, row in zip(bars, rows, strict=True):
        bad = [f"{row[k]} {k}" for k in ("oversold", "lost", "errors") if row.get(k)]
        left.annotate("\n".join([f"{row['throughput_rps']:,.0f}/s", *bad]),
                      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8,
                      color="#c0392b" if bad else "#333333")
    if ceiling_rps:
        left.axhline(ceiling_rps, color="#999999", linestyle=":",
                     label=f"/livez {ceiling_rps:,.0f} requests/s")
        left.legend()
    left.set_yscale("log")
    left.set_ylabel("confirmed reservations/s")
    left.set_title("throughput")
    left.tick_params(axis="x", labelrotation=15)
    _latency_cdfs(right, latencies_ms, "request start -> answer (ms)",
                  "fraction of requests answered", legend_size=8)
    fig.suptitle(title)
    _save(fig, path)


def checkout_chart(latencies_ms: NDArray[np.float64], title: str, path: Path) -> None:
    """The checkout latency CDF (no goal is set for it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _latency_cdfs(ax, {"POST /v1/checkout": latencies_ms}, "checkout latency (ms)",
                  "fraction of checkouts", goal_ms=None)
    fig.suptitle(title)
    _save(fig, path)


def recs_chart(latencies_ms: dict[str, NDArray[np.float64]],
               freshness_ms: dict[str, NDArray[np.float64]], title: str, path: Path,
               goal_p99_ms: float = 10, goal_freshness_ms: float = 1000) -> None:
    """Left: list latency CDFs (steady and cold) with the p99 goal. Right: each freshness
    probe's time to the changed list, by kind, with the freshness goal."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    _latency_cdfs(left, latencies_ms, "GET /v1/recommendations, due -> answer (ms)",
                  "fraction of lists", legend_size=8, goal_ms=goal_p99_ms)
    for offset, (name, ms) in enumerate(freshness_ms.items()):
        if len(ms):
            # Kinds side by side at the same probe numbers: a small shift keeps both visible.
            right.scatter(np.arange(1, len(ms) + 1) + 0.15 * offset, np.maximum(ms, 0.1),
                          label=f"{name} ({len(ms)})", s=18)
    right.axhline(goal_freshness_ms, color="#c0392b", linestyle=":",
                  label=f"goal {goal_freshness_ms:g} ms")
    right.set_yscale("log")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_xlabel("probe")
    right.set_ylabel("answer of the change -> changed list (ms)")
    right.set_title("freshness")
    right.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def graphql_chart(pages_ms: dict[str, NDArray[np.float64]], subscription_ms: NDArray[np.float64],
                  memory: list[tuple[int, float]], title: str, path: Path,
                  goal_page_p99_ms: float = 15) -> None:
    """Left: the product page's latency CDF, one GraphQL query against the REST calls it
    replaces. Middle: commit-to-subscriber latency CDF. Right (with a capacity run): server
    memory against subscriptions held."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3 if memory else 2, figsize=(18 if memory else 13, 4.8),
                             squeeze=False)
    _latency_cdfs(axes[0][0], pages_ms, "product page, due -> last answer (ms)",
                  "fraction of pages", legend_size=8, goal_ms=goal_page_p99_ms)
    axes[0][0].set_title("product page: one query against the REST calls")
    _latency_cdfs(axes[0][1], {"stockChanged": subscription_ms},
                  "commit -> GraphQL subscriber (ms, from the commit stamp)",
                  "fraction of changes received", legend_size=8)
    axes[0][1].set_title("subscription")
    if memory:
        right = axes[0][2]
        held, rss = zip(*memory, strict=True)
        right.plot(held, rss, marker="o", markersize=3, color="#3b6ea5")
        right.set_xlabel("GraphQL subscriptions held")
        right.set_ylabel("server RSS (MB)")
        right.set_title("memory (memory bus)")
    fig.suptitle(title)
    _save(fig, path)


def writes_chart(rows: list[dict[str, Any]], livez_rps: float,
                 saturated_ms: dict[str, NDArray[np.float64]],
                 offered_ms: dict[str, NDArray[np.float64]], title: str, path: Path) -> None:
    """Left: each case's requests/s at saturation (log scale) under the /livez ceiling, its
    ratio and any bad result written on its bar. Right: latency CDFs, solid at the offered
    rate, dashed at saturation (the drop: everyone at once)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [row["name"] for row in rows]
    # The drop's ratio is of every answer per second, as `bench drop --http` has it.
    rates = [max(float(row.get("requests_per_s", row["throughput_rps"]) or 0), 0.1)
             for row in rows]
    bars = left.bar(names, rates, color="#3b6ea5")
    for bar, row in zip(bars, rows, strict=True):
        bad = [f"{row[k]} {k}" for k in ("oversold", "lost", "errors") if row.get(k)]
        left.annotate("\n".join([f"{bar.get_height():,.0f}/s",
                                  f"{row['ratio_to_livez']:.3f} x /livez", *bad]),
                      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8,
                      color="#c0392b" if bad else "#333333")
    left.axhline(livez_rps, color="#999999", linestyle=":",
                 label=f"/livez {livez_rps:,.0f} requests/s")
    left.legend()
    left.set_yscale("log")
    left.set_ylabel("HTTP requests/s at saturation")
    left.set_title("throughput against the same server's /livez")
    colors = {name: f"C{n}" for n, name in enumerate(names)}  # a case's two curves alike
    for name, ms in offered_ms.items():
        if len(ms):
            xs = np.sort(np.maximum(ms, 0.01))  # log scale: nothing at or below zero
            right.plot(xs, np.arange(1, len(xs) + 1) / len(xs), color=colors.get(name),
                       label=f"{name} (offered rate)")
    for name, ms in saturated_ms.items():
        if len(ms):
            xs = np.sort(np.maximum(ms, 0.01))
            right.plot(xs, np.arange(1, len(xs) + 1) / len(xs), linestyle="--",
                       color=colors.get(name),
                       label=f"{name} ({'all at once' if name == 'drop' else 'saturation'})")
    right.axhline(0.99, color="#999999", linestyle=":", linewidth=0.8)
    _log_x(right)
    right.set_xlabel("request start (offered: due time) -> answer (ms)")
    right.set_ylabel("fraction of requests answered")
    right.set_title("latency CDF")
    right.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def reconcile_chart(passes: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    """Each pass's time (left) and SQL statements (right), levels checked written on the
    bars: the cost follows what changed, not the catalogue."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(passes)
    for ax, field, label in ((left, "seconds", "seconds per pass"),
                             (right, "statements", "SQL statements per pass")):
        bars = ax.bar(names, [passes[n][field] for n in names], color="#4c72b0")
        for bar, name in zip(bars, names, strict=True):
            ax.annotate(f"{passes[name]['levels_checked']} levels",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale("log")
    fig.suptitle(title)
    _save(fig, path)


def privacy_chart(report: dict[str, Any], title: str, path: Path) -> None:
    """Median µs per profile: a save, a read, the read's rows alone, its cryptography alone."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    names = ["save", "read", "read_without_decryption", "decryption"]
    values = [report[n]["p50_us"] for n in names]
    bars = ax.bar([n.replace("_", " ") for n in names], values, color="#4c72b0")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f"{value:g} µs", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("median µs per profile")
    fig.suptitle(title)
    _save(fig, path)


def grouped_bars(groups: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                 path: Path) -> None:
    """One bar per series in each group, each labelled with its value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(xs, values, width, label=name)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def fleet_chart(report: dict[str, Any], latencies_ms: dict[str, NDArray[np.float64]],
                title: str, path: Path) -> None:
    """Left: each case's requests/s against one process directly and through the balancer
    to the fleet, the ratio over each pair. Middle: server CPU per request, stacked by who
    spent it. Right: latency CDFs at saturation."""
    plt = _pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    targets = list(report["targets"])
    names = [row["name"] for row in report["targets"][targets[0]]["cases"]]
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        rows = report["targets"][target]["cases"]
        xs = np.arange(len(names)) + (i - (len(targets) - 1) / 2) * width
        bars = left.bar(xs, [row["throughput_rps"] for row in rows], width, label=target)
        for bar in bars:
            left.annotate(f"{bar.get_height():,.0f}/s",
                          (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    left.set_xticks(np.arange(len(names)),
                    [f"{n}\nfleet / direct {report['ratios'][n]:.2f}x" for n in names])
    left.set_ylabel("HTTP requests/s at saturation")
    left.set_title("throughput")
    left.legend()
    bars_at = [f"{n}\n{t}" for n in names for t in targets]
    bottom = np.zeros(len(bars_at))
    kinds = list(report["targets"][targets[0]]["cases"][0]["cpu_ms_per_request"])
    for kind in kinds:
        values = np.array([next(r for r in report["targets"][t]["cases"] if r["name"] == n)
                           ["cpu_ms_per_request"][kind] for n in names for t in targets])
        middle.bar(bars_at, values, bottom=bottom, label=kind)
        bottom += values
    middle.set_ylabel("CPU ms per request")
    middle.set_title("where the CPU goes")
    middle.legend(fontsize=8)
    middle.tick_params(axis="x", labelsize=8)
    _latency_cdfs(right, latencies_ms, "request start -> answer (ms), saturated",
                  "fraction of requests", legend_size=7, goal_ms=None)
    fig.suptitle(title)
    _save(fig, path)


def queue_chart(report: dict[str, Any], latencies_ms: dict[str, NDArray[np.float64]],
                title: str, path: Path) -> None:
    """Left: the storefront's requests with nobody waiting and with the room full (latency
    CDFs). Right: p50 and p99 of each kind of request, unloaded against loaded."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    _latency_cdfs(left, latencies_ms, "request start -> answer (ms)",
                  "fraction of storefront requests answered")
    store = report["storefront"]
    kinds = ["product", "stock", "reserve", "all"]
    width = 0.2
    for offset, (phase, stat) in enumerate((("unloaded", "p50_ms"), ("loaded", "p50_ms"),
                                            ("unloaded", "p99_ms"), ("loaded", "p99_ms"))):
        values = [store[phase][kind][stat] or 0 for kind in kinds]
        right.bar(np.arange(len(kinds)) + (offset - 1.5) * width, values, width,
                  label=f"{phase} {stat.removesuffix('_ms')}")
    right.set_xticks(np.arange(len(kinds)), kinds)
    right.set_ylabel("ms")
    right.set_title(f"p99 loaded/unloaded: {store['p99_ratio']}x (goal within 2x)")
    right.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
