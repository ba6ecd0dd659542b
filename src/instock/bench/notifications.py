"""`instock bench notifications`: how many notifications a second the sender gets into the
local SMTP sink (a real `instock sandbox smtp` process), and what one send costs.

N customers with an email and back-in-stock consent are made through the customers service
(their addresses sealed, as in production); N `waitlist.notified.v1` events are queued as the
consumer queues them; then `senders` send loops drain the queue, each reading the customer's
profile (decrypting it), checking the rules, rendering the templates and sending over SMTP.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from instock.app import build
from instock.bench.drop.engine import settings_for
from instock.bench.local import (
    Reporter,
    backend_of,
    free_port,
    instock_executable,
    scratch_database,
)
from instock.customers.model import Changes
from instock.migrate import upgrade
from instock.notifications.channels import Channel, Outgoing
from instock.platform import telemetry
from instock.platform.bus.envelope import envelope
from instock.platform.db import utcnow
from instock.sandbox.smtp import received
from instock.waitlist.events import BackInStockNotified

QUEUE_CHUNK = 500


class Timed:
    """The email channel, timing each send (the bench's own instrument)."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds: list[float] = []

    async def send(self, message: Outgoing) -> str:
        started = time.perf_counter()
        try:
            return await self.inner.send(message)
        finally:
            self.seconds.append(time.perf_counter() - started)

    async def close(self) -> None:
        await self.inner.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else (
        values * 99)
    return {"p50": round(cuts[49] * 1000, 2), "p99": round(cuts[98] * 1000, 2)}


def _start_sink(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen([instock_executable(), "sandbox", "smtp", "--port", str(port),  # noqa: S603 - our own executable
                                "--dir", str(directory)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("the SMTP sink did not start") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the SMTP sink did not answer")


async def run(database: str, workdir: Path, count: int, senders: int,
              reporter: Reporter) -> dict[str, Any]:
    telemetry.configure_logging("warning", True)  # a line per notification drowns the bars
    mail = workdir / "mail"
    sink, port = _start_sink(mail)
    try:
        async with scratch_database(database, workdir, "instock_bench_notify") as url:
            await asyncio.to_thread(upgrade, url)
            settings = settings_for(url, None).model_copy(update={
                "smtp_url": f"smtp://127.0.0.1:{port}", "quiet_hours_start": "00:00",
                "quiet_hours_end": "00:00", "notify_rate_per_hour": 1_000_000,
                "email_rate_per_second": 0.0, "state_dir": workdir / "state",
                "run_notifications": False, "run_back_in_stock_waves": False})
            container = build(settings)
            service = container.notifications
            timed = Timed(service.channels["email"])
            service.channels["email"] = timed
            try:
                tick = reporter.task(f"{count} customers (sealed profiles)", count)
                for i in range(count):
                    await container.customers.save(
                        f"bench-c{i:06d}", Changes(email=f"bench-c{i:06d}@example.test",
                                                   consents={"back_in_stock_email": True}),
                        by="bench")
                    tick(1)
                tick = reporter.task("queueing back-in-stock notices", count)
                for start in range(0, count, QUEUE_CHUNK):
                    async with container.db.write() as conn:
                        for i in range(start, min(count, start + QUEUE_CHUNK)):
                            await service.on_event(conn, envelope(BackInStockNotified(
                                sku="BENCH-SKU", customer_id=f"bench-c{i:06d}", available=1,
                                subscribed_at=utcnow(), cause="bench"), None))
                    tick(min(QUEUE_CHUNK, count - start))
                tick = reporter.task(f"sending with {senders} sender(s)", count)
                seen = [0]

                async def sender() -> None:
                    while True:
                        sent = await service.send_due()
                        if sent:
                            seen[0] += sent
                            tick(sent)
                        elif not await service.due_soon(timedelta()):
                            return

                started = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(senders)))
                seconds = time.perf_counter() - started
                rows = await service.sent_times()
            finally:
                await container.close()
        arrived = received(mail)
    finally:
        sink.terminate()
        sink.wait(10)
    queue_to_sent = [(sent - created).total_seconds() for created, sent in rows]
    return {"database": backend_of(database), "notifications": count, "senders": senders,
            "sent": len(rows), "seconds": round(seconds, 3),
            "sent_per_second": round(len(rows) / seconds, 1) if seconds else None,
            "smtp_send_ms": _percentiles(timed.seconds),
            "queued_to_sent_ms": _percentiles(queue_to_sent),
            "received_at_sink": len(arrived),
            "distinct_message_ids": len({m.message_id for m in arrived})}
