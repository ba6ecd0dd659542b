"""Payments, pure: a payment's state, money in minor units, and the rule that a payment's status
only moves forward whatever order the provider's news arrives in.

A payment is created `pending` (recorded before the provider is asked, so a retry after a crash
asks again under the same id and key), then the provider decides: `authorised` (money held),
`declined`, or `failed` (an outcome we cannot act on, e.g. a card that needs 3-D Secure). An
authorisation is `captured` or `voided`; captured money may be refunded in parts
(`partially_refunded`) or whole (`refunded`).

News of a payment comes from the provider's answers and from its webhooks, which arrive late,
twice, or out of order. Each piece is an `Observation`; `observe` merges it into the payment
so that the result does not depend on the order: the status with the higher `RANK` wins and
the amounts only grow. Among captured payments (captured, partially or wholly refunded) the
amounts decide the status.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    FAILED = "failed"
    DECLINED = "declined"
    AUTHORISED = "authorised"
    VOIDED = "voided"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


S = PaymentStatus
# A total order, so any two observations merge the same way in either order. It follows the
# life of a payment; where two outcomes exclude each other the one that says more money moved
# ranks higher (a capture heard after a void means money was taken: that is what to act on).
RANK: dict[PaymentStatus, int] = {status: rank for rank, status in enumerate(S)}
# Captured money: which of these applies is decided by the amounts, not by the news' order.
CAPTURED_FAMILY = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED})
# From which statuses each command may be sent to the provider.
CAPTURABLE = frozenset({S.AUTHORISED})
VOIDABLE = frozenset({S.AUTHORISED, S.PENDING})
REFUNDABLE = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED})


@dataclass(frozen=True)
class Payment:
    id: str
    order_id: str
    provider: str
    provider_ref: str | None
    amount: Decimal
    currency: str
    status: PaymentStatus
    amount_captured: Decimal
    amount_refunded: Decimal
    decline_reason: str | None
    updated_at: datetime
    idempotency_key: str = ""  # the key of the authorisation that created it

    @property
    def refundable(self) -> Decimal:
        return max(Decimal(0), self.amount_captured - self.amount_refunded)


@dataclass(frozen=True)
class Observation:
    """What the provider said about a payment at one moment (an answer or a webhook)."""

    status: PaymentStatus
    provider_ref: str | None = None
    amount_captured: Decimal | None = None  # None: this news says nothing about it
    amount_refunded: Decimal | None = None
    decline_reason: str | None = None


def pending(payment_id: str, order_id: str, provider: str, amount: Decimal, currency: str,
            idempotency_key: str, at: datetime) -> Payment:
    return Payment(payment_id, order_id, provider, None, amount, currency, S.PENDING,
                   Decimal(0), Decimal(0), None, at, idempotency_key)


def observe(payment: Payment, news: Observation, at: datetime) -> Payment:
    """The payment after `news`: unchanged (the same object) when it adds nothing.

    Commutative, associative and idempotent in everything but `updated_at`: the status is the
    higher-ranked one (captured ones settled by the amounts), amounts take the maximum, the
    provider's id is kept once known, a decline reason while declined.
    """
    captured = max(payment.amount_captured, news.amount_captured or Decimal(0))
    refunded = max(payment.amount_refunded, news.amount_refunded or Decimal(0))
    status = max(payment.status, news.status, key=RANK.__getitem__)
    if status in CAPTURED_FAMILY:
        status = captured_status(captured, refunded)
    reason = None
    if status is S.DECLINED:  # a payment declined twice (never seen) keeps one reason either way
        # Only news of the decline itself carries its reason: a reason on other news would be
        # dropped or kept depending on whether the decline came first.
        said = news.decline_reason if news.status is S.DECLINED else None
        reason = min((r for r in (payment.decline_reason, said) if r), default=None)
    after = replace(payment, status=status, amount_captured=captured, amount_refunded=refunded,
                    provider_ref=payment.provider_ref or news.provider_ref,
                    decline_reason=reason)
    if replace(after, updated_at=payment.updated_at) == payment:
        return payment
    return replace(after, updated_at=at)


def captured_status(captured: Decimal, refunded: Decimal) -> PaymentStatus:
    if refunded <= 0:
        return S.CAPTURED
    return S.REFUNDED if refunded >= captured else S.PARTIALLY_REFUNDED


# -- money on the wire ------------------------------------------------------------------------

# ISO 4217 minor units where they are not 2 (the currencies card providers settle in).
MINOR_UNITS = {"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "JPY": 0, "KMF": 0, "KRW": 0, "MGA": 0,
               "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
               "BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3}


class AmountError(ValueError):
    """An amount that cannot be charged in its currency (negative, or finer than a cent)."""


def to_minor(amount: Decimal, currency: str) -> int:
    """Providers take integers in the currency's smallest unit: EUR 12.34 -> 1234."""
    exponent = MINOR_UNITS.get(currency.upper(), 2)
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise AmountError(f"{amount} {currency} has more than {exponent} decimals")
    if minor <= 0:
        raise AmountError(f"{amount} {currency} is not a positive amount")
    return int(minor)


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-MINOR_UNITS.get(currency.upper(), 2)).normalize()
