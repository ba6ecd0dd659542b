"""Generated ids are UUIDv7: time-ordered, so they index well and sort by creation."""

from __future__ import annotations

import re

import uuid6

# Caller-chosen ids (SKUs, product and location ids): letters, digits and . _ - : /, 1-64 chars.
CALLER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
_caller_id = re.compile(CALLER_ID_PATTERN)


def new_id() -> str:
    return str(uuid6.uuid7())


def is_caller_id(value: str) -> bool:
    return bool(_caller_id.match(value))
