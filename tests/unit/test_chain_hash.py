"""The ledger's chain hash is SHA-256 of one canonical JSON form, whichever encoder writes it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from instock.inventory.model import Buckets, chain_hash

text = st.text(max_size=30)


def reference(body: dict[str, Any]) -> str:
    """The definition: `json.dumps` with sorted keys, no spaces, non-ASCII escaped."""
    def plain(value: Any) -> Any:
        if isinstance(value, Buckets):
            return value.as_dict()
        return value.isoformat() if isinstance(value, datetime | date) else value

    canonical = json.dumps({k: plain(v) for k, v in body.items()}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@settings(max_examples=500)
@given(actor=text, reason=text, reference_id=st.none() | text, lot=st.none() | text,
       version=st.integers(0, 2**62), change=st.integers(-10**9, 10**9),
       expires=st.none() | st.dates(), at=st.datetimes(timezones=st.just(UTC)))
def test_the_fast_encoder_writes_the_canonical_form(actor: str, reason: str,
                                                    reference_id: str | None, lot: str | None,
                                                    version: int, change: int,
                                                    expires: date | None,
                                                    at: datetime) -> None:
    body = dict(sku="SKU-1", location="wh", version=version, kind="reserve",
                delta=Buckets(reserved=change, on_hand=-change), lot=lot,
                lot_expires_on=expires, actor=actor, reason=reason, correlation_id=None,
                idempotency_key=None, reference=reference_id, at=at, prev_hash="0" * 64)
    assert chain_hash(body) == reference(body)
