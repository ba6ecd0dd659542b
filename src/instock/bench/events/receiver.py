"""The receiver: its own process holding SSE connections, so the driver's work does not delay
its stamps (`python -m instock.bench.events.receiver`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from instock.bench.events.plan import PUSH_GRACE_SECONDS, SKUS_PER_STREAM
from instock.bench.local import READY_TIMEOUT, first_of, run_loop
from instock.bench.sse import SseStream

# What `first_of` says failed: a connection ended, or they were not ready in time.
FAILURES = ("SSE connection ended", "SSE clients not ready in time")


def stream_groups(skus: list[str]) -> list[list[str]]:
    return [skus[i:i + SKUS_PER_STREAM] for i in range(0, len(skus), SKUS_PER_STREAM)]


async def receive(port: int, groups: list[list[str]], ready: Callable[[], None],
                  stop: Awaitable[str]) -> list[tuple[str, int, float]]:
    """Hold one SSE connection per group; once every SKU's first state is in, call `ready`.
    `stop` gives the newest version of every SKU written: once those are in (or after a grace
    period), return every (sku, version, arrival) seen."""
    arrivals: list[tuple[str, int, float]] = []
    wanted = {sku for group in groups for sku in group}
    seen: dict[str, int] = {}
    all_seen = asyncio.Event()
    expected: dict[str, int] = {}
    caught_up = asyncio.Event()

    async def follow(skus: list[str]) -> None:
        stream = await SseStream.open(port, skus)
        try:
            async for event, data in stream.events():
                if event == "stock":
                    now = time.monotonic()
                    body = json.loads(data)
                    sku, version = body["sku"], int(body["version"])
                    arrivals.append((sku, version, now))
                    seen[sku] = max(seen.get(sku, 0), version)
                    if len(seen) == len(wanted):
                        all_seen.set()
                    if expected and _caught_up(seen, expected):
                        caught_up.set()
        finally:
            stream.close()

    tasks = [asyncio.create_task(follow(group)) for group in groups]
    try:
        await first_of(all_seen.wait(), tasks, READY_TIMEOUT, *FAILURES)
        ready()
        waiter = asyncio.ensure_future(stop)
        await first_of(waiter, tasks, None, *FAILURES)
        expected.update(json.loads(waiter.result() or "{}"))
        if not _caught_up(seen, expected):
            with contextlib.suppress(TimeoutError):
                await first_of(caught_up.wait(), tasks, PUSH_GRACE_SECONDS, *FAILURES)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return arrivals


def _caught_up(seen: dict[str, int], expected: dict[str, int]) -> bool:
    return all(seen.get(sku, 0) >= version for sku, version in expected.items())




def _receiver_main(port: int, skus: list[str], out: Path) -> None:
    """Entry of the receiver process: "ready" on stdout; then a line on stdin (JSON: the
    newest version of every SKU written); then the arrivals as JSON in `out`, and "done"."""
    async def main() -> list[tuple[str, int, float]]:
        loop = asyncio.get_running_loop()
        stop = loop.run_in_executor(None, sys.stdin.readline)

        def ready() -> None:
            print("ready", flush=True)

        return await receive(port, stream_groups(skus), ready, stop)

    arrivals = run_loop(main())
    out.write_text(json.dumps(arrivals))
    print("done", flush=True)


@asynccontextmanager
async def receiver(port: int, skus: list[str], workdir: Path) -> AsyncIterator[
        Callable[[dict[str, int]], Awaitable[list[tuple[str, int, float]]]]]:
    """Start the receiver process; yields a function that, given the newest version written
    per SKU, waits for those (a grace period at most) and returns the arrivals."""
    out = workdir / f"arrivals-{port}.json"
    args = json.dumps({"port": port, "skus": skus, "out": str(out)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "instock.bench.events.receiver", args, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def finish(newest: dict[str, int]) -> list[tuple[str, int, float]]:
        stdin.write(json.dumps(newest).encode() + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), READY_TIMEOUT + PUSH_GRACE_SECONDS)
        if line.strip() != b"done":
            raise RuntimeError("the SSE receiver failed (see stderr above)")
        return [(sku, int(version), float(t))
                for sku, version, t in json.loads(out.read_text())]

    try:
        line = await asyncio.wait_for(stdout.readline(), READY_TIMEOUT + 30)
        if line.strip() != b"ready":
            raise RuntimeError("the SSE receiver failed to connect (see stderr above)")
        yield finish
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


if __name__ == "__main__":  # the receiver process (see `receiver`)
    _args = json.loads(sys.argv[1])
    _receiver_main(int(_args["port"]), list(_args["skus"]), Path(_args["out"]))
