"""Draw rules, free of I/O: the published algorithm that orders a draw's entries from its seed,
the rights to reserve it grants in that order (rolling over as they lapse), and an entry's
status at a moment."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from instock.drops.model import Drop

DRAW_ALGORITHM = (
    "hmac-sha256-sort-v1: rank every entry id by the lowercase hex of "
    "HMAC-SHA256(key = the seed's UTF-8 bytes, message = the entry id's UTF-8 bytes), "
    "ascending (ties by entry id); the first `slots` win, the rest follow in that order when "
    "an unclaimed right rolls over")


def draw_key(seed: str, entry_id: str) -> str:
    return hmac.new(seed.encode(), entry_id.encode(), hashlib.sha256).hexdigest()


def draw_order(seed: str, entry_ids: Sequence[str]) -> list[str]:
    """The draw's order of `entry_ids` under `seed` (DRAW_ALGORITHM): the same for anyone who
    has the published seed and entries, and no one can steer it without the seed, which stays
    secret until the entries are closed and the draw is stored."""
    return sorted(entry_ids, key=lambda entry: (draw_key(seed, entry), entry))


@dataclass(frozen=True)
class Right:
    """An entrant's right to reserve: granted at `opens`, lapsing at `until` unless used."""

    entry_id: str
    rank: int  # 1-based, in the draw's order
    opens: datetime
    until: datetime
    claimed: bool  # the entrant reserved the drop's SKUs before `until`


@dataclass(frozen=True)
class Rights:
    granted: dict[str, Right]  # every right granted by now (open, used or lapsed), by entry
    open: int  # rights open and not yet used now: while any, a rollover may reach further


def rights(order: Sequence[str], slots: int, opens_at: datetime, window: timedelta,
           claims: Mapping[str, datetime], now: datetime) -> Rights:
    """Who holds a right to reserve at `now`, by arithmetic on the clock (like the queue's
    `admitted_through`): the first `slots` of the order hold one from `opens_at` for `window`;
    at the end of each window every right not used in it (no claim before its end) passes to
    the next entrant in the order, for the next window. `claims` maps an entry to when it first
    reserved; claims never change once made, so every process computes the same answer."""
    granted: dict[str, Right] = {}
    start, current, reached = opens_at, list(order[:slots]), min(slots, len(order))
    open_now = 0
    while current:
        end = start + window
        for entry in current:
            at = claims.get(entry)
            granted[entry] = Right(entry, len(granted) + 1, start, end,
                                   at is not None and at < end)
        if now < end:
            open_now = sum(1 for entry in current if not granted[entry].claimed)
            break
        lapsed = sum(1 for entry in current if not granted[entry].claimed)
        current = list(order[reached:reached + lapsed])
        reached += len(current)
        start = end
    return Rights(granted, open_now)


class EntryStatus(StrEnum):
    WAITING = "waiting"  # not drawn yet, or a right may still roll over to it
    WON = "won"  # holds a right now, or used one
    LOST = "lost"  # no right, and none left to roll over
    EXPIRED = "expired"  # held a right and let it lapse
    HELD = "held"  # held for review by the bot scoring: not in the draw
    REFUSED = "refused"  # staff refused it on review: not in the draw


def entry_status(entry_id: str, drawn: Rights | None, now: datetime) -> EntryStatus:
    if drawn is None:
        return EntryStatus.WAITING
    right = drawn.granted.get(entry_id)
    if right is None:
        return EntryStatus.WAITING if drawn.open else EntryStatus.LOST
    if right.claimed or now < right.until:
        return EntryStatus.WON
    return EntryStatus.EXPIRED


def claim_opens(drop: Drop, drawn_at: datetime) -> datetime:
    """A winner's window opens at the draw, but no sooner than the start: nobody may reserve
    the SKUs before it, so a window spent waiting for the start would be no window at all."""
    return max(drawn_at, drop.starts_at)
