"""PNG charts beside the JSON a benchmark prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def latency_histogram(latencies_ms: NDArray[np.float64], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(latencies_ms, bins=50, color="#3b6ea5")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        value = float(np.percentile(latencies_ms, q))
        ax.axvline(value, color="#c0392b", linestyle=style, label=f"p{q} {value:.1f} ms")
    ax.set_xlabel("request latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def events_chart(latencies_ms: dict[str, NDArray[np.float64]],
                 memory: list[tuple[int, float]], title: str, path: Path) -> None:
    """Left: commit-to-client latency CDF per bus. Right: server memory against clients held."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Without a capacity run (--clients 0) there is no memory curve: draw the latency alone.
    fig, axes = plt.subplots(1, 2 if memory else 1, figsize=(12 if memory else 7, 4.5),
                             squeeze=False)
    left = axes[0][0]
    for bus, ms in latencies_ms.items():
        if len(ms):
            xs = np.sort(np.maximum(ms, 0.1))  # log scale: nothing at or below zero
            left.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=bus)
    left.axvline(50, color="#c0392b", linestyle=":", label="goal p99 50 ms")
    left.axhline(0.99, color="#999999", linestyle=":", linewidth=0.8)
    left.set_xscale("log")
    left.set_xlabel("commit -> SSE client (ms, from the commit stamp)")
    left.set_ylabel("fraction of changes received")
    left.set_title("latency CDF")
    left.legend()
    if memory:
        right = axes[0][1]
        clients, rss = zip(*memory, strict=True)
        right.plot(clients, rss, marker="o", color="#3b6ea5")
        right.set_xlabel("SSE clients connected")
        right.set_ylabel("server RSS (MB)")
        right.set_title("memory (memory bus)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
