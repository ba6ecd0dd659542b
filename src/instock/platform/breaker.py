"""Circuit breakers for calls to the outside world (payment providers, marketplaces, webhooks).

A breaker counts consecutive failures of one dependency; after `threshold` of them it opens and
every call fails at once with `BreakerOpen` instead of waiting on a dependency that is down
(and holding a buyer's stock while it waits). After `cooldown` seconds the next call is let
through (half-open): success closes the breaker, a failure opens it again for another cooldown.
What counts as a failure is the caller's to say: a declined card means the provider is up.

The state machine is purgatory's (asyncio-native, in-process state); this module adds the
house's error type and exposes each breaker's state as the Prometheus gauge
`instock_circuit_breaker_state` (0 closed, 1 half-open, 2 open). An open breaker turns
half-open lazily, when a call arrives after the cooldown, so the gauge reads "open" until then.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from prometheus_client import Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

log = structlog.get_logger(__name__)

BREAKER_STATE = Gauge("instock_circuit_breaker_state",
                      "Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open",
                      ["breaker"])
STATE_VALUES = {"closed": 0, "half-opened": 1, "opened": 2}
STATE_NAMES = {"closed": "closed", "half-opened": "half_open", "opened": "open"}


class BreakerOpen(Exception):
    """The breaker is open: the call was not made."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name} is open; next try in {retry_after:.1f} s")
        self.name = name
        self.retry_after = retry_after


class Breaker:
    """One dependency's breaker. `async with breaker.guard(): ...` around each call."""

    def __init__(self, name: str, *, threshold: int, cooldown: float,
                 is_failure: Callable[[BaseException], bool] = lambda exc: True) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        # A breaker per instance (not one factory for the process): two apps in one test
        # process, or two providers, never share a state.
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold,
                                                   default_ttl=cooldown)
        self._factory.add_listener(self._heard)
        # purgatory counts an exception as a failure unless an exclusion matches it.
        self._exclude: Any = [(BaseException, lambda exc: not is_failure(exc))]
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> str:
        """closed, half_open or open (as last recorded; see the module's note on half-open)."""
        context = self._factory.uow.contexts.breakers.get(self.name)  # type: ignore[attr-defined]
        return STATE_NAMES[context.state] if context is not None else "closed"

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        breaker = await self._factory.get_breaker(self.name, exclude=self._exclude)
        try:
            async with breaker:
                yield
        except OpenedState as exc:
            # purgatory stamps `opened_at` with the wall clock.
            retry_after = exc.opened_at + self.cooldown - time.time()
            raise BreakerOpen(self.name, max(0.0, retry_after)) from None

    def _heard(self, name: str, what: str, event: Any) -> None:
        if what == "state_changed":
            BREAKER_STATE.labels(name).set(STATE_VALUES.get(event.state, 0))
            log.warning("circuit_breaker_state", breaker=name, state=STATE_NAMES.get(
                event.state, event.state))

