"""Outbound webhook rules, free of I/O: which subscription wants which event, whether a
subscription is well formed, and when a failed delivery is tried again or given up on."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

WILDCARD = ".*"
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH, MAX_SECRET_LENGTH = 16, 200
# Webhook events about a subscription (its own dead letters) are never sent to it.
OWN_CONTEXT = "webhook."


class WebhookError(Exception):
    """A subscription rule was broken; `field` names the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


class Status(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted, under a lease)
    DELIVERED = "delivered"  # a 2xx answer came back
    DEAD = "dead"  # every attempt failed; kept for the log and a redelivery


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    description: str
    active: bool
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str, subject: str) -> bool:
        """True if an event of this type and subject is to be delivered here."""
        if not self.active or not matches(self.event_types, event_type):
            return False
        # A dead letter of this very subscription would be queued to the receiver that just
        # failed: one more dead letter per dead letter, for ever.
        return not (event_type.startswith(OWN_CONTEXT) and subject == self.id)


@dataclass(frozen=True)
class Attempt:
    """One try at a delivery, as it was logged."""

    delivery_id: str
    number: int  # 1 for the first attempt (again 1 after a redelivery)
    at: datetime
    status_code: int | None  # None: no HTTP answer (refused, timed out, reset)
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Delivery:
    """One event queued for one subscription."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    envelope: dict[str, Any]
    status: Status
    attempts: int
    due_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    log: tuple[Attempt, ...] = field(default=())


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """An exact type (`inventory.stock_changed.v1`) or a prefix wildcard (`order.*`)."""
    for pattern in patterns:
        if pattern == event_type:
            return True
        if pattern.endswith(WILDCARD) and event_type.startswith(pattern[:-1]):
            return True
    return False


def event_types(patterns: Iterable[str], known: Collection[str]) -> tuple[str, ...]:
    """The patterns, de-duplicated and sorted; each must name a known type or be a wildcard
    matching at least one (a typo would otherwise subscribe to nothing, silently)."""
    chosen = list(patterns)
    if not chosen:
        raise WebhookError("event_types", "name at least one event type (or a wildcard "
                                          "such as `inventory.*`)")
    for i, pattern in enumerate(chosen):
        if pattern in known:
            continue
        where = f"event_types[{i}]"
        if pattern.endswith(WILDCARD) and len(pattern) > len(WILDCARD):
            if not any(matches([pattern], name) for name in known):
                raise WebhookError(where, f"{pattern!r} matches no event type")
            continue
        raise WebhookError(where, f"unknown event type {pattern!r}; see docs/events/")
    return tuple(sorted(set(chosen)))


def printable(field: str, value: str) -> str:
    """No control characters: they have no business in a URL, secret or description (and
    PostgreSQL text cannot hold NUL)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value if c not in "\t\n"):
        raise WebhookError(field, "must not contain control characters")
    return value


def url(value: str) -> str:
    """A receiver URL: absolute http(s) with a host."""
    if len(value) > MAX_URL_LENGTH:
        raise WebhookError("url", f"at most {MAX_URL_LENGTH} characters")
    printable("url", value)
    if any(c.isspace() for c in value):
        raise WebhookError("url", "must not contain whitespace")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError as exc:
        raise WebhookError("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError("url", "must be an http:// or https:// URL")
    if not parts.hostname:
        raise WebhookError("url", "must name a host")
    if parts.fragment:
        raise WebhookError("url", "must not have a #fragment (it is never sent)")
    return value


def secret(value: str) -> str:
    """A signing secret given by the subscriber: long enough not to be guessed."""
    if not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
        raise WebhookError("secret", f"{MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
    return printable("secret", value)


def patched(s: Subscription, changes: dict[str, Any], known: Collection[str],
            now: datetime) -> Subscription:
    """The subscription with `changes` (url, event_types, active, description) applied."""
    values = {name: getattr(s, name) for name in ("url", "event_types", "active",
                                                  "description")}
    unknown = set(changes) - set(values)
    if unknown:
        raise WebhookError(sorted(unknown)[0], "cannot be changed")
    values.update(changes)
    return Subscription(s.id, url(values["url"]), event_types(values["event_types"], known),
                        s.secret, printable("description", values["description"]),
                        bool(values["active"]),
                        s.created_at, now)


# ---------------------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True)
class Next:
    """What becomes of a delivery after an attempt."""

    status: Status
    due_at: datetime | None  # when to try again, for a pending one

    @property
    def dead(self) -> bool:
        return self.status is Status.DEAD


def after_attempt(attempt: int, ok: bool, *, max_attempts: int, now: datetime,
                  wait: timedelta) -> Next:
    """Delivered on a 2xx; else tried again after `wait` (the policy's backoff), until
    `max_attempts` are spent."""
    if ok:
        return Next(Status.DELIVERED, None)
    if attempt >= max_attempts:
        return Next(Status.DEAD, None)
    return Next(Status.PENDING, now + wait)
