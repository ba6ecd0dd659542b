"""What the live context sends to its clients (over SSE and WebSocket)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Update:
    """One message for clients: `topic` is the stream, `key` what it coalesces on (a SKU)."""

    topic: str
    key: str
    version: int | None
    body: dict[str, Any]
