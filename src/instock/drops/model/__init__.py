"""Drop rules, free of I/O: what a drop is and when it is valid, the waiting room's order, how
many it has admitted by a given moment, and what a ticket or a pass says (its claims). A draw's
rules (its order, the rights it grants) are in `model/draws.py`.

The waiting room holds no mutable shared state of its own: a shopper's place is a key computed
once, when the ticket is taken, and admission is arithmetic on the clock. That is what lets any
number of API processes answer for the same room and agree, and a killed process lose nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from instock.drops.events import DropScheduled

MAX_SKUS = 100
MAX_ADMIT_PER_SECOND = 100_000.0
MAX_CLAIM_SECONDS = 7 * 86_400.0
DEFAULT_CLAIM_SECONDS = 900.0


class Mode(StrEnum):
    FIRST_COME = "first_come"  # at the start, anyone may reserve
    QUEUE = "queue"  # at the start, the waiting room admits shoppers at a rate
    DRAW = "draw"  # at the start, the drawn winners may reserve (model: draw order, rights)


class Admission(StrEnum):
    FIXED = "fixed"  # queue mode: the merchandiser's admit_per_second, for the whole drop
    CAPACITY = "capacity"  # queue mode: from admit_per_second, then as checkout keeps up


class InvalidDrop(ValueError):
    """A drop (or a request about one) that breaks a rule; names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Drop:
    """A scheduled release of some SKUs. Before `starts_at` no one may reserve them; from then
    on `mode` decides who may, until `ends_at` (None: the drop gates its SKUs for good)."""

    id: str
    skus: tuple[str, ...]
    starts_at: datetime
    mode: Mode
    admit_per_second: float  # queue mode: shoppers admitted per second from the start
    per_customer_limit: int | None
    channels: tuple[str, ...]  # empty: every channel
    ends_at: datetime | None
    # The shuffle of the shoppers who arrived before the start is keyed by this: stored with
    # the drop, so every process (and every restart) computes the same order.
    seed: str
    created_at: datetime
    created_by: str
    # Draw mode: entries are taken until `entries_close_at` (at or before the start); then
    # `draw_winners` are drawn (None: as many as units available at the draw), each with
    # `claim_seconds` to reserve before their right rolls over to the next in the draw's order.
    entries_close_at: datetime | None = None
    draw_winners: int | None = None
    claim_seconds: float = DEFAULT_CLAIM_SECONDS
    # Queue mode, by capacity: the rate follows measured checkout capacity (capacity_rate),
    # never above `max_admit_per_second` (None: MAX_ADMIT_PER_SECOND). `rates` are the stored
    # changes of rate after the start, read with the drop (a fixed-rate drop has none).
    admission: Admission = Admission.FIXED
    max_admit_per_second: float | None = None
    rates: tuple[Segment, ...] = ()

    def started(self, now: datetime) -> bool:
        return now >= self.starts_at

    def over(self, now: datetime) -> bool:
        return self.ends_at is not None and now >= self.ends_at


def check_drop(drop: Drop) -> None:
    """Raise InvalidDrop naming the first field that breaks a rule."""
    if not drop.skus:
        raise InvalidDrop("skus", "at least one SKU is required")
    if len(drop.skus) > MAX_SKUS:
        raise InvalidDrop("skus", f"at most {MAX_SKUS} SKUs")
    if len(set(drop.skus)) != len(drop.skus):
        raise InvalidDrop("skus", "a SKU is listed twice")
    if drop.starts_at.tzinfo is None:
        raise InvalidDrop("starts_at", "must carry a time zone (RFC 3339)")
    if not math.isfinite(drop.admit_per_second) or drop.admit_per_second < 0:
        raise InvalidDrop("admit_per_second", "must be a number of zero or more")
    if drop.admit_per_second > MAX_ADMIT_PER_SECOND:
        raise InvalidDrop("admit_per_second", f"at most {MAX_ADMIT_PER_SECOND:.0f}")
    if drop.mode is Mode.QUEUE and drop.admit_per_second == 0:
        raise InvalidDrop("admit_per_second", "a queue drop admits at least some shoppers")
    check_admission(drop)
    if drop.per_customer_limit is not None and drop.per_customer_limit < 1:
        raise InvalidDrop("per_customer_limit", "must be 1 or more")
    if drop.ends_at is not None and drop.ends_at <= drop.starts_at:
        raise InvalidDrop("ends_at", "must be after starts_at")
    check_draw(drop)


def check_admission(drop: Drop) -> None:
    """Admission by capacity is a waiting room's; its ceiling is at least its starting rate."""
    top = drop.max_admit_per_second
    if drop.admission is Admission.CAPACITY and drop.mode is not Mode.QUEUE:
        raise InvalidDrop("admission", "only a queue drop admits by capacity")
    if top is None:
        return
    if drop.admission is not Admission.CAPACITY:
        raise InvalidDrop("max_admit_per_second", "only a drop admitting by capacity has one")
    if not math.isfinite(top) or top > MAX_ADMIT_PER_SECOND:
        raise InvalidDrop("max_admit_per_second", f"at most {MAX_ADMIT_PER_SECOND:.0f}")
    if top < drop.admit_per_second:
        raise InvalidDrop("max_admit_per_second", "must be at least admit_per_second")


def check_draw(drop: Drop) -> None:
    """A draw needs its entry window closing at or before the start (the winners are known
    when the SKUs open); the other modes take no entries."""
    if drop.mode is not Mode.DRAW:
        if drop.entries_close_at is not None:
            raise InvalidDrop("entries_close_at", "only a draw drop takes entries")
        if drop.draw_winners is not None:
            raise InvalidDrop("draw_winners", "only a draw drop draws winners")
        return
    if drop.entries_close_at is None:
        raise InvalidDrop("entries_close_at", "a draw drop needs its entry window's close")
    if drop.entries_close_at.tzinfo is None:
        raise InvalidDrop("entries_close_at", "must carry a time zone (RFC 3339)")
    if drop.entries_close_at > drop.starts_at:
        raise InvalidDrop("entries_close_at", "must be at or before starts_at")
    if drop.draw_winners is not None and drop.draw_winners < 1:
        raise InvalidDrop("draw_winners", "must be 1 or more")
    if not math.isfinite(drop.claim_seconds) or not 0 < drop.claim_seconds <= MAX_CLAIM_SECONDS:
        raise InvalidDrop("claim_seconds", f"must be more than 0 and at most "
                                           f"{MAX_CLAIM_SECONDS:.0f}")


# -- the waiting room's order ---------------------------------------------------------------

PRE_START, AFTER_START = 0, 1


@dataclass(frozen=True, order=True)
class Place:
    """Where a ticket stands: ordered by lane, then key. Everyone who arrived before the start
    (lane 0) comes before everyone after it (lane 1); within lane 0 the key is a keyed hash of
    the ticket's id (a shuffle nobody can steer by arriving early or retrying), within lane 1
    it is the ticket's id, a UUIDv7, so by arrival."""

    lane: int
    key: str


def place(drop: Drop, ticket_id: str, arrived_at: datetime) -> Place:
    if arrived_at < drop.starts_at:
        digest = hmac.new(drop.seed.encode(), ticket_id.encode(), hashlib.sha256).hexdigest()
        return Place(PRE_START, digest)
    return Place(AFTER_START, ticket_id)


@dataclass(frozen=True)
class Segment:
    """From `from_at` on (until the next segment's), the room admits `rate` places a second."""

    from_at: datetime
    rate: float


def segments(drop: Drop) -> list[Segment]:
    """The drop's rate over time: its admit_per_second from the start, then each stored
    change after it, in order (a fixed-rate drop: the one segment)."""
    later = sorted((seg for seg in drop.rates if seg.from_at > drop.starts_at),
                   key=lambda seg: seg.from_at)
    return [Segment(drop.starts_at, drop.admit_per_second), *later]


def admitted_through(drop: Drop, now: datetime) -> int:
    """How many places (from the first) the room has admitted by `now`: the floor of the sum,
    over the drop's rate segments, of rate x the seconds of the segment before `now` (one
    segment: floor(admit_per_second x seconds since the start)); none before the start.

    Arithmetic rather than a stored counter advanced by whoever asks: every process computes
    the same number from the drop's rows and the clock, with no row to contend for and nothing
    to lose when a process dies. A capacity drop's segments are written ahead of the moment
    they take effect (capacity.next_change), so every process has read one before it counts.
    The one thing it does not know is stock: the service stops admitting when the drop's SKUs
    are sold out (`Standing.sold_out`)."""
    if not drop.started(now):
        return 0
    return math.floor(_admitted(segments(drop), now))


def _admitted(segs: Sequence[Segment], now: datetime) -> float:
    total = 0.0
    for seg, after in zip(segs, [*segs[1:], None], strict=True):
        end = now if after is None else min(now, after.from_at)
        if end <= seg.from_at:
            continue  # not begun by now (or of no length)
        total += seg.rate * (end - seg.from_at).total_seconds()
    return total


def rate_at(drop: Drop, now: datetime) -> float:
    """The rate the room admits at by `now` (the starting rate before the start)."""
    rate = drop.admit_per_second
    for seg in segments(drop):
        if seg.from_at <= now:
            rate = seg.rate
    return rate


def wait_estimate(drop: Drop, position: int, now: datetime) -> float:
    """Seconds until `position` is admitted at the drop's rates (the current one carried on
    past the last known change; 0: admitted)."""
    if position <= admitted_through(drop, now) or drop.admit_per_second <= 0:
        return 0.0
    return max(0.0, (admitted_at(drop, position) - now).total_seconds())


@dataclass(frozen=True)
class Standing:
    """A ticket holder's state in the room now."""

    position: int  # 1-based rank in the stored order
    admitted: bool
    sold_out: bool
    wait_seconds: float


def standing(drop: Drop, position: int, now: datetime, sold_out: bool) -> Standing:
    """Admitted when the room has reached the position and there is stock left to sell."""
    admitted = (drop.mode is Mode.QUEUE and position <= admitted_through(drop, now)
                and not sold_out)
    return Standing(position, admitted, sold_out,
                    0.0 if admitted or sold_out else wait_estimate(drop, position, now))


@dataclass(frozen=True)
class RoomFigures:
    """What staff see of a drop's room (or a draw's entries) now."""

    asks: int  # tickets (queue) or entries (draw) taken
    held: int  # held for review by the bot scoring, waiting for staff
    refused: int  # refused by staff on review (refusals at the door take no place)
    reached: int  # places the room has reached (queue: admitted unless held or refused)
    waiting: int  # places not reached yet


def room_figures(drop: Drop, by_decision: dict[str, int], now: datetime) -> RoomFigures:
    asks = sum(by_decision.values())
    reached = min(admitted_through(drop, now), asks) if drop.mode is Mode.QUEUE else 0
    return RoomFigures(asks, by_decision.get("review", 0), by_decision.get("refuse", 0),
                       reached, asks - reached if drop.mode is Mode.QUEUE else 0)


@dataclass(frozen=True)
class Live:
    """What the waiting room's live stream tells a ticket holder (no pass: the page asks the
    authenticated GET for it once admitted)."""

    position: int  # among those still waiting: 1 is next, 0 once the room has reached it
    admitted: bool
    sold_out: bool
    wait_seconds: float
    held_for_review: bool


def live_standing(drop: Drop, position: int, held: bool, through: int, sold_out: bool,
                  now: datetime) -> Live:
    """A ticket at absolute `position` when the room has admitted `through` places: the
    stream's view of `standing` (a place held for review moves up but is never admitted)."""
    ahead = max(0, position - through)
    admitted = drop.mode is Mode.QUEUE and ahead == 0 and not sold_out and not held
    wait = 0.0 if admitted or sold_out or ahead == 0 else wait_estimate(drop, position, now)
    return Live(ahead, admitted, sold_out, wait, held)


# A move in the line is worth telling when it is at least this share of where the watcher
# stood (the front hears of every move, the back of every few percent), or once it is this
# many `every`s old, whatever its size.
MOVE_SHARE = 0.05
STALE_AFTER = 6


def push_due(sent: Live | None, view: Live, since_push: float, every: float) -> bool:
    """Whether a watcher is sent `view`: at once when it is admitted, held, or the drop sold
    out (or came back); a move in the line at most every `every` seconds, and then only a
    move worth telling (MOVE_SHARE, STALE_AFTER), so that a room of thousands moving every
    tick costs far less than a push per watcher per `every`."""
    if sent is None:
        return True
    if (sent.admitted, sent.sold_out, sent.held_for_review) != (
            view.admitted, view.sold_out, view.held_for_review):
        return True
    return move_due(sent.position, view.position, since_push, every)


def move_due(told: int, ahead: int, since_push: float, every: float) -> bool:
    """Whether a move in the line from `told` to `ahead` places is worth telling now (the
    move half of `push_due`, on two numbers: the room asks it of every watcher every tick
    before building anyone's standing)."""
    moved = abs(told - ahead)
    if not moved or since_push < every:
        return False
    return moved >= told * MOVE_SHARE or since_push >= every * STALE_AFTER


def admitted_at(drop: Drop, position: int) -> datetime:
    """When the room reaches `position` at the drop's rates (the inverse of admitted_through;
    past the last segment its rate goes on)."""
    segs, before = segments(drop), 0.0
    for seg, after in zip(segs, [*segs[1:], None], strict=True):
        span = None if after is None else (after.from_at - seg.from_at).total_seconds()
        if seg.rate > 0 and (span is None or before + seg.rate * span >= position):
            return seg.from_at + timedelta(seconds=(position - before) / seg.rate)
        before += seg.rate * (span or 0.0)
    return datetime.max.replace(tzinfo=drop.starts_at.tzinfo)  # no rate ever reaches it


def waited(drop: Drop, position: int, arrived_at: datetime) -> float:
    """Seconds a ticket admitted at `position` waited: from its arrival (or the start, for
    those who came before it) to its admission."""
    return max(0.0, (admitted_at(drop, position) - max(arrived_at, drop.starts_at))
               .total_seconds())


# -- tickets and passes ------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketClaims:
    """What a queue ticket says: this customer holds this place in this drop's room."""

    drop_id: str
    customer_id: str
    ticket_id: str


@dataclass(frozen=True)
class PassClaims:
    """What an admission pass says: this customer may reserve this drop's SKUs until then."""

    drop_id: str
    customer_id: str
    expires_at: datetime


def pass_problem(claims: PassClaims, drop_id: str, customer_id: str | None,
                 now: datetime) -> str | None:
    """Why a genuine pass does not let this reservation through (None: it does)."""
    if claims.drop_id != drop_id:
        return "the pass is for another drop"
    if customer_id is None:
        return "a drop pass admits the customer it names: the reservation names none"
    if claims.customer_id != customer_id:
        return "the pass is for another customer"
    if now >= claims.expires_at:
        return "the pass has expired"
    return None


@dataclass(frozen=True)
class Gate:
    """What the reservation path needs to know of a drop, per SKU (the per-process cache)."""

    drop_id: str
    mode: Mode
    starts_at: datetime
    ends_at: datetime | None
    per_customer_limit: int | None = None

    def gates(self, now: datetime) -> bool:
        return self.ends_at is None or now < self.ends_at

    def entry(self, now: datetime) -> Entry:
        """Who may reserve the drop's SKUs now."""
        if not self.gates(now):
            return Entry.ANYONE  # the drop is over: its SKUs sell as any others
        if now < self.starts_at:
            return Entry.NO_ONE
        return Entry.ANYONE if self.mode is Mode.FIRST_COME else Entry.ADMITTED

    def limit(self, now: datetime) -> int | None:
        """The per-customer limit the drop sets now (none once it is over)."""
        return self.per_customer_limit if self.gates(now) else None


class Entry(StrEnum):
    ANYONE = "anyone"
    NO_ONE = "no_one"  # not started
    ADMITTED = "admitted"  # only with a pass: from the waiting room (or, later, a draw)


def gate_of(drop: Drop) -> Gate:
    return Gate(drop.id, drop.mode, drop.starts_at, drop.ends_at, drop.per_customer_limit)


def overlapping(drop: Drop, live: list[Drop]) -> set[str]:
    """The drop's SKUs already in another live drop: a SKU is in one drop at a time, so the
    gate has one answer for it."""
    return set(drop.skus) & {sku for other in live for sku in other.skus}


def scheduled(drop: Drop) -> DropScheduled:
    return DropScheduled(drop_id=drop.id, skus=list(drop.skus), mode=drop.mode.value,
                         starts_at=drop.starts_at, ends_at=drop.ends_at,
                         entries_close_at=drop.entries_close_at,
                         admit_per_second=drop.admit_per_second,
                         admission=drop.admission.value,
                         max_admit_per_second=drop.max_admit_per_second,
                         per_customer_limit=drop.per_customer_limit,
                         channels=list(drop.channels))
