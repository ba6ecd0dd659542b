"""The one interface every message bus adapter implements (DESIGN.md §3).

Messages are CloudEvents envelopes (plain JSON-able dicts). Nothing outside an adapter knows
which bus runs; `instock.platform.bus.connect(url)` picks the adapter from `INSTOCK_BUS_URL`.

Two ways to read:
- `consume(group)`: a durable consumer group. At-least-once: a delivery that is not acked is
  delivered again (to this or another member of the group) once `redeliver_after` has passed,
  which is how a crashed consumer's messages are claimed by the survivors. A new group starts at
  the oldest message the bus still keeps, or at `since`.
- `listen()`: an ephemeral fan-out. Every listener sees every message published after it started;
  nothing is stored for it. Each API process uses one for live push.
`history(since)` reads what the bus keeps from a point in time up to now, for replays.

A listener may miss messages: one that falls behind loses the oldest, and one whose connection
dropped misses what was published meanwhile. It is then told so by an envelope of type `GAP`
(no data), so that a reader holding state built from the stream reads that state afresh.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Envelope = dict[str, Any]
GAP = "instock.bus.listen_gap"  # what listen() yields where this listener may have missed some


def gap() -> Envelope:
    return {"type": GAP, "id": None, "data": {}}


@dataclass(eq=False)
class Delivery:
    """One message handed to one member of a consumer group; `ack()` when it is handled."""

    envelope: Envelope
    _ack: Callable[[], Awaitable[None]] = field(repr=False)
    acked: bool = False

    async def ack(self) -> None:
        if not self.acked:
            await self._ack()
            self.acked = True


class Bus(ABC):
    @abstractmethod
    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish in the given order; returns once the bus has durably accepted all of them."""

    @abstractmethod
    def consume(self, group: str, *, since: datetime | None = None,
                redeliver_after: float = 30.0, batch: int = 100,
                types: frozenset[str] | None = None) -> AsyncIterator[Delivery]:
        """Deliveries for one member of the durable consumer group `group`, forever.

        `types` is a hint: a bus may pass over events of other types (the in-process one
        does, saving a dozen consumers a decode and an ack of every event they ignore); a
        consumer still ignores what it does not want."""

    @abstractmethod
    def listen(self) -> AsyncIterator[Envelope]:
        """Every message published from now on, to this listener only, forever; a `GAP`
        envelope where some may have been missed (see the module's docstring)."""

    @abstractmethod
    def history(self, since: datetime) -> AsyncIterator[Envelope]:
        """Messages the bus keeps, from `since` to the newest one at the time of the call."""

    async def ping(self) -> None:
        """Raise unless the broker answers now (an in-process bus always does)."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Release connections; pending iterators end."""
