"""Telling people from bots in a drop (pure): a proof-of-work challenge, and the rules that
score a ticket or draw entry from what the server saw, each decision explained.

Proof of work (hashcash): the server hands out a signed challenge naming the shopper, the drop
and an expiry (a JWT: drops/tokens.py); the client finds a `solution` such that
SHA-256(challenge ":" solution) starts with `difficulty` zero bits. A person's browser pays
that once per drop (2**difficulty hashes on average: 65,536 at 16 bits, about 0.1 s in
CPython here); a farm entering with thousands of identities pays it thousands of times. The
challenge is signed, so the server stores nothing to check it, and it cannot be moved to
another shopper or drop, or used after it expires.

Scoring: every rule is declared once in `RULES` with its weight and the reason shown to staff;
`score` adds the weights of the rules a request's `Signals` trip and decides by two thresholds
(held for review, refused). Nothing is hidden in code elsewhere: changing a weight is changing
this table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

DEFAULT_DIFFICULTY = 16  # leading zero bits: 65,536 hashes on average
MAX_DIFFICULTY = 32
# How far back a shopper's failed payment attempts count (heard from checkout's
# `order.payment_failed.v1`; drops/declines.py keeps them). A day: a farm testing stolen cards,
# or cycling them before a drop, fails many times within hours, while a person whose card was
# refused last week should not carry that into this week's drop.
FAILED_PAYMENTS_WINDOW = timedelta(days=1)
# How far back the shoppers on a payment method or address fingerprint count, across every
# drop's tickets and entries. A month: a farm's cards and drop addresses are reused drop after
# drop (drops come weekly or so), so a shorter window would see each drop's few alone; a longer
# one would pin on a flat's new tenants, or a card passed on, the shoppers of years ago.
FINGERPRINT_WINDOW = timedelta(days=30)
# The count stops here: past the last rule's threshold more changes nothing, and a farm's
# fingerprint shared by thousands of identities costs one bounded read.
FINGERPRINT_COUNT_CAP = 20


class Proof(StrEnum):
    SOLVED = "solved"
    MISSING = "missing"
    INVALID = "invalid"  # forged, expired, another's, or not solved


@dataclass(frozen=True)
class Challenge:
    """What a proof-of-work challenge says (drops/tokens.py signs and reads it)."""

    drop_id: str
    customer_id: str
    difficulty: int
    expires_at: datetime


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def work(token: str, solution: str) -> int:
    """How many leading zero bits this solution earns on this challenge."""
    return leading_zero_bits(hashlib.sha256(f"{token}:{solution}".encode()).digest())


def judge(claims: Challenge, token: str, solution: str | None, *, drop_id: str,
          customer_id: str, now: datetime) -> Proof:
    """SOLVED when this genuine challenge is this shopper's, for this drop, unexpired, and the
    solution earns its difficulty; INVALID otherwise (the caller maps an unreadable token to
    INVALID and no token to MISSING)."""
    if (claims.drop_id != drop_id or claims.customer_id != customer_id or now >= claims.expires_at
            or solution is None or len(solution) > 64
            or work(token, solution) < claims.difficulty):
        return Proof.INVALID
    return Proof.SOLVED


def solve(token: str, difficulty: int) -> str:
    """A solution, found the way a client would: counting up (what the storefront's script
    does, and what the tests and the bench use as a person's browser)."""
    n = 0
    while work(token, str(n)) < difficulty:
        n += 1
    return str(n)


# -- scoring ---------------------------------------------------------------------------------


class Decision(StrEnum):
    ADMIT = "admit"
    REVIEW = "review"  # held: staff decide (the ops console lists them with their reasons)
    REFUSE = "refuse"


@dataclass(frozen=True)
class Signals:
    """What the server saw of one ticket or entry request, and around it."""

    proof: Proof
    client_requests_per_minute: int = 0  # from this client address, any shopper
    shopper_requests_per_minute: int = 0  # with this shopper's token
    shoppers_on_client: int = 1  # distinct shoppers seen from this client address in the drop
    # Distinct shoppers (this one included) whose tickets or entries gave this payment method
    # or address fingerprint within FINGERPRINT_WINDOW, any drop; counted up to the cap.
    shoppers_on_fingerprint: int = 1
    failed_payments: int = 0  # this shopper's failed payment attempts in the last day
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names


def _headless(headers: Mapping[str, str]) -> bool:
    agent = headers.get("user-agent", "")
    brands = headers.get("sec-ch-ua", "")
    return ("headless" in agent.lower() or "headless" in brands.lower()
            or any(tool in agent for tool in ("python-requests", "curl/", "Go-http-client",
                                              "python-httpx", "aiohttp", "Scrapy")))


def _browserless(headers: Mapping[str, str]) -> bool:
    """No Accept-Language and no user agent: every browser sends both."""
    return not headers.get("accept-language") or not headers.get("user-agent")


@dataclass(frozen=True)
class Rule:
    name: str
    weight: int
    why: str
    trips: Callable[[Signals], bool]


# The one place the rules live. Weights add up; REVIEW_AT and REFUSE_AT decide. A missing proof
# alone reviews (an old client), a missing proof with any other sign refuses.
RULES: tuple[Rule, ...] = (
    Rule("no-proof-of-work", 40, "no proof of work with the request",
         lambda s: s.proof is Proof.MISSING),
    Rule("bad-proof-of-work", 60, "a proof of work that does not hold (forged, expired, "
         "another shopper's or unsolved)", lambda s: s.proof is Proof.INVALID),
    Rule("fast-client", 30, "more than 30 requests a minute from this address",
         lambda s: s.client_requests_per_minute > 30),
    Rule("fast-shopper", 30, "more than 10 requests a minute with this shopper's token",
         lambda s: s.shopper_requests_per_minute > 10),
    Rule("crowded-client", 25, "more than 5 shoppers from this address in this drop",
         lambda s: s.shoppers_on_client > 5),
    # A household shares a card or an address: two people trip nothing, three or four score
    # (never held on that alone); a farm runs many identities on a few cards and addresses:
    # five or more are held for review on that alone (the two add up to 50), and refused beside
    # any other sign that scores 20 or more. Within one draw, a second customer's entry with
    # the fingerprint is refused outright besides (409 `drop-entry-duplicate`, drops/draws.py).
    Rule("shared-identity", 20, "a payment method or address 3 or more shoppers gave in the "
         "last 30 days", lambda s: s.shoppers_on_fingerprint >= 3),
    Rule("repeated-identity", 30, "a payment method or address 5 or more shoppers gave in the "
         "last 30 days", lambda s: s.shoppers_on_fingerprint >= 5),
    Rule("headless-browser", 35, "the request names a headless browser or an HTTP library",
         lambda s: _headless(s.headers)),
    Rule("browserless-headers", 15, "no Accept-Language or User-Agent header",
         lambda s: _browserless(s.headers)),
    # A few declines are a person's expired card (alone they score, never hold); many are a
    # card tester, held for review on their own (the two add up: 45).
    Rule("failed-payments", 20, "3 or more failed payment attempts in the last day",
         lambda s: s.failed_payments >= 3),
    Rule("many-failed-payments", 25, "10 or more failed payment attempts in the last day",
         lambda s: s.failed_payments >= 10),
)
REVIEW_AT = 40
REFUSE_AT = 70


@dataclass(frozen=True)
class Verdict:
    score: int
    decision: Decision
    reasons: tuple[tuple[str, int, str], ...]  # (rule, weight, why) of each rule tripped

    def as_json(self) -> dict[str, Any]:
        return {"score": self.score, "decision": self.decision.value,
                "reasons": [{"rule": name, "weight": weight, "why": why}
                            for name, weight, why in self.reasons]}


class NotHeld(ValueError):
    """Staff can decide only an ask the scoring held for review (once)."""


def review(current: Decision, decision: Decision) -> Decision:
    """Staff's decision on a held ask: admit (it goes on as any other) or refuse (it is never
    admitted nor drawn, and says why). Its place does not change either way: nobody behind it
    moves up or back."""
    if current is not Decision.REVIEW:
        raise NotHeld(f"the ask is decided ({current.value}), not held for review")
    if decision is Decision.REVIEW:
        raise NotHeld("a review decides: admit or refuse")
    return decision


def reviewed(verdict: Mapping[str, Any] | None, decision: Decision, by: str,
             at: datetime) -> dict[str, Any]:
    """The stored verdict with staff's decision added: the scoring's reasons stay beside it."""
    return {**(verdict or {}), "review": {"decision": decision.value, "by": by,
                                          "at": at.isoformat()}}


def score(signals: Signals, rules: tuple[Rule, ...] = RULES, *, review_at: int = REVIEW_AT,
          refuse_at: int = REFUSE_AT) -> Verdict:
    tripped = tuple((r.name, r.weight, r.why) for r in rules if r.trips(signals))
    total = sum(weight for _, weight, _ in tripped)
    decision = (Decision.REFUSE if total >= refuse_at else
                Decision.REVIEW if total >= review_at else Decision.ADMIT)
    return Verdict(total, decision, tripped)
