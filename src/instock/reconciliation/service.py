"""Continuous reconciliation: each pass checks the stock that changed since the last one (the
outbox says which), what database triggers marked as changed behind the code's back, and a
stretch of the rest (a sweep that walks every SKU in turn), each level from the checkpoint it
was last verified at, so a pass costs what changed, not the catalogue's size.

A drift is recorded once (open until decided), announced by an event, counted by a gauge,
and repaired only by a reason-coded ledger entry: at once when small, on approval otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from instock.catalog.service import CatalogService
from instock.channels.service import ChannelsService
from instock.inventory.drift import DriftKind, Finding
from instock.inventory.service import InventoryService
from instock.orders.service import OrdersService
from instock.platform.bus import outbox
from instock.platform.db import Database, utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import Conflict, NotFound
from instock.platform.ids import new_id
from instock.platform.retry import keep_running
from instock.platform.telemetry import (
    LEDGER_VERIFICATION_FAILURES,
    RECONCILIATION_DRIFTS,
    RECONCILIATION_PASS,
)
from instock.recommendations.service import RecommendationsService
from instock.reconciliation import commitments, model, projections, sources, store
from instock.reconciliation.events import DriftDetected, DriftRepaired
from instock.reconciliation.model import EVENT_LOST, Drift, DriftStatus, RepairPolicy

log = structlog.get_logger(__name__)

INTEGRITY = frozenset({DriftKind.LEDGER})
# Always a person's decision, whatever their size: history edited, stock tied to orders.
DECIDED_BY_PEOPLE = INTEGRITY | {commitments.ORPHAN, commitments.UNSTOCKED}
# Put right by publishing the SKU's state again (an entry of nothing, with who and why).
REPUBLISHED = frozenset({EVENT_LOST, projections.RECS_STALE, projections.LISTING_STALE})
MARKS_PER_PASS = 10_000
CHUNK = 200  # SKUs checked per snapshot read


@dataclass(frozen=True)
class ReconcileSettings:
    policy: RepairPolicy = field(default_factory=RepairPolicy)
    interval_seconds: float = 5.0
    sweep_per_pass: int = 500  # SKUs of the whole catalogue checked per pass, in turn
    # Outbox rows are read again this far back: a transaction writes its rows' time before it
    # commits, so a slow one commits rows older than the last pass's mark.
    overlap_seconds: float = 30.0
    # Committed stock and orders move in separate transactions, copies of stock follow it
    # within their freshness bound: a difference between them is a drift only once it has
    # lasted this long.
    grace_seconds: float = 30.0
    # The marketplaces' listings are pulled whole (their APIs list, they do not answer what
    # changed), so not every pass.
    marketplace_every_seconds: float = 60.0
    # A background pass rests after each chunk this many times as long as the chunk took, so
    # that it shares the event loop with the API it runs beside: checking 1,000 SKUs back to
    # back held an API process's writes behind it for 100-200 ms every pass (their p99 tripled).
    rest_per_chunk: float = 1.0


@dataclass
class PassReport:
    checked: int = 0  # stock levels checked
    skus: int = 0
    entries: int = 0  # ledger entries folded
    drifts: list[dict[str, Any]] = field(default_factory=list)
    # Differences with orders or with copies of stock still within their grace period.
    suspected: list[dict[str, Any]] = field(default_factory=list)
    repaired: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "skus": self.skus, "entries": self.entries,
                "drifts": self.drifts, "suspected": self.suspected, "repaired": self.repaired,
                "seconds": round(self.seconds, 4)}


class DriftNotOpen(Conflict):
    slug, title = "drift-not-open", "The drift was already decided"


class DriftNeedsOrderAction(Conflict):
    slug, title = "drift-needs-order-action", "The drift is put right through its order"


class ReconciliationService:
    def __init__(self, db: Database, inventory: InventoryService, catalog: CatalogService,
                 orders: OrdersService, recommendations: RecommendationsService,
                 channels: ChannelsService, settings: ReconcileSettings) -> None:
        self.db = db
        self.inventory = inventory
        self.catalog = catalog
        self.orders = orders
        self.recommendations = recommendations
        self.channels = channels
        self.settings = settings
        self.suspicions = model.Suspicions[Finding](timedelta(seconds=settings.grace_seconds))
        self.marketplaces_checked: datetime | None = None
        self.last_pass: datetime | None = None  # for /readyz
        self.last_report: PassReport | None = None

    async def run(self) -> None:
        """A pass every `interval_seconds`, for the life of the process. One reconciler leads at
        a time (several processes may run one: the others stand by and take over when it dies),
        so no two passes record the same drift twice."""
        await keep_running(self._lead, "reconciler")

    async def _lead(self) -> None:
        async with self.db.leadership("reconciler") as lost:
            while not lost.is_set():
                await self.run_pass(rest=self.settings.rest_per_chunk)
                await asyncio.sleep(self.settings.interval_seconds)

    # -- a pass -------------------------------------------------------------------------------

    async def run_pass(self, sku: str | None = None, dry_run: bool = False,
                       progress: Callable[[int, int], None] | None = None,
                       rest: float = 0.0) -> PassReport:
        started, now = time.perf_counter(), utcnow()
        report = PassReport()
        async with self.db.read() as conn:
            since = await store.cursor(conn, "outbox")
            sweep_from = await store.cursor(conn, "sweep")
            marked = await store.read_marks(conn, MARKS_PER_PASS)
            still_open = await store.open_drifts(conn)
            after = None if since is None else (
                datetime.fromisoformat(since) - timedelta(seconds=self.settings.overlap_seconds))
            if sku is None:
                changed = await store.changed_skus(conn, after)
        if sku is not None:
            marked = [m for m in marked if m[0] == sku]
            skus, swept = {sku}, []
        else:
            swept = await self.inventory.stocked_skus_after(
                sweep_from or None, self.settings.sweep_per_pass
            ) if self.settings.sweep_per_pass > 0 else []
            skus = changed | set(swept) | {m[0] for m in marked if m[1]} | {
                f.sku for f in self.suspicions.pending if f.kind != commitments.UNSTOCKED}
        findings = [_lost_event(m) for m in marked if not m[1]]
        held = sources.Commitments()
        differences: list[Finding] = []
        verified: dict[tuple[str, str], dict[str, Any]] = {}
        ordered = sorted(skus)
        for start in range(0, len(ordered), CHUNK):
            chunk_started = time.perf_counter()
            chunk = set(ordered[start:start + CHUNK])
            async with self.db.read() as conn:
                known = await store.load_checkpoints(conn, chunk)
            for m_sku, m_location, _, whole, _ in marked:
                if whole and m_sku in chunk:  # the ledger was edited: fold it all again
                    accepted = known.get((m_sku, m_location), {}).get("accepted", [])
                    known[(m_sku, m_location)] = {"accepted": accepted}
            checked = await self.inventory.check(chunk, known)
            await held.read_stock(self.inventory, chunk, after if sku is None else None)
            differences += await sources.copies_of(self.inventory, self.recommendations,
                                                   self.channels, chunk)
            findings += checked.findings
            verified.update(checked.verified)
            report.entries += checked.entries
            report.checked += len(checked.verified) + len(
                {(f.sku, f.location) for f in checked.findings})
            if progress is not None:
                progress(min(start + CHUNK, len(ordered)), len(ordered))
            if rest > 0:
                await asyncio.sleep((time.perf_counter() - chunk_started) * rest)
        report.skus = len(skus)
        recheck = {str(d.expected.get("order")) for d in still_open
                   if d.kind == commitments.UNSTOCKED} | {
            str(f.expected.get("order")) for f in self.suspicions.pending
            if f.kind == commitments.UNSTOCKED}
        differences += await held.compare(self.inventory, self.orders,
                                          None if sku is None else sku, after, recheck)
        coverage = _Coverage(skus, held.orders_checked, sku is None and (
            self._marketplaces_due(now) or any(
                f.kind == projections.MARKETPLACE for f in self.suspicions.pending)))
        if coverage.marketplaces:
            differences += projections.marketplace(await self.channels.marketplace_gaps())
            self.marketplaces_checked = now
        recorded = {model.identity_of(d) for d in still_open}
        lasting = [f for f in differences if model.identity_of(f) in recorded] if dry_run else (
            self.suspicions.lasting(differences, now, recorded))
        findings += lasting
        report.suspected = [_shown(f) for f in differences if f not in lasting]
        if not dry_run:
            new = await self._record(findings, coverage, verified, marked, now, sku, swept)
            report.repaired = await self._repair_small(new)
            async with self.db.read() as conn:
                RECONCILIATION_DRIFTS.set(await store.count_open(conn))
            self.last_pass = now
        report.drifts = [_shown(f) for f in findings]
        report.seconds = time.perf_counter() - started
        RECONCILIATION_PASS.observe(report.seconds)
        self.last_report = report
        return report

    def _marketplaces_due(self, now: datetime) -> bool:
        last = self.marketplaces_checked
        return last is None or (now - last).total_seconds() >= (
            self.settings.marketplace_every_seconds)

    async def _record(self, findings: list[Finding], coverage: _Coverage,
                      verified: dict[tuple[str, str], dict[str, Any]],
                      marked: list[tuple[str, str, str, bool, int]], now: datetime,
                      only: str | None, swept: list[str]) -> list[Drift]:
        """Store what the pass found and how far it got, in one transaction."""
        new: list[Drift] = []
        async with self.db.write() as conn:
            # Every open drift (few: each waits for a decision), not those of the SKUs checked:
            # a first pass checks the whole catalogue, too many SKUs for one IN list.
            still_open = {model.identity_of(d): d for d in await store.open_drifts(conn)}
            for finding in findings:
                known = still_open.pop(model.identity_of(finding), None)
                units = model.units_apart(finding.expected, finding.actual)
                if known is not None:
                    await store.update_drift(conn, Drift(**{
                        **known.__dict__, "expected": finding.expected,
                        "actual": finding.actual, "detail": finding.detail, "units": units}))
                    continue
                drift = Drift(new_id(), finding.kind, finding.sku, finding.location,
                              finding.expected, finding.actual, finding.detail, now,
                              units=units)
                await store.insert_drift(conn, drift)
                await outbox.add(conn, [DriftDetected(
                    drift_id=drift.id, kind=drift.kind, sku=drift.sku, location=drift.location,
                    expected=drift.expected, actual=drift.actual, detail=drift.detail,
                    detected_at=now)])
                if drift.kind in INTEGRITY:
                    LEDGER_VERIFICATION_FAILURES.inc()
                log.warning("drift_detected", drift=drift.id, kind=drift.kind, sku=drift.sku,
                            location=drift.location, detail=drift.detail)
                new.append(drift)
            for drift in still_open.values():  # checked again and consistent: gone by itself
                if coverage.covers(drift):
                    await store.update_drift(conn, model.decide(
                        drift, DriftStatus.RESOLVED, "reconciler", "consistent again", now))
            await store.save_checkpoints(conn, verified, now)
            await store.clear_marks(conn, [(s, loc, n) for s, loc, _, _, n in marked])
            if only is None:
                await store.move_cursor(conn, "outbox", now.isoformat())
                # A short stretch means the sweep reached the end: start again from the top.
                full = len(swept) >= self.settings.sweep_per_pass
                await store.move_cursor(conn, "sweep", swept[-1] if full and swept else "")
        return new

    async def _repair_small(self, drifts: list[Drift]) -> int:
        policy = self.settings.policy
        if policy.max_units <= 0 or not drifts:
            return 0
        prices = await self.catalog.prices({d.sku for d in drifts})
        repaired = 0
        for drift in drifts:
            price = prices.get(drift.sku)
            value = None if price is None else price[0] * Decimal(drift.units)
            if model.repairs_itself(drift.kind, drift.units, value, policy,
                                   DECIDED_BY_PEOPLE):
                await self._repair(drift, "reconciler", f"automatic: {drift.units} unit(s), "
                                   f"within the policy of {policy.max_units}")
                repaired += 1
        return repaired

    # -- decisions ----------------------------------------------------------------------------

    async def drifts(self, status: DriftStatus | None = DriftStatus.OPEN,
                     limit: int = 100) -> list[Drift]:
        async with self.db.read() as conn:
            return await store.list_drifts(conn, status, limit)

    async def approve(self, drift_id: str, who: str, note: str) -> Drift:
        """Repair the drift with a `reconcile` ledger entry naming who approved it and why."""
        return await self._repair(await self._open(drift_id), who, note)

    async def reject(self, drift_id: str, who: str, note: str) -> Drift:
        """Leave the stock as it is; the drift is closed with who decided and why."""
        drift = await self._open(drift_id)
        async with self.db.write() as conn:
            decided = model.decide(drift, DriftStatus.REJECTED, who, note, utcnow())
            await store.update_drift(conn, decided)
            RECONCILIATION_DRIFTS.set(await store.count_open(conn))
        return decided

    async def _open(self, drift_id: str) -> Drift:
        async with self.db.read() as conn:
            drift = await store.get_drift(conn, drift_id)
        if drift is None:
            raise NotFound(f"drift {drift_id} does not exist")
        if drift.status is not DriftStatus.OPEN:
            raise DriftNotOpen(f"drift {drift_id} is {drift.status.value}")
        return drift

    async def _repair(self, drift: Drift, who: str, note: str) -> Drift:
        ctx = EntryContext(who, f"reconcile drift {drift.id} ({drift.kind}): {note}"[:500],
                           reference=f"drift:{drift.id}")
        location = drift.location or await self._first_location(drift.sku)
        if drift.kind == commitments.UNSTOCKED:
            raise DriftNeedsOrderAction(
                f"order {drift.expected.get('order')} is paid for stock it no longer holds: "
                "cancel and refund it or reserve its units again, then reject this drift with "
                "what was done")
        if drift.kind == commitments.ORPHAN:
            # The committed units go back to sale: a `cancel` entry naming who and why.
            await self.inventory.cancel(str(drift.expected["reservation"]), ctx)
        elif drift.kind == projections.MARKETPLACE:  # our quantity goes to the marketplace again
            await self.channels.push_again(str(drift.expected["channel"]), drift.sku,
                                           drift.actual.get("quantity"))
        elif location is not None:
            # A lost event or a stale copy is made good by an entry of nothing: the SKU's
            # current state is published again, with who and why in the ledger.
            kind = DriftKind.LEVEL if drift.kind in REPUBLISHED else drift.kind
            await self.inventory.repair(kind, drift.sku, location, ctx)
        async with self.db.write() as conn:
            current = await store.get_drift(conn, drift.id, lock=True)
            if current is None or current.status is not DriftStatus.OPEN:
                raise DriftNotOpen(f"drift {drift.id} was decided meanwhile")
            decided = model.decide(current, DriftStatus.REPAIRED, who, note, utcnow())
            await store.update_drift(conn, decided)
            if drift.kind == DriftKind.LEDGER:  # fold it all next time, accepting the edit
                await store.save_checkpoints(conn, {(drift.sku, drift.location): {
                    "accepted": list(drift.actual.get("versions", []))}}, utcnow())
            await outbox.add(conn, [DriftRepaired(
                drift_id=drift.id, kind=drift.kind, sku=drift.sku, location=drift.location,
                decided_by=who, note=note)])
            RECONCILIATION_DRIFTS.set(await store.count_open(conn))
        log.info("drift_repaired", drift=drift.id, kind=drift.kind, by=who)
        return decided

    async def _first_location(self, sku: str) -> str | None:
        try:
            view = await self.inventory.stock(sku)
        except NotFound:
            return None
        return view.levels[0].location if view.levels else None


@dataclass(frozen=True)
class _Coverage:
    """What a pass checked: not finding a drift there again means it is gone."""

    skus: set[str]
    orders: set[str]
    marketplaces: bool

    def covers(self, drift: Drift) -> bool:
        if drift.kind == EVENT_LOST:
            return False
        if drift.kind == commitments.UNSTOCKED:
            return str(drift.expected.get("order")) in self.orders
        if drift.kind == projections.MARKETPLACE:
            return self.marketplaces
        return drift.sku in self.skus


def _lost_event(mark: tuple[str, str, str, bool, int]) -> Finding:
    subject, _, event_type, _, n = mark
    return Finding(EVENT_LOST, subject, "", {"events": "published"},
                   {"events": "deleted before publication", "type": event_type, "count": n},
                   f"{n} event(s) of {subject} ({event_type}) deleted from the outbox before "
                   f"the relay published them")


def _shown(finding: Finding) -> dict[str, Any]:
    return {"kind": finding.kind, "sku": finding.sku, "location": finding.location,
            "expected": finding.expected, "actual": finding.actual, "detail": finding.detail}
