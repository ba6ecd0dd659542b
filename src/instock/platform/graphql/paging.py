"""Relay-style pages: opaque cursors and `PageInfo`, one way for every connection."""

from __future__ import annotations

import base64
import binascii

import strawberry

from instock.platform.errors import ValidationFailed


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


def encode_cursor(kind: str, value: str | int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    """The value inside a cursor of `kind`; a cursor this server did not issue is a 422 on
    `after`."""
    if cursor is None:
        return None
    try:
        found, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        found, value = "", ""
    if found != kind or not value:
        raise ValidationFailed("after", "not a cursor this server issued")
    return value
