"""Live push rules: coalescing per key, versions only forward, resumable cursors."""

from __future__ import annotations

from instock.live import model
from instock.live.events import Update


def stock(sku: str, version: int, available: int = 1) -> Update:
    return model.stock_state(sku, version, available)


def test_a_hot_sku_keeps_one_pending_update_the_newest() -> None:
    box = model.Mailbox()
    for version in range(1, 5001):
        box.offer(stock("HOT", version, 5000 - version))
    assert len(box.pending) == 1
    [update] = box.drain()
    assert update.version == 5000 and update.body["available"] == 0
    assert update.body["sold_out"] is True


def test_older_versions_than_sent_or_pending_are_dropped() -> None:
    box = model.Mailbox()
    assert box.offer(stock("A", 5))
    assert not box.offer(stock("A", 4))
    box.drain()
    assert not box.offer(stock("A", 5))
    assert box.offer(stock("A", 6))


def test_updates_drain_oldest_key_first_and_are_remembered_as_sent() -> None:
    box = model.Mailbox()
    box.offer(stock("A", 1))
    box.offer(stock("B", 3))
    box.offer(stock("A", 2))  # A moves behind B: it changed last
    assert [u.key for u in box.drain()] == ["B", "A"]
    assert box.sent == {"A": 2, "B": 3}
    assert box.drain() == []


def test_a_slow_staff_stream_overflows_to_a_bounded_size() -> None:
    box = model.Mailbox()
    for i in range(model.MAX_PENDING + 10):
        box.offer(Update("reservations", f"r{i}", None, {}))
    assert len(box.pending) == model.MAX_PENDING and box.overflowed
    assert next(iter(box.pending)) == "r10"


def test_cursor_round_trips_and_ignores_garbage() -> None:
    cursor = {"HOOD-01-M": 12, "RUN-1-42": 7}
    assert model.decode_cursor(model.encode_cursor(cursor)) == cursor
    assert model.decode_cursor("HOOD-01-M=3,garbage,=4,X=notanumber") == {"HOOD-01-M": 3}
    assert model.decode_cursor(None) == {}


def test_stock_update_reads_a_stock_changed_envelope() -> None:
    envelope = {"type": "inventory.stock_changed.v1",
                "data": {"sku": "A", "sku_version": 9, "totals": {"available": 0}}}
    update = model.stock_update(envelope)
    assert update == stock("A", 9, 0)
    assert model.stock_update({"data": {"sku": "A"}}) is None


def test_staff_updates_key_reservations_by_id_and_ledger_changes_by_stock_level() -> None:
    held = {"type": "reservation.created.v1", "subject": "r-1", "data": {}}
    assert model.reservation_update(held) == Update("reservations", "r-1", None, held)
    moved = {"type": "inventory.stock_changed.v1",
             "data": {"sku": "A", "location": "wh", "version": 4}}
    assert model.ledger_update(moved) == Update("ledger", "A@wh", 4, moved)
