"""Reconciliation routes: the drifts found, and a staff decision on each (approve: repair it by
a `reconcile` ledger entry naming who and why; reject: leave the stock as it is)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, StringConstraints

from instock.platform.auth import STAFF, Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.reconciliation.model import DriftStatus
from instock.reconciliation.service import ReconciliationService

router = APIRouter(prefix="/v1/reconciliation", tags=["reconciliation"],
                   responses=problem_responses(400, 401, 403, 404, 409, 422))
READERS = requires(*STAFF)
DECIDERS = requires(Role.INVENTORY)  # and admin: they answer for the stock
DriftId = Annotated[str, Path(pattern=r"^[0-9A-Fa-f-]{1,36}$")]
Note = Annotated[str, StringConstraints(min_length=1, max_length=400, strip_whitespace=True)]


async def service(request: Request) -> ReconciliationService:
    svc: ReconciliationService = request.app.state.reconciliation
    return svc


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Note


@router.get("/drifts")
async def list_drifts(
        status: Literal["open", "repaired", "rejected", "resolved", "all"] = Query("open"),
        limit: int = Query(100, ge=1, le=1000),
        _: Principal = Depends(READERS),
        svc: ReconciliationService = Depends(service)) -> dict[str, Any]:
    """Drifts reconciliation found, newest first (open ones by default)."""
    found = await svc.drifts(None if status == "all" else DriftStatus(status), limit)
    return {"items": [d.summary() for d in found]}


@router.post("/drifts/{drift_id}/approve")
async def approve(drift_id: DriftId, body: Decision,
                  principal: Principal = Depends(DECIDERS),
                  svc: ReconciliationService = Depends(service)) -> dict[str, Any]:
    """Repair the drift: one `reconcile` ledger entry, with who approved it and why."""
    return (await svc.approve(drift_id, principal.subject, body.reason)).summary()


@router.post("/drifts/{drift_id}/reject")
async def reject(drift_id: DriftId, body: Decision,
                 principal: Principal = Depends(DECIDERS),
                 svc: ReconciliationService = Depends(service)) -> dict[str, Any]:
    """Close the drift without touching the stock, with who decided and why."""
    return (await svc.reject(drift_id, principal.subject, body.reason)).summary()
