"""GraphQL subscribers (`stockChanged` over graphql-transport-ws, the `websockets` library) in
a process of their own (`python -m instock.bench.graphql`), so the bench's load
generator does not delay their stamps and their CPU is not charged to the server's.

Two modes, both speaking JSON lines: on stdout to the bench, on stdin from it.
- receive: `listeners` subscribers, each on every SKU given; "ready" once each has every SKU's
  first state; then a line on stdin (the newest version written per SKU); once every
  subscriber has those (a grace period at most), each subscriber's (sku, version, arrival)
  stamps go to the `out` file, and "done".
- crowd: `clients` subscribers, each on the hot SKU and one of its own, `parallel` connecting
  at once; progress lines {"connected", "failed"}; {"ready": true, ...} once all tried; then a
  line on stdin {"target": version}: the moments (monotonic) each subscriber had the hot SKU at
  that version or newer, as {"arrivals": [...]}; then it holds them until stdin closes.
Stamps are CLOCK_MONOTONIC (`time.monotonic`), shared by the processes of one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from instock.bench.graphql.plan import (
    FANOUT_TIMEOUT,
    PUSH_GRACE_SECONDS,
    STOCK_CHANGED,
)
from instock.bench.local import HOST, READY_TIMEOUT, first_of, raise_fd_limit, run_loop

PROTOCOL = "graphql-transport-ws"
Change = tuple[str, int, float]  # sku, version, arrival (monotonic)

# What `first_of` says failed: a connection ended, or they were not ready in time.
FAILURES = ("a subscriber's WebSocket ended", "subscribers not ready in time")


class Subscriber:
    """One WebSocket with one `stockChanged` subscription."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket

    @classmethod
    async def open(cls, port: int, token: str, skus: list[str]) -> Subscriber:
        # No permessage-deflate: its zlib state per connection would be the client's choice
        # to pay on the server, not the subscription's cost.
        socket = await connect(f"ws://{HOST}:{port}/graphql", subprotocols=[PROTOCOL],  # type: ignore[list-item]
                               compression=None, open_timeout=READY_TIMEOUT,
                               max_queue=None)
        try:
            await socket.send(json.dumps({"type": "connection_init",
                                          "payload": {"Authorization": f"Bearer {token}"}}))
            ack = json.loads(await asyncio.wait_for(socket.recv(), READY_TIMEOUT))
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"connection_init answered {ack}")
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": STOCK_CHANGED, "variables": {"skus": skus}}}))
        except BaseException:
            await socket.close()
            raise
        return cls(socket)

    async def changes(self) -> AsyncIterator[Change]:
        """(sku, version, arrival) of every `next`; an `error` or `complete` ends it badly."""
        async for raw in self.socket:
            now = time.monotonic()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "next":
                payload = message["payload"]
                if payload.get("errors"):
                    raise RuntimeError(f"subscription error: {payload['errors']}")
                change = payload["data"]["stockChanged"]
                yield change["sku"], int(change["version"]), now
            elif kind == "ping":
                await self.socket.send(json.dumps({"type": "pong"}))
            elif kind in {"error", "complete"}:
                raise RuntimeError(f"subscription ended: {message}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close()


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def _line(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    parsed: dict[str, Any] = json.loads(line or b"{}")
    return parsed


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# -- receive -----------------------------------------------------------------------------------

async def receive(port: int, token: str, skus: list[str], listeners: int, out: Path) -> None:
    stdin = await _stdin()
    arrivals: list[list[Change]] = [[] for _ in range(listeners)]
    seen: list[dict[str, int]] = [{} for _ in range(listeners)]
    expected: dict[str, int] = {}
    ready, caught_up = asyncio.Event(), asyncio.Event()

    def check() -> None:
        if all(len(s) == len(skus) for s in seen):
            ready.set()
        if expected and all(s.get(k, 0) >= v for s in seen for k, v in expected.items()):
            caught_up.set()

    async def follow(n: int) -> None:
        subscriber = await Subscriber.open(port, token, skus)
        try:
            async for sku, version, now in subscriber.changes():
                arrivals[n].append((sku, version, now))
                seen[n][sku] = max(seen[n].get(sku, 0), version)
                check()
        finally:
            await subscriber.close()

    tasks = [asyncio.create_task(follow(n)) for n in range(listeners)]
    try:
        await first_of(ready.wait(), tasks, READY_TIMEOUT, *FAILURES)
        _say({"ready": True})
        expected.update(await _line(stdin))
        check()
        with contextlib.suppress(TimeoutError):
            await first_of(caught_up.wait(), tasks, PUSH_GRACE_SECONDS, *FAILURES)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.write_text(json.dumps(arrivals))
    _say({"done": True})




# -- crowd -------------------------------------------------------------------------------------

class Crowd:
    def __init__(self, hot: str) -> None:
        self.hot = hot
        self.connected = 0
        self.failures: Counter[str] = Counter()
        self.target: int | None = None
        self.arrivals: list[float] = []
        self.subscribers: list[Subscriber] = []
        self.all_arrived = asyncio.Event()


async def _member(crowd: Crowd, port: int, token: str, skus: list[str],
                  gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            subscriber = await Subscriber.open(port, token, skus)
        except Exception as exc:  # counted: failures are part of the result
            crowd.failures[type(exc).__name__] += 1
            return
        crowd.subscribers.append(subscriber)
        changes = subscriber.changes()
        try:
            await asyncio.wait_for(anext(changes), READY_TIMEOUT)
        except Exception as exc:
            crowd.failures[f"first message: {type(exc).__name__}"] += 1
            return
        crowd.connected += 1
    with contextlib.suppress(Exception):
        async for sku, version, now in changes:
            if crowd.target is not None and sku == crowd.hot and version >= crowd.target:
                crowd.arrivals.append(now)
                if len(crowd.arrivals) >= crowd.connected:
                    crowd.all_arrived.set()
                return


async def crowd(port: int, token: str, hot: str, skus: list[str], clients: int,
                parallel: int) -> None:
    stdin = await _stdin()
    members = Crowd(hot)
    gate = asyncio.Semaphore(parallel)
    tasks = [asyncio.create_task(_member(members, port, token,
                                         list(dict.fromkeys([hot, skus[i % len(skus)]])), gate))
             for i in range(clients)]
    started = time.monotonic()
    while members.connected + sum(members.failures.values()) < clients:
        await asyncio.sleep(0.25)
        _say({"connected": members.connected, "failed": sum(members.failures.values())})
    _say({"ready": True, "connected": members.connected, "failed": dict(members.failures),
          "connect_seconds": round(time.monotonic() - started, 2)})
    members.target = int((await _line(stdin))["target"])
    if members.connected:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(members.all_arrived.wait(), FANOUT_TIMEOUT)
    _say({"arrivals": members.arrivals})
    await stdin.read()  # hold them until the bench is done with the server
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(s.close() for s in members.subscribers))


def main(args: dict[str, Any]) -> None:
    raise_fd_limit()
    if args["mode"] == "receive":
        run_loop(receive(args["port"], args["token"], args["skus"], args["listeners"],
                         Path(args["out"])))
    else:
        run_loop(crowd(args["port"], args["token"], args["hot"], args["skus"],
                       args["clients"], args["parallel"]))


async def spawn(args: dict[str, Any]) -> asyncio.subprocess.Process:
    """The clients' process (its stdin and stdout piped to the caller)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "instock.bench.graphql", json.dumps(args),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=2**26)  # the arrivals line of a large crowd is long


async def read_message(proc: asyncio.subprocess.Process, timeout: float,
                       progress: Callable[[dict[str, Any]], None] = lambda _: None
                       ) -> dict[str, Any]:
    """The next line from the clients that is not a progress line."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the GraphQL clients' process ended (see stderr above)")
        message: dict[str, Any] = json.loads(line)
        if "ready" in message or "done" in message or "arrivals" in message:
            return message
        progress(message)
