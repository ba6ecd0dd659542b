"""What the live context sends to its clients (over SSE and WebSocket)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Update:
    """One message for clients: `topic` is the stream, `key` what it coalesces on (a SKU)."""

    topic: str
    key: str
    version: int | None
    body: dict[str, Any]

    @cached_property
    def json(self) -> str:
        """The body as JSON, encoded once however many clients it goes to."""
        return json.dumps(self.body)
