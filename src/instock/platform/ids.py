"""Generated ids are UUIDv7: time-ordered, so they index well and sort by creation."""

from __future__ import annotations

import re
import secrets
import time

# Caller-chosen ids (SKUs, product and location ids): letters, digits and . _ - : /, 1-64 chars.
CALLER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
_caller_id = re.compile(CALLER_ID_PATTERN)


_last_stamp = 0  # milliseconds << 12 | counter, of the last id made here


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter (its method 1),
    then 62 random bits. The counter keeps ids made in the same millisecond in creation order.

    Written out here because a drop makes several ids per reservation: formatting the parts
    directly is several times quicker than building a UUID object.
    """
    global _last_stamp
    stamp = max((time.time_ns() // 1_000_000) << 12, _last_stamp + 1)
    _last_stamp = stamp
    # From the OS: every read is authorised, but an id seen must not tell the next one (a
    # seeded generator's output can be predicted from enough of it). Under a microsecond.
    ms, tail = stamp >> 12, secrets.randbits(62)
    return (f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | stamp & 0xFFF:04x}-"
            f"{0x8000 | tail >> 48:04x}-{tail & 0xFFFF_FFFF_FFFF:012x}")


def is_caller_id(value: str) -> bool:
    return bool(_caller_id.match(value))
