"""Experiment rules, free of I/O: what a well-formed experiment is, which variant a subject
gets, how an experiment moves through its life, and the statistics of its results."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from statistics import NormalDist
from typing import Any

MIN_VARIANTS, MAX_VARIANTS = 2, 10
SHARE_TOLERANCE = 1e-9
MAX_NAME = 200
MAX_VARIANT_NAME = 64
MAX_SUBJECT = 128  # the exposures table's subject column
CONTROL = "control"
ALPHA = 0.05
CONFIG_KEYS = frozenset({"model", "weights"})


class ExperimentError(Exception):
    """An experiment rule was broken; `field` names the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


class TransitionError(Exception):
    """The experiment cannot move to the asked status from the one it is in."""


class Status(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Unit(StrEnum):
    """What the caller hashes: informational, the subject given to `assign` is what counts."""

    CUSTOMER = "customer"
    SESSION = "session"


class Kind(StrEnum):
    """What counts as a conversion (a view of a recommended item does not)."""

    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    status: Status
    unit: Unit
    variants: tuple[Variant, ...]
    created_at: datetime
    started_at: datetime | None = None
    stopped_at: datetime | None = None

    @property
    def control(self) -> Variant:
        return control_of(self.variants)

    def start(self, now: datetime) -> Experiment:
        if self.status is not Status.DRAFT:
            raise TransitionError(f"experiment {self.id} is {self.status.value}: only a draft "
                                  "can be started")
        return replace(self, status=Status.RUNNING, started_at=now)

    def stop(self, now: datetime) -> Experiment:
        if self.status is not Status.RUNNING:
            raise TransitionError(f"experiment {self.id} is {self.status.value}: only a running "
                                  "experiment can be stopped")
        return replace(self, status=Status.STOPPED, stopped_at=now)

    def counts(self, at: datetime) -> bool:
        """True if a conversion at `at` falls in the experiment's run (events reach us late,
        so the event's own time decides, not when it is handled)."""
        started = self.started_at is not None and at >= self.started_at
        return started and (self.stopped_at is None or at <= self.stopped_at)


# ---------------------------------------------------------------------------------------------
# Validation


def control_of(variants: Sequence[Variant]) -> Variant:
    """The variant named "control", else the first one."""
    return next((v for v in variants if v.name == CONTROL), variants[0])


def name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ExperimentError("name", "must not be empty")
    if len(value) > MAX_NAME:
        raise ExperimentError("name", f"at most {MAX_NAME} characters")
    return _printable("name", value)


def _printable(where: str, value: str) -> str:
    # PostgreSQL text cannot hold NUL, and control characters have no place in a name.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ExperimentError(where, "must not contain control characters")
    return value


def variants(given: Sequence[Variant], models: Collection[str]) -> tuple[Variant, ...]:
    """The variants, checked: 2..10, unique names, positive shares summing to 1, and configs
    naming only models the recommendation engine knows."""
    if not MIN_VARIANTS <= len(given) <= MAX_VARIANTS:
        raise ExperimentError("variants", f"{MIN_VARIANTS} to {MAX_VARIANTS} variants")
    seen: set[str] = set()
    for i, v in enumerate(given):
        where = f"variants[{i}]"
        if not v.name or len(v.name) > MAX_VARIANT_NAME:
            raise ExperimentError(f"{where}.name", f"1 to {MAX_VARIANT_NAME} characters")
        _printable(f"{where}.name", v.name)
        if v.name in seen:
            raise ExperimentError(f"{where}.name", f"{v.name!r} is used twice")
        seen.add(v.name)
        if not (math.isfinite(v.share) and 0 < v.share <= 1):
            raise ExperimentError(f"{where}.share", "must be more than 0 and at most 1")
        config(f"{where}.config", v.config, models)
    total = math.fsum(v.share for v in given)
    if abs(total - 1) > SHARE_TOLERANCE:
        raise ExperimentError("variants", f"shares must sum to 1 (they sum to {total:g})")
    return tuple(given)


def config(where: str, value: Mapping[str, Any], models: Collection[str]) -> dict[str, Any]:
    """A variant's configuration: an optional `model` and optional `weights` (model name ->
    non-negative number). Anything else is refused: a misspelt key would silently run the
    default model and spoil the experiment."""
    if not isinstance(value, Mapping):
        raise ExperimentError(where, "must be an object")
    for key in value:
        if key not in CONFIG_KEYS:
            raise ExperimentError(f"{where}.{key}", "unknown key (expected model, weights)")
    if "model" in value:
        _model_name(f"{where}.model", value["model"], models)
    if "weights" in value:
        _weights(f"{where}.weights", value["weights"], models)
    return dict(value)


def _model_name(where: str, value: Any, models: Collection[str]) -> None:
    if not isinstance(value, str):
        raise ExperimentError(where, "must be a string")
    if value not in models:
        raise ExperimentError(where, f"unknown model {value!r} (known: "
                                     f"{', '.join(sorted(models))})")


def _weights(where: str, value: Any, models: Collection[str]) -> None:
    if not isinstance(value, Mapping):
        raise ExperimentError(where, "must be an object of model name -> weight")
    for key, weight in value.items():
        _model_name(f"{where}.{key}", key, models)
        # bool is an int to Python, not a weight to anyone.
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight < 0:
            raise ExperimentError(f"{where}.{key}", "must be a non-negative number")


# ---------------------------------------------------------------------------------------------
# Assignment


def bucket(experiment_id: str, subject: str) -> float:
    """A point in [0, 1) fixed by the experiment and subject: the first 8 bytes of a sha256.
    Not Python's hash(), which is salted per process: a shopper must keep their variant
    across processes and restarts."""
    digest = hashlib.sha256(f"{experiment_id}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment_id: str, subject: str, variants: Sequence[Variant]) -> Variant:
    """The subject's variant: its bucket walked through the cumulative shares. Each
    experiment hashes independently, so one experiment's control group is not the next's."""
    point = bucket(experiment_id, subject)
    edge = 0.0
    for v in variants:
        edge += v.share
        if point < edge:
            return v
    return variants[-1]  # shares summing to 1 - 1e-10 leave a sliver: it goes to the last


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Comparison:
    """A variant's conversion rate against the control's, by a pooled two-proportion z-test.

    `difference` is rate_variant - rate_control with its (unpooled, Wald) confidence interval;
    `uplift` is that difference relative to the control rate (None when the control rate is
    0). None throughout where the data cannot say (no exposures, or no variation at all).
    """

    rate_control: float | None
    rate_variant: float | None
    difference: float | None
    uplift: float | None
    z: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool


NO_COMPARISON = Comparison(None, None, None, None, None, None, None, None, False)


def rate(converted: int, exposed: int) -> float | None:
    return converted / exposed if exposed else None


def uplift(rate_control: float, rate_variant: float) -> float | None:
    return (rate_variant - rate_control) / rate_control if rate_control else None


def compare(converted_c: int, exposed_c: int, converted_v: int, exposed_v: int,
            alpha: float = ALPHA) -> Comparison:
    if exposed_c <= 0 or exposed_v <= 0:
        return replace(NO_COMPARISON, rate_control=rate(converted_c, exposed_c),
                       rate_variant=rate(converted_v, exposed_v))
    p_c, p_v = converted_c / exposed_c, converted_v / exposed_v
    diff = p_v - p_c
    pooled = (converted_c + converted_v) / (exposed_c + exposed_v)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / exposed_c + 1 / exposed_v))
    z = p_value = None
    if se_pooled > 0:  # everyone or no one converted: no variation to test
        z = diff / se_pooled
        p_value = math.erfc(abs(z) / math.sqrt(2))  # two-sided: 2 * the normal's upper tail
    se = math.sqrt(p_c * (1 - p_c) / exposed_c + p_v * (1 - p_v) / exposed_v)
    margin = NormalDist().inv_cdf(1 - alpha / 2) * se
    return Comparison(p_c, p_v, diff, uplift(p_c, p_v), z, p_value, diff - margin,
                      diff + margin, p_value is not None and p_value < alpha)


@dataclass(frozen=True)
class KindResult:
    kind: Kind
    converted: int
    comparison: Comparison  # against the control (for the control itself: with itself)


@dataclass(frozen=True)
class VariantResult:
    name: str
    is_control: bool
    exposed: int
    kinds: tuple[KindResult, ...]


def results(experiment: Experiment, exposed: Mapping[str, int],
            converted: Mapping[tuple[str, Kind], int],
            alpha: float = ALPHA) -> list[VariantResult]:
    """Per variant (in the experiment's order): exposed subjects and, per conversion kind,
    the converting subjects compared with the control's."""
    control = experiment.control.name
    out = []
    for v in experiment.variants:
        kinds = []
        for kind in Kind:
            n_v, c_v = exposed.get(v.name, 0), converted.get((v.name, kind), 0)
            n_c, c_c = exposed.get(control, 0), converted.get((control, kind), 0)
            comparison = (replace(NO_COMPARISON, rate_control=rate(c_c, n_c),
                                  rate_variant=rate(c_v, n_v))
                          if v.name == control else compare(c_c, n_c, c_v, n_v, alpha))
            kinds.append(KindResult(kind, c_v, comparison))
        out.append(VariantResult(v.name, v.name == control, exposed.get(v.name, 0),
                                 tuple(kinds)))
    return out


def subject_ok(subject: str) -> bool:
    """A subject that can be stored as an exposure (else it is left out of experiments)."""
    return 0 < len(subject) <= MAX_SUBJECT and "\x00" not in subject
