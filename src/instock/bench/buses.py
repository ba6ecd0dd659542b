"""The buses a bench runs on: which answer here, a stream of its own per run, and removing
it afterwards."""

from __future__ import annotations

import os
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from instock.bench.local import HOST

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_RABBITMQ = "rabbitmq://guest:guest@127.0.0.1:5672/"
PORTS = {"redis": 6379, "rediss": 6379, "nats": 4222, "tls": 4222}  # when the URL names none


def default_buses() -> list[str]:
    """memory:// always; Redis, NATS and RabbitMQ Streams (INSTOCK_REDIS_URL, INSTOCK_NATS_URL,
    INSTOCK_RABBITMQ_URL, else their standard local ports) only if something accepts a
    connection there."""
    candidates = [os.environ.get("INSTOCK_REDIS_URL") or DEFAULT_REDIS,
                  os.environ.get("INSTOCK_NATS_URL") or DEFAULT_NATS,
                  os.environ.get("INSTOCK_RABBITMQ_URL") or DEFAULT_RABBITMQ]
    return ["memory://", *(url for url in candidates if _answers(url))]


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme.startswith("rabbitmq"):  # its stream protocol's port, not the URL's (AMQP)
        from instock.platform.bus.rabbitmq_link import Address

        port = Address.from_url(url).port
    else:
        port = parts.port or PORTS[parts.scheme]
    try:
        with socket.create_connection((parts.hostname or HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def with_stream(url: str, stream: str) -> str:
    """The bus URL with this run's own stream (memory:// has none: it lives in the server)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "stream"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("stream", stream)])))


def bus_label(url: str) -> str:
    return urlsplit(url).scheme


async def drop_stream(url: str) -> None:
    """Delete the run's stream from Redis, NATS or RabbitMQ, so benches leave nothing behind."""
    parts = urlsplit(url)
    stream = dict(parse_qsl(parts.query)).get("stream")
    if stream is None:
        return
    if parts.scheme.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(urlunsplit(parts._replace(query="")))
        try:
            await client.delete(stream)
        finally:
            await client.aclose()
    elif parts.scheme in {"nats", "tls"}:
        from nats.aio.client import Client

        nc = Client()
        await nc.connect(urlunsplit(parts._replace(query="")), connect_timeout=5,
                         max_reconnect_attempts=0)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
    elif parts.scheme.startswith("rabbitmq"):
        from instock.platform.bus.rabbitmq import RabbitStreamsBus

        bus = RabbitStreamsBus.from_url(url)
        try:
            await bus.drop()  # the events' stream and its groups'
        finally:
            await bus.close()
