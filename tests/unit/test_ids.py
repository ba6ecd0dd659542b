"""Generated ids are RFC 9562 UUIDv7 strings that sort in creation order."""

from __future__ import annotations

import time
import uuid

from instock.platform.ids import new_id


def test_ids_are_uuid7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(new_id())
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after + 1  # + the counter's carry, at most
    assert str(made) == str(made).lower()


def test_ids_made_in_a_burst_are_unique_and_in_creation_order() -> None:
    ids = [new_id() for _ in range(50_000)]  # thousands per millisecond: the counter orders
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[::997])
