"""Customer profiles, free of I/O: what a valid profile is, and how a change applies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from instock.customers.events import ProfileUpdated

PURPOSES = frozenset({"marketing_email", "sms", "back_in_stock_email", "back_in_stock_sms"})
# Sane, not RFC 5322: one @, no spaces, a dotted domain. Checked on the lower-cased value.
EMAIL = re.compile(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                   r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$")
PHONE = re.compile(r"^\+[1-9][0-9]{7,14}$")  # E.164: + and 8 to 15 digits
MAX_EMAIL, MAX_NAME, MAX_ENTRIES, MAX_TEXT = 254, 200, 50, 100

Preference = str | int | float | bool | list[str]


class InvalidProfile(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Consent:
    granted: bool
    at: datetime  # when it was last given or withdrawn
    source: str  # who said so: "customer:cus-1", "support:ann"


@dataclass(frozen=True)
class Profile:
    id: str
    email: str | None
    phone: str | None
    name: str | None
    sizes: dict[str, str]
    preferences: dict[str, Preference]
    consents: dict[str, Consent]
    version: int
    updated_at: datetime
    erased: bool = False  # the subject's key was shredded: contact fields can never be read
    time_zone: str | None = None  # IANA name: quiet hours are the customer's own


@dataclass(frozen=True)
class Changes:
    """A PUT: fields given replace; None leaves a field as it is. A consent is recorded (with
    its time and source) only when it changes."""

    email: str | None = None
    phone: str | None = None
    name: str | None = None
    sizes: dict[str, str] | None = None
    preferences: dict[str, Preference] | None = None
    consents: dict[str, bool] = field(default_factory=dict)
    time_zone: str | None = None


def normalise_email(email: str) -> str:
    return email.strip().lower()


def valid_email(email: str) -> str:
    value = normalise_email(email)
    if len(value) > MAX_EMAIL or not EMAIL.match(value):
        raise InvalidProfile("email", "not a valid email address")
    return value


def valid_phone(phone: str) -> str:
    value = re.sub(r"[ ()-]", "", phone.strip())  # "+33 6 12-34" is a way of writing digits
    if not PHONE.match(value):
        raise InvalidProfile("phone", "an E.164 number: + and 8 to 15 digits")
    return value


def _storable(field: str, value: str) -> None:
    # A lone surrogate cannot be sealed (UTF-8) nor stored; NUL is refused by PostgreSQL text.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidProfile(field, "not valid Unicode text") from None
    if "\x00" in value:
        raise InvalidProfile(field, "contains a NUL character")


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())  # reads the tz database's files: once


def valid_time_zone(name: str) -> str:
    value = name.strip()
    # ZoneInfo alone would also accept a path-like key found on disk; the IANA list is the rule.
    if value not in _zone_names():
        raise InvalidProfile("time_zone", "an IANA time zone name, e.g. Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidProfile("time_zone", "an IANA time zone name, e.g. Europe/Paris") from None
    return value


def valid_name(name: str) -> str:
    value = " ".join(name.split())
    _storable("name", value)
    if not 1 <= len(value) <= MAX_NAME:
        raise InvalidProfile("name", f"1 to {MAX_NAME} characters")
    return value


def _valid_map(name: str, values: dict[str, Preference] | dict[str, str]) -> None:
    if len(values) > MAX_ENTRIES:
        raise InvalidProfile(name, f"at most {MAX_ENTRIES} entries")
    for key, value in values.items():
        _storable(name, key)
        if not 1 <= len(key) <= MAX_TEXT:
            raise InvalidProfile(f"{name}.{key}", f"a key of 1 to {MAX_TEXT} characters")
        texts = value if isinstance(value, list) else [value] if isinstance(value, str) else []
        if len(texts) > MAX_ENTRIES:
            raise InvalidProfile(f"{name}.{key}", f"at most {MAX_ENTRIES} values")
        for text in texts:
            _storable(f"{name}.{key}", text)
            if len(text) > MAX_TEXT:
                raise InvalidProfile(f"{name}.{key}", f"at most {MAX_TEXT} characters")


def apply(current: Profile | None, customer_id: str, changes: Changes, by: str,
          now: datetime) -> Profile:
    """The profile after the change (a new one if there was none); InvalidProfile names the
    first bad field, and nothing changes."""
    unknown = sorted(set(changes.consents) - PURPOSES)
    if unknown:
        raise InvalidProfile(f"consents.{unknown[0]}",
                             f"unknown purpose; known: {', '.join(sorted(PURPOSES))}")
    if changes.sizes is not None:
        _valid_map("sizes", changes.sizes)
    if changes.preferences is not None:
        _valid_map("preferences", changes.preferences)
    base = current or Profile(customer_id, None, None, None, {}, {}, {}, 0, now)
    consents = dict(base.consents)
    for purpose, granted in changes.consents.items():
        known = consents.get(purpose)
        if known is None or known.granted != granted:
            consents[purpose] = Consent(granted, now, by)
    after = replace(
        base,
        email=valid_email(changes.email) if changes.email is not None else base.email,
        phone=valid_phone(changes.phone) if changes.phone is not None else base.phone,
        name=valid_name(changes.name) if changes.name is not None else base.name,
        sizes=dict(changes.sizes) if changes.sizes is not None else base.sizes,
        preferences=(dict(changes.preferences) if changes.preferences is not None
                     else base.preferences),
        time_zone=(valid_time_zone(changes.time_zone) if changes.time_zone is not None
                   else base.time_zone),
        consents=consents, version=base.version + 1, updated_at=now)
    if current is not None and replace(after, version=current.version,
                                       updated_at=current.updated_at) == current:
        return current  # nothing changed: a PUT sent twice is one change, one event
    return after


def updated(profile: Profile) -> ProfileUpdated:
    """The event of a change: sizes, preferences and consent flags, never contact data."""
    return ProfileUpdated(customer_id=profile.id, version=profile.version, sizes=profile.sizes,
                          preferences=profile.preferences,
                          consents={p: c.granted for p, c in profile.consents.items()})


# How many values of one attribute a profile keeps from poll answers (the latest).
STATED_PER_ATTRIBUTE = 10


def merge_stated(preferences: dict[str, Preference],
                 stated: list[tuple[str, str]]) -> dict[str, Preference]:
    """Preferences with answers (attribute, value) merged in: each attribute a list of values,
    the latest last, each once, at most STATED_PER_ATTRIBUTE; a scalar stated before becomes
    the list's first value (a number or flag the customer set is replaced)."""
    merged = dict(preferences)
    for attribute, value in stated:
        known = merged.get(attribute)
        values = (list(known) if isinstance(known, list)
                  else [known] if isinstance(known, str) else [])
        values = [v for v in values if v != value] + [value]
        merged[attribute] = values[-STATED_PER_ATTRIBUTE:]
    return merged


# -- the behaviour summary: what a customer looked at and bought, built from events ------------

RECENT = 20  # views and purchases kept, the latest first
FAVOURITE_KEYS = 50  # brands (categories) counted per customer; the least counted go first
PURCHASE_WEIGHT = 3  # a purchase says more about taste than a look


@dataclass(frozen=True)
class Item:
    """A product as the catalogue's events describe it (customers' own projection)."""

    product_id: str
    brand: str
    category: str


@dataclass(frozen=True)
class Behaviour:
    customer_id: str
    views: tuple[dict[str, str], ...]  # {"product_id", "at"}, the latest first
    purchases: tuple[dict[str, Any], ...]  # {"order_id", "sku", "product_id", "quantity", "at"}
    brands: dict[str, int]  # weighted counts of views and purchases
    categories: dict[str, int]
    updated_at: datetime

    def favourite_brands(self, n: int = 5) -> list[str]:
        return favourites(self.brands, n)

    def favourite_categories(self, n: int = 5) -> list[str]:
        return favourites(self.categories, n)


def no_behaviour(customer_id: str, now: datetime) -> Behaviour:
    return Behaviour(customer_id, (), (), {}, {}, now)


def favourites(counts: dict[str, int], n: int = 5) -> list[str]:
    """The most counted first; ties by name, so the answer is stable."""
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _count(counts: dict[str, int], key: str | None, weight: int) -> dict[str, int]:
    if not key:
        return counts
    counted = {**counts, key: counts.get(key, 0) + weight}
    if len(counted) > FAVOURITE_KEYS:  # bounded: the least counted (oldest on ties) leave
        del counted[min(counted, key=lambda k: counted[k])]
    return counted


def viewed(behaviour: Behaviour, product_id: str, item: Item | None,
           at: datetime) -> Behaviour:
    """A view: the latest first, a product once (seen again, it moves to the front)."""
    views = ({"product_id": product_id, "at": at.isoformat()},
             *(v for v in behaviour.views if v["product_id"] != product_id))
    return replace(behaviour, views=views[:RECENT],
                   brands=_count(behaviour.brands, item.brand if item else None, 1),
                   categories=_count(behaviour.categories, item.category if item else None, 1),
                   updated_at=max(behaviour.updated_at, at))


def bought(behaviour: Behaviour, order_id: str, lines: list[tuple[str, int, Item | None]],
           at: datetime) -> Behaviour:
    """A paid order's lines (sku, quantity, its product if known): the latest first."""
    purchases = tuple({"order_id": order_id, "sku": sku, "quantity": quantity,
                       "product_id": item.product_id if item else None, "at": at.isoformat()}
                      for sku, quantity, item in lines)
    brands, categories = behaviour.brands, behaviour.categories
    for _, _, item in lines:
        brands = _count(brands, item.brand if item else None, PURCHASE_WEIGHT)
        categories = _count(categories, item.category if item else None, PURCHASE_WEIGHT)
    return replace(behaviour, purchases=(*purchases, *behaviour.purchases)[:RECENT],
                   brands=brands, categories=categories,
                   updated_at=max(behaviour.updated_at, at))
