"""ETags are versions: `ETag: "7"` on reads, `If-Match: "7"` for compare-and-swap writes."""

from __future__ import annotations

from instock.platform.errors import PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "7"` -> 7; absent or `*` -> no precondition. A value that cannot be a
    version can never match."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise PreconditionFailed(f"If-Match {value!r} is not a version this server issued")
    return int(tag)
