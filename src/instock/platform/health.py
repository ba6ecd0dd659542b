"""Readiness that means something: each dependency's state, and not-ready only when one the
process cannot serve without is down.

The database is required: no request is answered without it. The bus and Redis are reported
but do not take the process out of rotation: writes wait in the outbox while the bus is away
(nothing is lost, the relay catches up), and the caches do without Redis. Taking every API
process out of the load balancer for a broker outage would turn late live updates into a
full outage. Outbox lag is reported from the backbone monitor's latest sample (no query per
probe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from instock.platform.bus.base import Bus
from instock.platform.bus.health import Backbone
from instock.platform.cache import GroupedCache
from instock.platform.db import Database, utcnow

PROBE_TIMEOUT = 1.0  # seconds a dependency has to answer a readiness probe
OUTBOX_LAG_WARNING = 30.0  # seconds: the outbox check reports `lagging` beyond this


@dataclass(frozen=True)
class Dependency:
    name: str
    ping: Callable[[], Awaitable[None]]
    required: bool


async def probe(dependency: Dependency) -> dict[str, Any]:
    try:
        await asyncio.wait_for(dependency.ping(), PROBE_TIMEOUT)
    except Exception as exc:
        reason = "no answer within 1 s" if isinstance(exc, TimeoutError) else type(exc).__name__
        return {"status": "down", "required": dependency.required, "error": reason}
    return {"status": "up", "required": dependency.required}


Report = Callable[[], dict[str, Any]]


def dependencies(db: Database, bus: Bus, redis: GroupedCache | None) -> list[Dependency]:
    """The database (required), the bus, and Redis when one is configured (its cache)."""
    found = [Dependency("database", db.ping, required=True),
             Dependency("bus", bus.ping, required=False)]
    if redis is not None:
        found.append(Dependency("redis", redis.ping, required=False))
    return found


async def readiness(dependencies: list[Dependency],
                    reports: dict[str, Report]) -> tuple[bool, dict[str, Any]]:
    """(ready, checks): every dependency probed at once, then the reports added as they are."""
    probed = await asyncio.gather(*(probe(d) for d in dependencies))
    checks: dict[str, Any] = {d.name: found for d, found in zip(dependencies, probed, strict=True)}
    ready = all(found["status"] == "up" for found in probed if found["required"])
    for name, report in reports.items():
        checks[name] = report()
    return ready, checks


def outbox_report(sample: Backbone | None) -> dict[str, Any]:
    if sample is None:
        return {"status": "unknown"}  # not sampled yet (the process just started)
    lag = sample.outbox_lag_seconds
    return {"status": "lagging" if lag > OUTBOX_LAG_WARNING else "ok",
            "pending": sample.outbox_pending, "lag_seconds": round(lag, 3),
            "sampled_at": sample.sampled_at.isoformat()}


def reconciler_report(running: bool, last_pass: datetime | None,
                      interval_seconds: float) -> dict[str, Any]:
    """Whether this process reconciles, and whether its passes keep to their interval."""
    if not running:
        return {"status": "off"}
    if last_pass is None:
        return {"status": "starting"}
    age = (utcnow() - last_pass).total_seconds()
    late = age > max(3 * interval_seconds, 30.0)
    return {"status": "late" if late else "ok", "last_pass": last_pass.isoformat(),
            "seconds_since_pass": round(age, 3)}
