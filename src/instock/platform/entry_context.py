"""Who asked for a change and why: carried by every command that writes, into the ledger.

Pure (standard library only) so that services, sagas, the HTTP layer and tests can all build
one; the inventory model reads it through its `Provenance` protocol."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class EntryContext:
    """Who and why, shared by every entry of one command."""

    actor: str
    reason: str = ""
    correlation_id: str | None = None
    idempotency_key: str | None = None
    reference: str | None = None
    # The W3C traceparent of the request (None when tracing is off): the events the command
    # causes carry it, also when a group commit decides it on another request's behalf.
    traceparent: str | None = None

    def idempotency_scope(self) -> str | None:
        """The caller's key made unique across callers, or None without a key."""
        if self.idempotency_key is None:
            return None
        return hashlib.sha256(f"{self.actor}\0{self.idempotency_key}".encode()).hexdigest()
