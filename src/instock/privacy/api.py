"""A person's rights over their data: a copy of everything (export) and to be forgotten
(erase). The customer themselves, support or admin; under the customer's path, as a person
would look for them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId
from instock.privacy.service import PrivacyService

router = APIRouter(tags=["privacy"], responses=problem_responses(400, 401, 403, 422))
RIGHTS_ROLES = requires(Role.CUSTOMER, Role.SUPPORT)  # and admin, always


async def service(request: Request) -> PrivacyService:
    svc: PrivacyService = request.app.state.privacy
    return svc


class Erased(BaseModel):
    customer_id: str
    erased: bool  # always true after the call
    already: bool  # it had been done before: nothing was left to erase
    contexts: list[str]  # where their data was erased or pseudonymised


@router.get("/v1/customers/{customer_id}/export")
async def export(customer_id: CallerId, principal: Principal = Depends(RIGHTS_ROLES),
                 privacy: PrivacyService = Depends(service)) -> dict[str, Any]:
    """Everything instock holds about the person, by context (an empty context holds nothing
    of theirs): their profile, orders, reservations, behaviour, waits, notifications, poll
    answers, experiment exposures, and the events that named them."""
    principal.assert_acts_for(customer_id)
    return {"customer_id": customer_id,
            "data": jsonable_encoder(await privacy.export(customer_id))}


@router.post("/v1/customers/{customer_id}/erase", response_model=Erased)
async def erase(customer_id: CallerId, principal: Principal = Depends(RIGHTS_ROLES),
                privacy: PrivacyService = Depends(service)) -> Erased:
    """Forget the person: their key is destroyed (what was sealed with it, backups included,
    never opens again), their identifiers are replaced by an unlinkable pseudonym where
    records must stay (orders, behaviour, experiments), the rest is deleted. Repeatable."""
    principal.assert_acts_for(customer_id)
    done = await privacy.erase(customer_id)
    return Erased(customer_id=customer_id, erased=True, already=not done,
                  contexts=[entry.context for entry in privacy.registry])
