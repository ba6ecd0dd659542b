"""The reservation gate: what inventory's reserve path asks before holding a drop's SKUs.

Inventory never reads the drops tables: the composition root hands it this object behind its
`ReservationGate` port. The hot path must stay cheap, since every reservation passes here: the
gate keeps a per-process copy of which SKUs are in a live drop (one query per
`refresh_seconds`, shared by concurrent callers, and again at once on hearing a `drop.*` event),
so a reservation of a SKU in no drop costs a dict lookup per SKU and no I/O.

A drop scheduled in another process gates this one's reservations within `refresh_seconds`
(sooner when its event arrives): a drop is scheduled ahead of its start, so that is a window
nobody can reserve through unless the drop starts the moment it is scheduled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType

from instock.drops import model
from instock.drops.errors import DropNotStarted, DropPassInvalid, DropPassRequired
from instock.drops.tokens import BadToken, DropTokens
from instock.platform.bus import Envelope
from instock.platform.db import utcnow
from instock.platform.memo import Memo

Gates = Mapping[str, model.Gate]
NO_LIMITS: Mapping[str, int] = MappingProxyType({})


class DropGate:
    def __init__(self, load: Callable[[None], Awaitable[Gates]], tokens: DropTokens,
                 refresh_seconds: float, clock: Callable[[], datetime] = utcnow) -> None:
        self._gates: Memo[None, Gates] = Memo(load, refresh_seconds)
        self._tokens = tokens
        self._clock = clock

    async def admit(self, skus: Iterable[str], customer_id: str | None,
                    drop_pass: str | None) -> Mapping[str, int]:
        """The per-customer limits the drops set on these SKUs, if the reservation may go
        ahead; else raise the drop's refusal (nothing is reserved then): DropNotStarted,
        DropPassRequired or DropPassInvalid."""
        gates = await self._gates.get(None)
        if not gates:
            return NO_LIMITS
        by_drop: dict[str, tuple[model.Gate, list[str]]] = {}
        for sku in skus:
            gate = gates.get(sku)
            if gate is not None:
                by_drop.setdefault(gate.drop_id, (gate, []))[1].append(sku)
        if not by_drop:
            return NO_LIMITS
        now = self._clock()
        limits: dict[str, int] = {}
        for drop_id in sorted(by_drop):  # the same answer whatever order the lines came in
            gate, held = by_drop[drop_id]
            entry = gate.entry(now)
            if entry is model.Entry.NO_ONE:
                raise DropNotStarted(drop_id, gate.starts_at, sorted(held))
            if (limit := gate.limit(now)) is not None:
                limits.update(dict.fromkeys(held, limit))
            if entry is model.Entry.ANYONE:
                continue
            if drop_pass is None:
                raise DropPassRequired(drop_id, sorted(held))
            try:
                claims = self._tokens.read_pass(drop_pass)
            except BadToken as exc:
                raise DropPassInvalid(drop_id, exc.reason) from None
            problem = model.pass_problem(claims, drop_id, customer_id, now)
            if problem is not None:
                raise DropPassInvalid(drop_id, problem)
        return limits

    def heard(self, envelopes: Iterable[Envelope]) -> None:
        """Events committed here or heard from the bus: a drop's makes the copy old."""
        if any(str(e.get("type", "")).startswith("drop.") for e in envelopes):
            self._gates.forget()
