"""Notification routes: support's view of what was sent to a customer, and the one-click
unsubscribe (RFC 8058) that mail clients POST to without any login."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from instock.notifications.model import Notification
from instock.notifications.service import NotificationsService
from instock.platform.auth import Principal, Role, requires
from instock.platform.errors import problem_responses
from instock.platform.http import CallerId

router = APIRouter(tags=["notifications"])
SUPPORT = requires(Role.SUPPORT)  # and admin, always


# async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
async def service(request: Request) -> NotificationsService:
    svc: NotificationsService = request.app.state.notifications
    return svc


class NotificationOut(BaseModel):
    id: str
    customer_id: str | None
    reason: str
    subject: str
    channel: str
    status: str  # queued, sent, failed (dead-lettered), suppressed
    suppression: str | None  # no_consent, unsubscribed, no_address, rate_limited, erased
    error: str | None
    attempts: int
    provider_message_id: str | None
    created_at: datetime
    due_at: datetime | None
    sent_at: datetime | None
    data: dict[str, Any]


class Unsubscribed(BaseModel):
    customer_id: str
    purpose: str
    unsubscribed: bool = True


def render(n: Notification) -> NotificationOut:
    return NotificationOut(id=n.id, customer_id=n.customer_id, reason=n.reason,
                           subject=n.subject, channel=n.channel, status=n.status.value,
                           suppression=n.suppression, error=n.error, attempts=n.attempts,
                           provider_message_id=n.provider_message_id, created_at=n.created_at,
                           due_at=n.due_at, sent_at=n.sent_at, data=n.data)


@router.get("/v1/notifications", response_model=list[NotificationOut],
            responses=problem_responses(400, 401, 403, 422))
async def of_customer(customer_id: CallerId, limit: int = Query(100, ge=1, le=1000),
                      _: Principal = Depends(SUPPORT),
                      notifications: NotificationsService = Depends(service)
                      ) -> list[NotificationOut]:
    """The customer's notifications, newest first: what was sent, suppressed (and why) or
    dead-lettered."""
    return [render(n) for n in await notifications.of_customer(customer_id, limit)]


@router.post("/v1/notifications/unsubscribe", response_model=Unsubscribed,
             responses=problem_responses(400, 422))
async def unsubscribe(token: str = Query(..., min_length=1, max_length=2000),
                      notifications: NotificationsService = Depends(service)) -> Unsubscribed:
    """One-click unsubscribe (RFC 8058): the token in a mail's List-Unsubscribe link names the
    customer and the purpose; that consent is withdrawn. No login: the signed token is the
    proof. Posting it again changes nothing."""
    customer_id, purpose = await notifications.unsubscribe(token)
    return Unsubscribed(customer_id=customer_id, purpose=purpose)


@router.get("/v1/notifications/unsubscribe", include_in_schema=False)
async def unsubscribe_page(token: str = Query(..., max_length=2000)) -> HTMLResponse:
    """The same link opened in a browser (a person clicking it in the mail): a page with one
    button that POSTs. A GET changes nothing, so link scanners that fetch every link in a
    mail unsubscribe no one."""
    action = escape(f"/v1/notifications/unsubscribe?token={token}", quote=True)
    return HTMLResponse(
        "<!doctype html><title>Unsubscribe</title><body style='font-family:sans-serif'>"
        f"<form method='post' action='{action}'><p>Stop these messages?</p>"
        "<button name='List-Unsubscribe' value='One-Click'>Unsubscribe</button></form>")
