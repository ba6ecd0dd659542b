"""Notification rules, free of I/O: which events make which notifications, what is decided at
send time (consent, address, quiet hours, rate limits), retries, message ids, unsubscribe tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Status(StrEnum):
    QUEUED = "queued"  # to be sent (again, after a failure) at due_at
    SENT = "sent"
    FAILED = "failed"  # dead-lettered: attempts used up or a permanent failure; error says why
    SUPPRESSED = "suppressed"  # decided not to send; suppression says why


class Suppression(StrEnum):
    NO_CONSENT = "no_consent"
    UNSUBSCRIBED = "unsubscribed"
    NO_ADDRESS = "no_address"
    RATE_LIMITED = "rate_limited"
    ERASED = "erased"


STAFF = "staff"  # the recipient of staff alerts (addresses from settings, none stored)
UNSUBSCRIBE_SOURCE = "unsubscribe:one-click"

# reason -> the consent purpose it needs per channel (None: transactional, no consent asked).
PURPOSES: dict[str, dict[str, str]] = {
    "back_in_stock": {"email": "back_in_stock_email", "sms": "back_in_stock_sms"},
}
# A drop win answers the customer's own entry: a service message, like an order's.
TRANSACTIONAL = frozenset({"order_confirmation", "order_shipped", "order_refunded", "drop_won"})
STAFF_REASONS = frozenset({"low_stock", "sold_out"})
ORDER_REASONS = {"order.paid.v1": "order_confirmation", "order.shipped.v1": "order_shipped",
                 "order.refunded.v1": "order_refunded"}
STOCK_REASONS = {"inventory.low_stock.v1": "low_stock", "inventory.sold_out.v1": "sold_out"}
BACK_IN_STOCK = "waitlist.notified.v1"
DROP_WON = "drop.won.v1"
EVENT_TYPES = frozenset({BACK_IN_STOCK, DROP_WON, *ORDER_REASONS, *STOCK_REASONS})


@dataclass(frozen=True)
class Notification:
    """One message to one recipient on one channel. (recipient, reason, subject, cause,
    channel) is unique: an event delivered twice makes one notification."""

    id: str
    recipient: str  # a customer id, or STAFF
    customer_id: str | None
    reason: str  # back_in_stock, order_confirmation, order_shipped, order_refunded, low_stock...
    subject: str  # what it is about: a SKU, an order id
    cause: str  # what made it (the restock event, the stock version); "" when once per subject
    channel: str  # email, sms, slack
    data: dict[str, Any]  # what the templates show (no contact data)
    created_at: datetime
    status: Status = Status.QUEUED
    due_at: datetime | None = None
    attempts: int = 0
    suppression: str | None = None
    error: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return dedupe_key(self.recipient, self.reason, self.subject, self.cause, self.channel)

    @property
    def purpose(self) -> str | None:
        return PURPOSES.get(self.reason, {}).get(self.channel)

    @property
    def transactional(self) -> bool:
        return self.reason in TRANSACTIONAL


def dedupe_key(recipient: str, reason: str, subject: str, cause: str,
               channel: str) -> tuple[str, str, str, str, str]:
    return recipient, reason, subject, cause, channel


def from_event(event_type: str, data: dict[str, Any], new_id: Any, now: datetime, *,
               customer_channels: frozenset[str], staff_channels: frozenset[str]
               ) -> list[Notification]:
    """The notifications one event makes (none for events that concern no one here).
    `new_id()` gives ids; channels are those configured."""
    def one(recipient: str, customer: str | None, reason: str, subject: str, cause: str,
            channel: str, payload: dict[str, Any]) -> Notification:
        return Notification(new_id(), recipient, customer, reason, subject, cause, channel,
                            payload, now, due_at=now)

    if event_type == BACK_IN_STOCK:
        customer = str(data["customer_id"])
        return [one(customer, customer, "back_in_stock", str(data["sku"]), str(data["cause"]),
                    channel, {"sku": data["sku"], "available": data["available"]})
                for channel in sorted(customer_channels & {"email", "sms"})]
    if event_type == DROP_WON:
        customer = str(data["customer_id"])
        return [one(customer, customer, "drop_won", str(data["drop_id"]), str(data["entry_id"]),
                    "email", {"drop_id": data["drop_id"], "skus": list(data["skus"]),
                              "claim_until": str(data["claim_until"]),
                              "rolled_over": bool(data["rolled_over"])})]
    if event_type in STOCK_REASONS:
        payload = {"sku": data["sku"], "available": data["available"],
                   "threshold": data.get("threshold")}
        return [one(STAFF, None, STOCK_REASONS[event_type], str(data["sku"]),
                    str(data["sku_version"]), channel, payload)
                for channel in sorted(staff_channels)]
    if event_type in ORDER_REASONS and data.get("customer_id"):
        customer = str(data["customer_id"])
        payload = {"order_id": data["order_id"], "total": str(data["total"]),
                   "currency": data["currency"],
                   "lines": [{"sku": line["sku"], "quantity": line["quantity"]}
                             for line in data["lines"]]}
        return [one(customer, customer, ORDER_REASONS[event_type], str(data["order_id"]), "",
                    "email", payload)]
    return []


# -- send-time decisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """What the customers context says about the recipient at send time, for one channel."""

    address: str | None  # the email address or phone number; None: none known
    consent: bool | None = None  # the channel purpose's consent (None: never given)
    consent_source: str | None = None  # who gave or withdrew it last
    time_zone: str | None = None
    erased: bool = False
    name: str | None = None


@dataclass(frozen=True)
class Rules:
    quiet_start: time = time(22, 0)
    quiet_end: time = time(8, 0)
    default_time_zone: str = "UTC"
    rate_per_hour: int = 10


@dataclass(frozen=True)
class Decision:
    send: bool
    suppression: Suppression | None = None
    defer_until: datetime | None = None


SEND = Decision(True)


def suppress(reason: Suppression) -> Decision:
    return Decision(False, suppression=reason)


def zone(name: str | None, default: str) -> ZoneInfo:
    """The recipient's zone; an unknown or missing name falls back to the default."""
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(now: datetime, time_zone: ZoneInfo, start: time, end: time) -> datetime | None:
    """When the quiet hours around `now` (in the recipient's zone) end, or None outside them.
    The window may cross midnight (22:00-08:00) or not (13:00-14:00); start == end: none."""
    local = now.astimezone(time_zone)
    clock = local.time().replace(tzinfo=None)
    if start == end:
        return None
    crosses = start > end
    inside = (clock >= start or clock < end) if crosses else (start <= clock < end)
    if not inside:
        return None
    day = local.date() + timedelta(days=1) if crosses and clock >= start else local.date()
    return datetime.combine(day, end, tzinfo=time_zone).astimezone(now.tzinfo)


def over_rate(sent_in_last_hour: int, per_hour: int) -> bool:
    return sent_in_last_hour >= per_hour


def decide(notification: Notification, contact: Contact | None, now: datetime, rules: Rules,
           sent_in_last_hour: int) -> Decision:
    """Send, defer (quiet hours) or suppress (with the reason), in that order of checks:
    a recipient gone or unreachable first, then consent, then time, then volume."""
    if notification.recipient == STAFF:
        return SEND  # staff alerts: addresses from settings, no consent, no quiet hours
    if contact is None:
        return suppress(Suppression.NO_ADDRESS)
    if contact.erased:
        return suppress(Suppression.ERASED)
    purpose = notification.purpose
    if purpose is not None and contact.consent is not True:
        unsubscribed = contact.consent is False and contact.consent_source == UNSUBSCRIBE_SOURCE
        return suppress(Suppression.UNSUBSCRIBED if unsubscribed else Suppression.NO_CONSENT)
    if not contact.address:
        return suppress(Suppression.NO_ADDRESS)
    if notification.transactional:
        # An order confirmation at 3 a.m. answers what the customer just did: it goes out,
        # and it does not count against (nor is held back by) the rate limit.
        return SEND
    until = quiet_until(now, zone(contact.time_zone, rules.default_time_zone),
                        rules.quiet_start, rules.quiet_end)
    if until is not None:
        return Decision(False, defer_until=until)
    if over_rate(sent_in_last_hour, rules.rate_per_hour):
        return suppress(Suppression.RATE_LIMITED)
    return SEND


@dataclass(frozen=True)
class Retry:
    attempts: int
    base: float
    cap: float


def dead(attempts_made: int, retry: Retry, permanent: bool) -> bool:
    """A failed send is dead-lettered when it can never work or its attempts are used up."""
    return permanent or attempts_made >= retry.attempts


def message_id(notification_id: str, mail_from: str) -> str:
    """The SMTP Message-ID, derived from the notification alone: a send repeated after a crash
    (the relay's or the sender's) carries the same id, so no two different messages exist for
    one notification and receivers (and the tests, at the sink) see it as one."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "instock.localhost"
    return f"<{notification_id}@{domain}>"


# -- unsubscribe tokens -------------------------------------------------------------------------


class InvalidToken(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsubscribe_token(key: bytes, customer_id: str, purpose: str) -> str:
    """A token naming the customer and purpose, signed (HMAC-SHA256): whoever holds the mail
    can withdraw that one consent and nothing else. It does not expire (RFC 8058 links must
    work for as long as the mail is kept)."""
    body = _b64(f"{customer_id}\n{purpose}".encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{mac}"


def read_unsubscribe_token(key: bytes, token: str) -> tuple[str, str]:
    """(customer id, purpose) of a genuine token; InvalidToken otherwise."""
    body, _, mac = token.partition(".")
    try:
        expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
        # As bytes: compare_digest refuses str with non-ASCII characters (TypeError).
        if not mac or not hmac.compare_digest(mac.encode(), expected.encode()):
            raise InvalidToken("the token's signature does not match")
        customer_id, _, purpose = _unb64(body).decode().partition("\n")
    except (ValueError, UnicodeError) as exc:
        raise InvalidToken(str(exc)) from None
    if not customer_id or not purpose:
        raise InvalidToken("the token names no customer or purpose")
    return customer_id, purpose


@dataclass
class Pace:
    """Spacing of sends on one channel (Slack takes about one message a second per webhook):
    the earliest moment the next send may start, from a monotonic clock."""

    per_second: float
    next_at: float = field(default=0.0)

    def wait(self, now: float) -> float:
        """Seconds to wait before the next send, booking its slot."""
        if self.per_second <= 0:
            return 0.0
        start = max(now, self.next_at)
        self.next_at = start + 1.0 / self.per_second
        return start - now
