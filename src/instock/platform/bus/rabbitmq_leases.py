"""Slot leases of the RabbitMQ Streams bus's consumer groups (see rabbitmq_groups.py): the
records members write to the control stream, and the state every member folds them into.

Pure and deterministic on purpose: the stream's order is the only arbiter, so every member
that folds the same records agrees on every grant, without a coordinator and without trusting
any clock but the broker's record timestamps.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import orjson

from instock.platform.bus.base import Envelope
from instock.platform.bus.inbox import ordering_key

SLOTS = 16  # fixed: stored positions are per slot, so every member must agree on the number


def slot_of(envelope: Envelope) -> int:
    """The slot of an event: a stable hash (the same in every process) of its ordering key."""
    key = (ordering_key(envelope) if "type" in envelope and "subject" in envelope
           else str(envelope.get("id")))
    return zlib.crc32(key.encode()) % SLOTS


@dataclass(frozen=True)
class Record:
    """One line of the control stream: `member` holds `own` for `ttl` ms from its timestamp;
    `bye`: it leaves the group (what it still holds runs out with the ttl)."""

    group: str
    member: str
    nonce: int
    ttl: int
    own: frozenset[int]
    bye: bool = False

    def encode(self) -> bytes:
        return orjson.dumps({"g": self.group, "m": self.member, "n": self.nonce, "ttl": self.ttl,
                             "own": sorted(self.own), "bye": self.bye})

    @classmethod
    def decode(cls, raw: bytes) -> Record | None:
        try:
            doc = orjson.loads(raw)
            return cls(str(doc["g"]), str(doc["m"]), int(doc["n"]), int(doc["ttl"]),
                       frozenset(int(s) for s in doc["own"] if 0 <= int(s) < SLOTS),
                       bool(doc.get("bye")))
        except (ValueError, KeyError, TypeError):
            return None  # not ours: nothing else should write there, but it must not stop us


@dataclass
class Grant:
    member: str
    until: int  # broker time, ms


class Leases:
    """One group's slot leases, folded from its records in stream order. Pure and
    deterministic: every member that folds the same records holds the same state."""

    def __init__(self) -> None:
        self.holders: dict[int, Grant] = {}
        self.members: dict[str, int] = {}  # member -> until (broker ms)
        self.now = 0  # the newest record's timestamp: the group's clock

    def fold(self, ts: int, record: Record) -> dict[int, bool]:
        """Apply one record. The slots granted to its member, each True if that member held
        it already (then nobody else can have held it in between: its state is still good)."""
        self.now = max(self.now, ts)
        member = record.member
        if record.bye:
            self.members.pop(member, None)
        else:
            self.members[member] = ts + record.ttl
        for slot in [s for s, g in self.holders.items() if g.member == member
                     and s not in record.own]:
            del self.holders[slot]  # released
        granted: dict[int, bool] = {}
        for slot in sorted(record.own):
            held = self.holders.get(slot)
            if held is None or held.member == member or held.until < ts:
                granted[slot] = held is not None and held.member == member
                self.holders[slot] = Grant(member, ts + record.ttl)
        return granted

    def live(self) -> list[str]:
        for member in [m for m, until in self.members.items() if until < self.now]:
            del self.members[member]
        return sorted(self.members)

    def share(self, member: str) -> frozenset[int]:
        """The slots `member` should hold, counting it among the live members."""
        live = sorted(set(self.live()) | {member})
        index, count = live.index(member), len(live)
        return frozenset(s for s in range(SLOTS) if s % count == index)

    def claimable(self, slot: int) -> bool:
        held = self.holders.get(slot)
        return held is None or held.until < self.now
