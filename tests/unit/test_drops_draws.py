"""Draw rules without a database (drops/model/draws.py): the entry window's validation, the draw's
order (reproducible from the seed and the entries alone, a permutation, another seed another
order) and who holds a right to reserve as unclaimed rights roll over."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from instock.drops import model
from instock.drops.model import Mode
from instock.drops.model import draws as draw_model
from instock.drops.model.draws import EntryStatus

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
ENTRIES = [f"0190-entry-{i:04d}" for i in range(1000)]


def draw_drop(**changes: object) -> model.Drop:
    base = model.Drop(id="d1", skus=("s1",), starts_at=START, mode=Mode.DRAW,
                      admit_per_second=0.0, per_customer_limit=None, channels=(),
                      ends_at=None, seed="s", created_at=START - timedelta(days=1),
                      created_by="merchandiser:m",
                      entries_close_at=START - timedelta(hours=1))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_valid_draw_drop_passes() -> None:
    model.check_drop(draw_drop())
    model.check_drop(draw_drop(entries_close_at=START, draw_winners=3, claim_seconds=60.0))


@pytest.mark.parametrize(("changes", "field"), [
    ({"entries_close_at": None}, "entries_close_at"),
    ({"entries_close_at": START + timedelta(seconds=1)}, "entries_close_at"),
    ({"entries_close_at": datetime(2026, 12, 7, 11, 0)}, "entries_close_at"),
    ({"draw_winners": 0}, "draw_winners"),
    ({"claim_seconds": 0.0}, "claim_seconds"),
    ({"claim_seconds": float("inf")}, "claim_seconds"),
    ({"mode": Mode.FIRST_COME}, "entries_close_at"),  # only a draw takes entries
    ({"mode": Mode.FIRST_COME, "entries_close_at": None, "draw_winners": 2}, "draw_winners"),
])
def test_an_invalid_draw_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(model.InvalidDrop) as refused:
        model.check_drop(draw_drop(**changes))
    assert refused.value.field == field and refused.value.reason


def test_the_order_is_reproducible_from_the_seed_and_entries_alone() -> None:
    order = draw_model.draw_order("seed-a", ENTRIES)
    assert sorted(order) == sorted(ENTRIES) and len(set(order)) == len(ENTRIES)  # each once
    # The same seed and entries, in any order given: the same order.
    assert draw_model.draw_order("seed-a", list(reversed(ENTRIES))) == order
    # The published algorithm, re-computed with nothing but hashlib: the same order.
    assert order == sorted(ENTRIES, key=lambda e: hmac.new(
        b"seed-a", e.encode(), hashlib.sha256).hexdigest())
    assert order != sorted(ENTRIES)  # a shuffle, not the ids' order
    assert draw_model.draw_order("seed-b", ENTRIES) != order  # another seed, another order


def test_winners_hold_rights_for_a_window_and_unclaimed_ones_roll_over_in_order() -> None:
    order = [f"e{i}" for i in range(10)]
    opens = START

    def at(minutes: float, claims: dict[str, datetime] | None = None) -> draw_model.Rights:
        return draw_model.rights(order, 3, opens, WINDOW, claims or {},
                            START + timedelta(minutes=minutes))

    first = at(1)
    assert list(first.granted) == ["e0", "e1", "e2"] and first.open == 3
    assert first.granted["e2"].until == START + WINDOW and first.granted["e2"].rank == 3
    assert draw_model.entry_status("e0", first, START) is EntryStatus.WON
    assert draw_model.entry_status("e5", first, START) is EntryStatus.WAITING
    assert draw_model.entry_status("e5", None, START) is EntryStatus.WAITING  # not drawn yet

    # e1 claims in its window; e0 and e2 let theirs lapse: e3 and e4 hold the next window.
    claims = {"e1": START + timedelta(minutes=5)}
    second = at(11, claims)
    assert list(second.granted) == ["e0", "e1", "e2", "e3", "e4"]
    assert second.granted["e3"].opens == START + WINDOW
    assert second.granted["e4"].until == START + 2 * WINDOW
    now = START + timedelta(minutes=11)
    assert [draw_model.entry_status(e, second, now) for e in ("e0", "e1", "e2", "e3", "e5")] == [
        EntryStatus.EXPIRED, EntryStatus.WON, EntryStatus.EXPIRED, EntryStatus.WON,
        EntryStatus.WAITING]

    # A claim made after its window ended does not count: the right had rolled over.
    late = at(11, {**claims, "e0": START + timedelta(minutes=10)})
    assert late.granted["e0"].claimed is False and "e3" in late.granted

    # Every right used: nothing rolls further, the rest have lost.
    used = at(25, {**claims, "e3": START + timedelta(minutes=12),
                   "e4": START + timedelta(minutes=13)})
    assert list(used.granted) == ["e0", "e1", "e2", "e3", "e4"] and used.open == 0
    assert draw_model.entry_status("e5", used, START + timedelta(minutes=25)) is EntryStatus.LOST

    # Nobody claims for a long while: the rights walk the order to its end, then stop.
    walked = at(1000)
    assert list(walked.granted) == order and walked.open == 0


def test_rights_open_at_the_start_when_drawn_before_it() -> None:
    d = draw_drop()
    assert draw_model.claim_opens(d, START - timedelta(minutes=30)) == START
    assert draw_model.claim_opens(d, START + timedelta(minutes=1)) == START + timedelta(minutes=1)
