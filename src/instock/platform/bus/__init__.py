"""The message bus: outbox, relay and the adapters behind one interface (DESIGN.md §3)."""

from __future__ import annotations

from instock.platform.bus.base import Bus, Delivery, Envelope

__all__ = ["Bus", "Delivery", "Envelope", "connect"]


def connect(url: str) -> Bus:
    """The bus adapter for `INSTOCK_BUS_URL`: memory://, redis://…, nats://… or rabbitmq://…"""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from instock.platform.bus.memory import MemoryBus
        return MemoryBus.from_url(url)
    if scheme in {"redis", "rediss"}:
        from instock.platform.bus.redis_streams import RedisStreamsBus
        return RedisStreamsBus.from_url(url)
    if scheme in {"nats", "tls"}:
        from instock.platform.bus.nats import NatsBus
        return NatsBus.from_url(url)
    if scheme in {"rabbitmq", "rabbitmqs"}:
        from instock.platform.bus.rabbitmq import RabbitStreamsBus
        return RabbitStreamsBus.from_url(url)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use memory://, redis://, nats:// "
                     "or rabbitmq://")
