"""Experiment use cases: managing experiments, assigning shoppers on the recommendations hot
path, logging exposures in batches, attributing conversions (a consumer) and the results.

`assign` runs inside every `GET /v1/recommendations`, so it never waits for the database:
the running experiment is kept in memory and re-read in the background at most every
`refresh_seconds` (a start or stop in another process shows within about that), and
exposures are queued and written in batches by `run_exposure_writer`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.experiments import model, store
from instock.experiments.events import ExperimentStarted, ExperimentStopped, VariantData
from instock.experiments.model import (
    Experiment,
    ExperimentError,
    Kind,
    Status,
    TransitionError,
    Unit,
    Variant,
    VariantResult,
)
from instock.experiments.store import Exposure
from instock.orders.events import OrderPaid
from instock.platform import held
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.db import Database, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.platform.retry import keep_running
from instock.recommendations.events import BehaviourRecorded

log = structlog.get_logger(__name__)

FLUSH_EVERY = 0.2  # seconds between exposure batches
# Bounds on memory: exposures waiting while the database is down (more are dropped, and
# queued again the next time those subjects are assigned), and the (experiment, subject)
# pairs remembered as written (forgetting one costs a rewrite the database ignores).
MAX_PENDING = 100_000
MAX_WRITTEN = 500_000


@dataclass(frozen=True)
class Assignment:
    """The variant a subject gets. `config` is shared between calls: read it, do not change it."""

    experiment_id: str
    variant: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Results:
    experiment: Experiment
    variants: list[VariantResult]
    alpha: float


class _Live:
    """The experiment that applies now, with its assignments made once, not per request."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.assignments = {v.name: Assignment(experiment.id, v.name, v.config)
                            for v in experiment.variants}


def _invalid(exc: ExperimentError) -> ValidationFailed:
    return ValidationFailed(exc.field, exc.reason)


# Stored behaviour: (shopper ids, kinds, since) -> events of those kinds by shoppers with those
# session or customer ids at or after `since` (rows with kind, session_id, customer_id,
# occurred_at). The recommendations service answers it; the composition root hands it over.
StoredActions = Callable[[Sequence[str], Sequence[str], datetime],
                         Awaitable[list[dict[str, Any]]]]


class ExperimentsService:
    def __init__(self, db: Database, models: frozenset[str], stored_actions: StoredActions,
                 refresh_seconds: float = 1.0) -> None:
        self.db = db
        self.models = models
        self.stored_actions = stored_actions
        self.refresh_seconds = refresh_seconds
        self._live: _Live | None = None
        self._loaded_at: float | None = None  # time.monotonic() of the last refresh
        self._refreshing: asyncio.Task[None] | None = None
        self._pending: dict[tuple[str, str], Exposure] = {}
        self._written: OrderedDict[tuple[str, str], None] = OrderedDict()  # oldest first
        self._flush_lock = asyncio.Lock()

    # -- managing ---------------------------------------------------------------------------

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await store.export_subject(conn, customer_id)

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.pseudonymise_subject(conn, customer_id, pseudonym)

    async def create(self, name: str, unit: Unit, variants: Sequence[Variant]) -> Experiment:
        """A new draft experiment; validation errors name the field."""
        try:
            experiment = Experiment(new_id(), model.name(name), Status.DRAFT, unit,
                                    model.variants(variants, self.models), utcnow())
        except ExperimentError as exc:
            raise _invalid(exc) from exc
        async with self.db.write() as conn:
            await store.insert(conn, experiment)
        return experiment

    async def get(self, experiment_id: str) -> Experiment:
        async with self.db.read() as conn:
            return await self._get(conn, experiment_id)

    async def list(self, status: Status | None = None) -> list[Experiment]:
        async with self.db.read() as conn:
            return await store.all_experiments(conn, status)

    async def start(self, experiment_id: str, correlation_id: str | None = None) -> Experiment:
        async with self.db.write() as conn:
            current = await self._get(conn, experiment_id, lock=True)
            started = self._transition(current.start)
            await store.update_status(conn, started)
            await outbox.add(conn, [ExperimentStarted(
                experiment_id=started.id, name=started.name, unit=started.unit.value,
                control=started.control.name, started_at=_at(started.started_at),
                variants=[VariantData(name=v.name, share=v.share, config=v.config)
                          for v in started.variants])], correlation_id)
        await self.refresh()  # this process serves it at once; others within refresh_seconds
        return started

    async def stop(self, experiment_id: str, correlation_id: str | None = None) -> Experiment:
        async with self.db.write() as conn:
            current = await self._get(conn, experiment_id, lock=True)
            stopped = self._transition(current.stop)
            await store.update_status(conn, stopped)
            await outbox.add(conn, [ExperimentStopped(
                experiment_id=stopped.id, name=stopped.name,
                started_at=_at(stopped.started_at), stopped_at=_at(stopped.stopped_at))],
                correlation_id)
        await self.refresh()
        return stopped

    @staticmethod
    def _transition(change: Callable[[datetime], Experiment]) -> Experiment:
        try:
            return change(utcnow())
        except TransitionError as exc:
            raise Conflict(str(exc)) from exc

    async def _get(self, conn: AsyncConnection, experiment_id: str,
                   lock: bool = False) -> Experiment:
        found = await store.get(conn, experiment_id, lock)
        if found is None:
            raise NotFound(f"no experiment {experiment_id}")
        return found

    # -- the hot path -----------------------------------------------------------------------

    async def assign(self, subject: str) -> Assignment | None:
        """The subject's variant in the running experiment (the one started first, if several
        run), or None if none runs. Queues the subject's exposure; never waits for the
        database except for the very first call of the process."""
        live = await self._current()
        if live is None or not model.subject_ok(subject):
            return None
        experiment = live.experiment
        variant = model.assign(experiment.id, subject, experiment.variants)
        key = (experiment.id, subject)
        if (key not in self._written and key not in self._pending
                and len(self._pending) < MAX_PENDING):
            self._pending[key] = Exposure(experiment.id, subject, variant.name, utcnow())
        return live.assignments[variant.name]

    async def _current(self) -> _Live | None:
        if self._loaded_at is None:
            await asyncio.shield(self._refresh_task())  # nothing to serve from yet
        elif time.monotonic() - self._loaded_at >= self.refresh_seconds:
            self._refresh_task()  # serve what we have; later calls see the new state
        return self._live

    def _refresh_task(self) -> asyncio.Task[None]:
        """One refresh at a time, however many requests find the cache stale."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = held.detached(self._refresh_quietly())
        return self._refreshing

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # Recommendations go on without experiments (or with the last one known); the
            # next refresh comes after refresh_seconds, not on every request.
            log.warning("experiments_refresh_failed", exc_info=True)
            self._loaded_at = time.monotonic()

    async def refresh(self) -> None:
        """Read the running experiments now."""
        async with self.db.read() as conn:
            running = await store.running(conn)
        first = running[0] if running else None
        if first is None:
            self._live = None
        elif self._live is None or self._live.experiment != first:
            self._live = _Live(first)
        self._loaded_at = time.monotonic()

    # -- exposures ----------------------------------------------------------------------------

    async def run_exposure_writer(self) -> None:
        """Write queued exposures every FLUSH_EVERY seconds, for the life of the process."""
        await keep_running(self.flush, "exposure_writer", pause=FLUSH_EVERY)

    async def flush(self) -> None:
        """Write the queued exposures in one transaction (a failed batch is queued again)."""
        async with self._flush_lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                async with self.db.write() as conn:
                    await store.expose(conn, list(batch.values()))
            except BaseException:
                # Back in the queue; a subject queued again since keeps its earlier time.
                self._pending = {**self._pending, **batch}
                raise
            self._remember(batch)
            await self._attribute_stored(list(batch.values()))

    async def _attribute_stored(self, exposed: Sequence[Exposure]) -> None:
        """Once exposures are committed, the conversions consumer attributes every later
        action; those it handled before (a click within FLUSH_EVERY of the list) are attributed
        here, from the stored behaviour. Both record each conversion once."""
        shoppers = sorted({e.subject.partition(":")[2] if e.subject[:2] in ("s:", "c:")
                           else e.subject for e in exposed})
        since = min(e.exposed_at for e in exposed)
        actions = await self.stored_actions(shoppers, sorted(CONVERSION_KINDS), since)
        if not actions:
            return  # the usual case: no write transaction
        conversions = [found for row in actions if (found := conversion_of({
            "type": BEHAVIOUR, "data": {
                "kind": row["kind"], "customer_id": row["customer_id"],
                "session_id": row["session_id"],
                "occurred_at": row["occurred_at"].isoformat()}})) is not None]
        async with self.db.write() as conn:
            await attribute_all(conn, conversions)

    def _remember(self, batch: dict[tuple[str, str], Exposure]) -> None:
        self._written.update(dict.fromkeys(batch))
        while len(self._written) > MAX_WRITTEN:
            self._written.popitem(last=False)

    async def close(self) -> None:
        """Write what is queued; a database already gone loses it (logged), not the shutdown."""
        if self._refreshing is not None:
            self._refreshing.cancel()
        try:
            await self.flush()
        except Exception:
            log.warning("exposures_lost_on_close", count=len(self._pending), exc_info=True)

    # -- results ------------------------------------------------------------------------------

    async def results(self, experiment_id: str, alpha: float = model.ALPHA) -> Results:
        async with self.db.snapshot() as conn:
            experiment = await self._get(conn, experiment_id)
            exposed = await store.exposed_counts(conn, experiment_id)
            converted = await store.converted_counts(conn, experiment_id)
        return Results(experiment, model.results(experiment, exposed, converted, alpha), alpha)


def _at(value: datetime | None) -> datetime:
    assert value is not None, "a started or stopped experiment has the time it happened"
    return value


# -- attribution -----------------------------------------------------------------------------


def _time(value: Any) -> datetime:
    at = datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def conversion_of(envelope: Envelope) -> tuple[Kind, list[str], datetime] | None:
    """(kind, the shopper's subjects, when) of a conversion event, or None if it is none."""
    data = envelope.get("data") or {}
    if envelope.get("type") == ORDER_PAID:
        kind, at = Kind.PURCHASE, _time(envelope["time"])  # the order carries no time itself
    else:
        if data.get("kind") not in CONVERSION_KINDS:
            return None  # a view (or search, ...) is no conversion
        kind, at = Kind(data["kind"]), _time(data["occurred_at"])
    subjects = subject_keys(data.get("customer_id"), data.get("session_id"))
    return (kind, subjects, at) if subjects else None


def subject_keys(customer_id: str | None, session_id: str | None) -> list[str]:
    """The subjects a shopper may have been assigned as: their customer or session id, bare
    or as the recommendation engine keys shoppers (`c:<customer>`, `s:<session>`)."""
    keys = []
    if customer_id:
        keys += [customer_id, f"c:{customer_id}"]
    if session_id:
        keys += [session_id, f"s:{session_id}"]
    return keys


async def attribute(conn: AsyncConnection, envelope: Envelope) -> None:
    """Gather a conversion event for `attribute_gathered`, which attributes the consumer
    transaction's conversions together, in the order they came."""
    found = conversion_of(envelope)
    if found is not None:
        conversions: list[tuple[Kind, list[str], datetime]] = gathered(_CONVERSIONS, list)
        conversions.append(found)


async def attribute_gathered(conn: AsyncConnection) -> None:
    """The consumer's `finish`: record a conversion for each exposure of the shopper (by
    customer id or session id) that came at or before it, within its experiment's run; once
    per experiment, subject and kind, with the exposure's variant. One read of the exposures
    (and of their experiments) for all the transaction's conversions, not one an event."""
    found: list[tuple[Kind, list[str], datetime]] = gathered(_CONVERSIONS, list)
    conversions = list(found)
    found.clear()
    await attribute_all(conn, conversions)


async def attribute_all(conn: AsyncConnection,
                        conversions: Sequence[tuple[Kind, list[str], datetime]]) -> None:
    """`attribute_gathered`'s work for these conversions (`conversion_of`), in order."""
    if not conversions:
        return
    everyone = await store.exposures_of(conn, sorted({s for _, subjects, _ in conversions
                                                      for s in subjects}))
    if not everyone:
        return
    experiments = await store.get_many(conn, {e.experiment_id for e in everyone})
    for kind, subjects, at in conversions:
        exposed = [e for e in everyone if e.subject in subjects and e.exposed_at <= at]
        if not exposed:
            continue
        counted = [e for e in exposed
                   if e.experiment_id in experiments and experiments[e.experiment_id].counts(at)]
        await store.convert(conn, counted, kind, at)


BEHAVIOUR = BehaviourRecorded.type
ORDER_PAID = OrderPaid.type
CONVERSION_KINDS = frozenset(k.value for k in Kind)
# Unordered: one shopper's events carry no sequence, and each counts once anyway.
_CONVERSIONS = "experiments.conversions"  # the consumer transaction's (`gathered`)
CONVERSIONS = ConsumerSpec("experiment-conversions", frozenset({BEHAVIOUR, ORDER_PAID}),
                           attribute, ordered=False,
                           wants=lambda envelope: conversion_of(envelope) is not None,
                           finish=attribute_gathered)
