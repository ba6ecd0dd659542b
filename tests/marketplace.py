"""Driving the marketplace simulator (`instock sandbox marketplace`) from tests: start it as its
own process, play its buyers, read what it saw. Used by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from instock.bench.local import free_port
from tests.support import INSTOCK

SECRET = "whsec_marketplace_test_secret"
API_KEY = "mk_test_key"


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as http:
            response = await http.request(method, path, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_sim/state")
        return result

    async def listing(self, sku: str) -> int | None:
        found = (await self.state())["listings"].get(sku)
        return None if found is None else int(found["quantity"])

    async def configure(self, **config: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/_sim/config", json=config)
        return result

    async def buy(self, sku: str, quantity: int = 1, price: str = "120.00",
                  **options: Any) -> dict[str, Any]:
        """A buyer buys: the simulator sends the signed order.created webhook and answers with
        the order, the event id and how each delivery was answered."""
        result: dict[str, Any] = await self._call("POST", "/_sim/orders", json={
            "sku": sku, "quantity": quantity, "price": price, **options})
        return result

    async def buyer_cancels(self, order_id: str, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/_sim/orders/{order_id}/cancel",
                                                  json=options)
        return result

    async def resend(self, event_id: str, age_seconds: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/_sim/deliveries/{event_id}/resend", json={"age_seconds": age_seconds})
        return result

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""


@contextlib.asynccontextmanager
async def simulator(tmp_path: Path, webhook_url: str = "http://127.0.0.1:9/unused",
                    secret: str = SECRET, api_key: str | None = API_KEY,
                    env: dict[str, str] | None = None) -> AsyncIterator[Simulator]:
    """A running simulator process, stopped afterwards."""
    port = free_port()
    log_path = tmp_path / f"marketplace-{port}.log"
    args = [INSTOCK, "sandbox", "marketplace", "--port", str(port), "--webhook-url",
            webhook_url, "--webhook-secret", secret]
    if api_key:
        args += ["--api-key", api_key]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    sim = Simulator(process, port, log_path)
    try:
        await _wait_ready(sim)
        yield sim
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


async def _wait_ready(sim: Simulator, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as http:
        while time.monotonic() < deadline:
            if sim.process.poll() is not None:
                raise AssertionError(f"simulator exited early:\n{sim.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/livez")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"simulator not ready in {timeout}s:\n{sim.log_tail()}")
