"""`instock bench privacy` runs end to end on a short setting: JSON on stdout, a chart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import INSTOCK, instock_env


def test_bench_privacy_measures_reads_with_and_without_decryption(
        database_url: str, tmp_path: Path) -> None:
    plot = tmp_path / "privacy.png"
    result = subprocess.run(
        [INSTOCK, "bench", "privacy", "--profiles", "20", "--rounds", "1", "--plot", str(plot)],
        env=instock_env(database_url, tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True)
    report = json.loads(result.stdout)
    assert report["profiles"] == 20 and report["database"] in {"sqlite", "postgresql"}
    for part in ("save", "read", "read_without_decryption", "decryption"):
        assert 0 < report[part]["p50_us"] <= report[part]["p99_us"], (part, report)
    assert 0 < report["decryption_share_of_read"] < 1
    assert plot.stat().st_size > 0
