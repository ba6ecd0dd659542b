"""The outside world as real processes: the payment sandbox and the marketplace simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from instock.bench.local import free_port
from tests.e2e.harness import READY_TIMEOUT, Server, ServerFactory


async def wait_answering(server: Server, path: str) -> None:
    """Until `path` answers 200 (or the process dies, which fails the test with its log)."""
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise AssertionError(f"{path} process exited:\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path} not answering in {READY_TIMEOUT}s:\n{server.log_tail()}")


async def start_payments(servers: ServerFactory, *args: str) -> Server:
    """`instock sandbox payments` on a free port."""
    port = free_port()
    server = servers.worker("sandbox", "payments", "--port", str(port), *args, port=port)
    await wait_answering(server, "/_sandbox/config")
    return server


def payments_env(sandbox: Server, **extra: str) -> dict[str, str]:
    """An API process's settings for that sandbox: quick timeouts and a quick breaker."""
    return {"INSTOCK_PAYMENTS_URL": sandbox.base_url, "INSTOCK_PAYMENTS_TIMEOUT_SECONDS": "0.5",
            "INSTOCK_PAYMENTS_RETRY_ATTEMPTS": "2", "INSTOCK_PAYMENTS_BREAKER_THRESHOLD": "3",
            "INSTOCK_PAYMENTS_BREAKER_COOLDOWN_SECONDS": "1", **extra}


async def configure(sandbox: Server, **changes: object) -> None:
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=5) as client:
        response = await client.post("/_sandbox/config", json=changes)
        assert response.status_code == 200, response.text


async def start_smtp(servers: ServerFactory, directory: Path) -> Server:
    """`instock sandbox smtp` on a free port, keeping mail under `directory`."""
    port = free_port()
    server = servers.worker("sandbox", "smtp", "--port", str(port), "--dir", str(directory),
                            port=port)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            raise AssertionError(f"SMTP sink exited:\n{server.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return server
    raise AssertionError(f"SMTP sink not answering in {READY_TIMEOUT}s:\n{server.log_tail()}")
