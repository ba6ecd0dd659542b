"""The payment sandbox as a real process for tests: `instock sandbox payments` on a free port,
with a client for its control endpoints (`/_sandbox/...`). Started synchronously, so one
process can serve a whole module (`reset()` between tests); each call opens its own client,
so it is usable from any test's event loop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from instock.bench.local import free_port, instock_executable
from instock.platform.ids import new_id

INSTOCK = instock_executable()


class Sandbox:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.run = new_id()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        async with self._client() as http:
            response = await http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response

    async def _get(self, path: str, **params: str) -> Any:
        async with self._client() as http:
            response = await http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def reset(self) -> None:
        """Between tests: the sandbox keeps idempotency keys (as Stripe does), so keys chosen
        by a test should include `run`, which changes with every reset."""
        await self._post("/_sandbox/reset", {})
        self.run = new_id()

    async def configure(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = (await self._post("/_sandbox/config", changes)).json()
        return config

    async def stats(self) -> dict[str, int]:
        stats: dict[str, int] = await self._get("/_sandbox/stats")
        return stats

    async def payment(self, provider_ref: str) -> dict[str, Any]:
        payment: dict[str, Any] = await self._get(f"/_sandbox/payments/{provider_ref}")
        return payment

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = await self._get(
            "/_sandbox/events", **({"type": kind} if kind else {}))
        return events

    async def flush(self, order: str = "in_order") -> int:
        queued: int = (await self._post("/_sandbox/webhooks/flush", {"order": order})).json()[
            "queued"]
        return queued

    async def resend(self, event_id: str, age_seconds: int = 0) -> None:
        await self._post("/_sandbox/webhooks/resend",
                         {"event_id": event_id, "age_seconds": age_seconds})

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""


@contextmanager
def payment_sandbox(tmp_path: Path, *args: str) -> Iterator[Sandbox]:
    """Start the sandbox (extra CLI `args`, e.g. --webhook-url), wait until it answers."""
    port = free_port()
    log_path = tmp_path / f"payment-sandbox-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTOCK_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen([INSTOCK, "sandbox", "payments", "--port", str(port), *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    sandbox = Sandbox(process, port, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the sandbox exited:\n{sandbox.log_tail()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{sandbox.url}/_sandbox/stats").status_code == 200:
                    break
            assert time.monotonic() < deadline, f"the sandbox did not start:\n{sandbox.log_tail()}"
            time.sleep(0.05)
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
