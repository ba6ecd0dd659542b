"""HMAC-SHA256 webhook signatures in the `t=<unix time>,v1=<hex>` form (Stripe's scheme).

The signed text is `<t>.<body>`: binding the time into the MAC lets the receiver refuse a
replayed delivery by its age, and the body cannot be moved to another timestamp. Used by every
webhook instock sends and receives, and by the local simulators that play the other side.
"""

from __future__ import annotations

import hashlib
import hmac
import time


class SignatureError(ValueError):
    """The signature header is missing, malformed, does not match, or is too old."""


def compute(body: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value for `body`: `t=…,v1=…`."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={compute(body, secret, moment)}"


def verify(body: bytes, header: str | None, secrets: str | list[str], *,
           tolerance_seconds: float = 300, now: float | None = None) -> int:
    """Check `header` against `body`; return its timestamp or raise SignatureError.

    Several `v1` values are accepted (a sender rotating its secret signs with both), and so are
    several secrets on our side. A timestamp further than the tolerance from now, in either
    direction, is a replay (or a badly wrong clock) and refused.
    """
    if not header:
        raise SignatureError("the signature header is missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("the signature timestamp is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t=… and v1=…")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_seconds:
        raise SignatureError(f"the signature is {age:.0f} s old; at most "
                             f"{tolerance_seconds:.0f} s is accepted (a replay?)")
    for secret in [secrets] if isinstance(secrets, str) else secrets:
        expected = compute(body, secret, timestamp)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise SignatureError("the signature does not match the body")
