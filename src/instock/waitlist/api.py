"""Waitlist routes: a customer joins or leaves the wait for a SKU."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId, customer_of
from instock.waitlist.model import Entry
from instock.waitlist.service import WaitlistService

router = APIRouter(tags=["waitlist"], responses=problem_responses(400, 401, 403, 404, 422))
MEMBER_ROLES = (Role.CUSTOMER, Role.SUPPORT, Role.SERVICE)
MEMBERS = requires(*MEMBER_ROLES)


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> WaitlistService:
    svc: WaitlistService = request.app.state.waitlist
    return svc


class JoinIn(BaseModel):
    sku: CallerId
    customer_id: CallerId | None = None  # staff name the customer; a customer is itself


class EntryOut(BaseModel):
    sku: str
    customer_id: str
    created_at: datetime
    notified_at: datetime | None


def render_entry(entry: Entry) -> EntryOut:
    return EntryOut(sku=entry.sku, customer_id=entry.customer_id, created_at=entry.created_at,
                    notified_at=entry.notified_at)


@router.post("/v1/waitlist", status_code=201, response_model=EntryOut)
async def join(body: JoinIn, principal: Principal = Depends(MEMBERS),
               waitlist: WaitlistService = Depends(service)) -> EntryOut:
    """Wait for a SKU: one `waitlist.notified.v1` event is produced when it is back in stock."""
    return render_entry(await waitlist.join(body.sku, customer_of(principal, body.customer_id)))


@router.get("/v1/waitlist", response_model=list[EntryOut])
async def entries(customer_id: CallerId | None = None, principal: Principal = Depends(MEMBERS),
                  waitlist: WaitlistService = Depends(service)) -> list[EntryOut]:
    customer = customer_of(principal, customer_id)
    return [render_entry(e) for e in await waitlist.of_customer(customer)]


@router.delete("/v1/waitlist/{sku}", status_code=204)
async def leave(sku: CallerId, customer_id: CallerId | None = None,
                principal: Principal = Depends(MEMBERS),
                waitlist: WaitlistService = Depends(service)) -> Response:
    await waitlist.leave(sku, customer_of(principal, customer_id))
    return Response(status_code=204)
