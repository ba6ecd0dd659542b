"""What a service answers when it takes an inbound webhook delivery. Pure: no I/O.

Payments and channels both take webhooks the same way (verify, read, record once through
`platform.inbound`); one answer type keeps their routes rendering the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Receipt:
    """One delivery taken: the sender gets a 2xx either way, so it stops resending."""

    duplicate: bool = False  # received before: nothing was done again
    ignored: bool = False  # an event instock does not act on: acknowledged, not recorded
