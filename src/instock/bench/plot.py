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
