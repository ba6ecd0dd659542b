"""Drop rules, free of I/O: what a drop is and when it is valid, the waiting room's order, how
many it has admitted by a given moment, and what a ticket or a pass says (its claims).

The waiting room holds no mutable shared state of its own: a shopper's place is a key computed
once, when the ticket is taken, and admission is arithmetic on the clock. That is what lets any
number of API processes answer for the same room and agree, and a killed process lose nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
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


# -- admission by measured checkout capacity ---------------------------------------------------

# The capacity rule. A waiting room exists so that checkout is not swamped; what checkout can
# take is measured by how fast the shoppers it admitted get through it: their reservations of
# the drop's SKUs (heard from inventory) that ended in a checkout (committed) or that the
# shopper left (released or cancelled), per second over the last window. One that expired, or
# is still open, is a shopper stuck in checkout: it counts as nothing got through. The next
# rate is HEADROOM x that measured rate, so a room whose shoppers keep up grows by that factor
# a period (it can only measure what it admitted), and one whose checkout stalls falls to what
# gets through; bounded below by FLOOR_SHARE of the starting rate (the room never closes on a
# slow minute) and above by the drop's max_admit_per_second. With no checkout begun or ended
# in the window (the room is empty, or nobody admitted has reserved yet) there is nothing
# measured, and the rate stays.
HEADROOM = 1.5
FLOOR_SHARE = 0.1
WINDOW_PERIODS = 3  # the window measured is this many recomputation periods


@dataclass(frozen=True)
class Throughput:
    """Admitted shoppers' checkouts of a drop, measured over `seconds` up to now."""

    through: int  # ended in a checkout or left by the shopper within the window
    open: int  # begun and not ended now (or ended by expiring within the window)
    seconds: float


def capacity_rate(drop: Drop, measured: Throughput) -> float | None:
    """The rate the capacity rule sets from what was measured (None: nothing measured, the
    rate stays)."""
    if (measured.through == 0 and measured.open == 0) or measured.seconds <= 0:
        return None
    top = drop.max_admit_per_second or MAX_ADMIT_PER_SECOND
    floor = drop.admit_per_second * FLOOR_SHARE
    return min(top, max(floor, HEADROOM * measured.through / measured.seconds))


def next_change(drop: Drop, now: datetime, period: float, lead: float) -> datetime | None:
    """When a rate measured now takes effect: the first period boundary (the start plus a
    whole number of `period`s) at least `lead` seconds ahead, so that every process has read
    it (each reads the segments at least every `lead`) before it counts; never one in the
    past, which would move admissions already told. None until a full period has run (nothing
    to measure yet) or once the drop is over."""
    if drop.admission is not Admission.CAPACITY or period <= 0:
        return None
    since = (now - drop.starts_at).total_seconds()
    if since < period:
        return None
    at = drop.starts_at + timedelta(seconds=period * math.ceil((since + lead) / period))
    return None if drop.ends_at is not None and at >= drop.ends_at else at


def measure_window(drop: Drop, now: datetime, period: float) -> float:
    """The seconds measured: the last WINDOW_PERIODS periods, none before the start."""
    return min(period * WINDOW_PERIODS, max(0.0, (now - drop.starts_at).total_seconds()))


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
                         per_customer_limit=drop.per_customer_limit,
                         channels=list(drop.channels))


# -- draws -------------------------------------------------------------------------------------

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
