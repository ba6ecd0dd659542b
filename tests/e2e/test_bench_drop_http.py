"""`instock bench drop --http URL` against a real server: the lane over HTTP, and /livez."""

from __future__ import annotations

import asyncio
import json
import subprocess

from tests.e2e.harness import INSTOCK, ServerFactory

UNITS, BUYERS = 20, 120


async def test_bench_drop_over_http_checks_the_server_and_its_ceiling(
        servers: ServerFactory) -> None:
    server = await servers.start()
    plot = servers.tmp_path / "drop-http.png"
    # The bench shares the server's environment, so its signing key too.
    result = await asyncio.to_thread(
        subprocess.run,
        [INSTOCK, "bench", "drop", "--http", server.base_url, "--units", str(UNITS),
         "--buyers", str(BUYERS), "--connections", "50", "--plot", str(plot)],
        env=servers.db.env(), cwd=servers.tmp_path, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["database"] == servers.db.backend and report["http"] == server.base_url
    [row] = report["strategies"]
    assert row["name"] == "drop_lane"
    assert (row["confirmed"], row["oversold"], row["lost"]) == (UNITS, 0, 0), row
    assert (row["refused"], row["errors"]) == (BUYERS - UNITS, 0), row
    assert row["db_reserved"] == UNITS and row["p50_ms"] <= row["p99_ms"], row
    assert row["livez_rps"] > 0 and row["livez_errors"] == 0, row
    assert row["ratio_to_livez"] == report["ratio_to_livez"] > 0
    assert report["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
