"""Pure rules of live push: what a client is sent, how a slow one catches up, how it resumes.

A client never gets a queue of every change: each connection keeps at most one pending update
per key (a SKU, or a staff stream's key), the newest. A hot SKU changing thousands of times a
second, or a client on a slow link, therefore costs one slot per key, and the client always ends
on the latest state. Versions only move forward: an update older than what the client already
has is dropped.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from instock.live.events import Update

# Public streams carry stock counts; staff streams carry reservations and ledger movements.
PUBLIC_TOPIC = "stock"
STAFF_TOPICS = frozenset({"reservations", "ledger"})
# Orders are followed one at a time, by their owner (GraphQL's orderChanged).
ORDERS_TOPIC = "orders"
# A staff stream a client cannot keep up with keeps only this many distinct keys pending,
# then drops the oldest and tells the client it missed some (it should re-read by REST).
MAX_PENDING = 10_000
_CURSOR_PART = re.compile(r"^([^=,\s]{1,64})=(\d{1,18})$")


@dataclass
class Mailbox:
    """One connection's pending updates, coalesced by key, and the versions already sent."""

    pending: OrderedDict[str, Update] = field(default_factory=OrderedDict)
    sent: dict[str, int] = field(default_factory=dict)
    overflowed: bool = False

    def offer(self, update: Update) -> bool:
        """Keep `update` if it is newer than what is sent and pending; True if kept."""
        if update.version is not None:
            if update.version <= self.sent.get(update.key, -1):
                return False
            waiting = self.pending.get(update.key)
            if waiting is not None and waiting.version is not None \
                    and update.version < waiting.version:
                return False
        self.pending.pop(update.key, None)
        self.pending[update.key] = update
        if len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
            self.overflowed = True
        return True

    def drain(self) -> list[Update]:
        """Everything pending, oldest first; remembers the versions as sent."""
        updates = list(self.pending.values())
        self.pending.clear()
        for update in updates:
            if update.version is not None and update.topic == PUBLIC_TOPIC:
                self.sent[update.key] = update.version
        return updates


def encode_cursor(sent: dict[str, int]) -> str:
    """The SSE event id: every SKU's version the client has, so a reconnect resumes from it."""
    return ",".join(f"{sku}={version}" for sku, version in sorted(sent.items()))


def decode_cursor(text: str | None) -> dict[str, int]:
    """Parse a Last-Event-ID; anything unreadable counts as no cursor (a full snapshot)."""
    cursor: dict[str, int] = {}
    for part in (text or "").split(","):
        match = _CURSOR_PART.match(part.strip())
        if match:
            cursor[match.group(1)] = int(match.group(2))
    return cursor


def stock_update(envelope: dict[str, Any]) -> Update | None:
    """The public update carried by a stock_changed event: the SKU's version and availability."""
    data = envelope.get("data") or {}
    totals = data.get("totals") or {}
    if "sku_version" not in data or "available" not in totals:
        return None
    return stock_state(data["sku"], int(data["sku_version"]), int(totals["available"]))


def stock_state(sku: str, version: int, available: int) -> Update:
    return Update(PUBLIC_TOPIC, sku, version,
                  {"sku": sku, "version": version, "available": available,
                   "sold_out": available == 0})


# Staff streams get whole envelopes (which event is which is the service's to know).


def reservation_update(envelope: dict[str, Any]) -> Update:
    """A reservation event on the reservations stream, keyed by the reservation."""
    return Update("reservations", str(envelope.get("subject")), None, envelope)


def ledger_update(envelope: dict[str, Any]) -> Update:
    """A stock change on the ledger stream, keyed by its stock level (sku@location)."""
    data = envelope.get("data") or {}
    return Update("ledger", f"{data.get('sku')}@{data.get('location')}", data.get("version"),
                  envelope)



def order_update(envelope: dict[str, Any]) -> Update:
    """An order event, keyed by the order; its sequence is the order's version."""
    sequence = envelope.get("sequence")
    return Update(ORDERS_TOPIC, str(envelope.get("subject")),
                  int(sequence) if sequence is not None else None, envelope)
