"""The outside world as real processes: the payment sandbox and the marketplace simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
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


async def start_payments(servers: ServerFactory, *args: str, port: int | None = None) -> Server:
    """`instock sandbox payments` on a free port (or the one given)."""
    port = port or free_port()
    server = servers.worker("sandbox", "payments", "--port", str(port), *args, port=port)
    await wait_answering(server, "/_sandbox/config")
    return server


async def payments_and_api(servers: ServerFactory, api_env: Callable[[str], dict[str, str]]
                           ) -> tuple[Server, Server]:
    """The payment sandbox and an API process told its URL (`api_env(url)`), started at once:
    (sandbox, api). An API process calls the provider only when a payment is made, so neither
    start waits for the other (each costs seconds of imports). Should the sandbox's port be
    taken meanwhile (by the API process itself, say), the two are started one after the other
    instead, as before."""
    port = free_port()
    sandbox, api = await asyncio.gather(
        start_payments(servers, port=port),
        servers.start(**api_env(f"http://127.0.0.1:{port}")), return_exceptions=True)
    if isinstance(api, BaseException):
        raise api
    if isinstance(sandbox, BaseException):
        if "address already in use" not in str(sandbox).lower():
            raise sandbox
        api.stop()
        sandbox = await start_payments(servers)
        api = await servers.start(**api_env(sandbox.base_url))
    return sandbox, api


def payments_env(sandbox: Server | str, **extra: str) -> dict[str, str]:
    """An API process's settings for that sandbox (or its URL): quick timeouts and a quick
    breaker."""
    url = sandbox if isinstance(sandbox, str) else sandbox.base_url
    return {"INSTOCK_PAYMENTS_URL": url, "INSTOCK_PAYMENTS_TIMEOUT_SECONDS": "0.5",
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
