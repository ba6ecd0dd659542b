"""A marketplace simulator, run as its own process: `instock sandbox marketplace`.

It plays a StockX/GOAT-style marketplace towards instock, over real HTTP:

- the seller API instock's connector calls: `PUT /v1/listings/{sku}` {quantity} (each push is
  recorded with a counter), `GET /v1/listings`, `POST /v1/orders/{id}/cancel` {reason} (we could
  not fill it: the buyer is refunded, once);
- its buyers, driven by tests and demos through control endpoints under `/_sim`:
  `POST /_sim/orders` (a buyer buys: a signed `order.created` webhook goes to --webhook-url, the
  `Marketplace-Signature` header `t=…,v1=…`; optionally sent twice, or signed with an old
  timestamp), `POST /_sim/orders/{id}/cancel` (the buyer cancels: `order.cancelled`),
  `POST /_sim/deliveries/{event_id}/resend` (a replay of a delivery, optionally aged),
  `POST /_sim/config` (latency, failures, rate limiting, drift), `GET /_sim/state`.

State lives in the process; it is a stand-in, not a store.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from instock.platform import signatures

Sku = Annotated[str, StringConstraints(min_length=1, max_length=64)]


@dataclass
class Listing:
    sku: str
    quantity: int
    pushes: int = 0
    updated_at: float = field(default_factory=time.time)


@dataclass
class SimConfig:
    latency_ms: int = 0  # added to every seller-API answer
    fail_pushes: int = 0  # the next N listing pushes answer 503
    rate_limit_pushes: int = 0  # the next N listing pushes answer 429
    retry_after_seconds: int = 1  # what those 429s ask for


@dataclass
class Marketplace:
    webhook_url: str
    webhook_secret: str
    api_key: str | None = None
    listings: dict[str, Listing] = field(default_factory=dict)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancellations: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    config: SimConfig = field(default_factory=SimConfig)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- webhooks ----------------------------------------------------------------------------------

    async def deliver(self, event: dict[str, Any], *, age_seconds: int = 0) -> dict[str, Any]:
        """Send one signed delivery of `event`; the answer is recorded and returned."""
        body = _json(event)
        header = signatures.sign(body, self.webhook_secret, int(time.time()) - age_seconds)
        record: dict[str, Any] = {"event_id": event["id"], "type": event["type"],
                                  "age_seconds": age_seconds, "at": time.time()}
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(self.webhook_url, content=body, headers={
                    "content-type": "application/json", "Marketplace-Signature": header})
            record.update(status=response.status_code, answer=_answer(response))
        except httpx.HTTPError as exc:
            record.update(status=None, answer=f"{type(exc).__name__}: {exc}")
        self.deliveries.append({**record, "event": event})
        return record

    def event(self, kind: str, order: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt_{secrets.token_hex(8)}", "type": kind, "created": int(time.time()),
                "data": {"order": {k: v for k, v in order.items() if k != "status"}}}

    def find_delivery(self, event_id: str) -> dict[str, Any]:
        for delivery in self.deliveries:
            if delivery["event_id"] == event_id:
                return delivery
        raise HTTPException(404, f"no delivery of event {event_id}")

    def cancel(self, order_id: str, by: str, reason: str) -> dict[str, Any] | None:
        """Cancel and refund an order once, however often asked (None: no such order)."""
        order = self.orders.get(order_id)
        if order is not None and order["status"] != "cancelled":
            order["status"] = "cancelled"
            order["refunded"] = order["total"]
            self.cancellations.append({"order_id": order_id, "by": by, "reason": reason,
                                       "refunded": order["total"], "at": time.time()})
        return order

    def state(self) -> dict[str, Any]:
        return {"listings": {sku: {"quantity": li.quantity, "pushes": li.pushes}
                             for sku, li in sorted(self.listings.items())},
                "pushes": self.pushes, "orders": list(self.orders.values()),
                "cancellations": self.cancellations,
                "deliveries": [{k: v for k, v in d.items() if k != "event"}
                               for d in self.deliveries],
                "config": self.config.__dict__}


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


# -- request bodies ------------------------------------------------------------------------------


class QuantityIn(BaseModel):
    quantity: int = Field(ge=0)


class CancelIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class SimLineIn(BaseModel):
    sku: Sku
    quantity: int = Field(default=1, ge=1)
    price: Decimal = Field(default=Decimal("100.00"), ge=0)


class SimOrderIn(BaseModel):
    """A buyer's purchase. One line (sku, quantity, price) or several (`lines`)."""

    sku: Sku | None = None
    quantity: int = Field(default=1, ge=1)
    price: Decimal = Field(default=Decimal("100.00"), ge=0)
    lines: list[SimLineIn] | None = None
    currency: str = "EUR"
    id: str | None = Field(default=None, description="the order id; generated when absent")
    send_twice: bool = Field(default=False, description="deliver the webhook twice")
    age_seconds: int = Field(default=0, description="sign it this many seconds in the past")
    ignore_listing: bool = Field(default=False, description="sell even beyond the listing "
                                                            "(a stale listing)")


class BuyerCancelIn(BaseModel):
    reason: str = "buyer changed their mind"
    send_twice: bool = False


class ResendIn(BaseModel):
    age_seconds: int = 0


class ConfigIn(BaseModel):
    latency_ms: int | None = Field(default=None, ge=0)
    fail_pushes: int | None = Field(default=None, ge=0)
    rate_limit_pushes: int | None = Field(default=None, ge=0)
    retry_after_seconds: int | None = Field(default=None, ge=0)
    drift: dict[str, int] | None = Field(default=None, description="set these listings to "
                                                                   "these quantities (no push)")
    webhook_url: str | None = None


router = APIRouter()


def create_app(webhook_url: str, webhook_secret: str, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="instock marketplace simulator")
    app.state.sim = Marketplace(webhook_url, webhook_secret, api_key)
    app.include_router(router)
    return app


def simulator(request: Request) -> Marketplace:
    sim: Marketplace = request.app.state.sim
    return sim


async def seller(authorization: str | None = Header(default=None),
                 sim: Marketplace = Depends(simulator)) -> Marketplace:
    """The seller API needs the API key (when the simulator was given one) and answers
    after the configured latency."""
    if sim.api_key is not None and authorization != f"Bearer {sim.api_key}":
        raise HTTPException(401, "bad API key")
    if sim.config.latency_ms:
        await asyncio.sleep(sim.config.latency_ms / 1000)
    return sim


def _cancelled(sim: Marketplace, order_id: str, by: str, reason: str) -> dict[str, Any]:
    order = sim.cancel(order_id, by, reason)
    if order is None:
        raise HTTPException(404, f"no order {order_id}")
    return order


# -- the seller API ----------------------------------------------------------------------------


@router.put("/v1/listings/{sku}")
async def put_listing(sku: Sku, body: QuantityIn,
                      m: Marketplace = Depends(seller)) -> JSONResponse:
    push = {"n": len(m.pushes) + 1, "sku": sku, "quantity": body.quantity, "at": time.time()}
    if m.config.rate_limit_pushes > 0:
        m.config.rate_limit_pushes -= 1
        m.pushes.append({**push, "outcome": 429})
        return JSONResponse({"error": "rate limited"}, status_code=429,
                            headers={"Retry-After": str(m.config.retry_after_seconds)})
    if m.config.fail_pushes > 0:
        m.config.fail_pushes -= 1
        m.pushes.append({**push, "outcome": 503})
        return JSONResponse({"error": "unavailable"}, status_code=503)
    listing = m.listings.setdefault(sku, Listing(sku, 0))
    listing.quantity = body.quantity
    listing.pushes += 1
    listing.updated_at = time.time()
    m.pushes.append({**push, "outcome": 200})
    return JSONResponse({"sku": sku, "quantity": listing.quantity, "pushes": listing.pushes})


@router.get("/v1/listings")
async def get_listings(m: Marketplace = Depends(seller)) -> dict[str, Any]:
    return {"listings": [{"sku": li.sku, "quantity": li.quantity}
                         for li in sorted(m.listings.values(), key=lambda li: li.sku)],
            "next_cursor": None}


@router.post("/v1/orders/{order_id}/cancel")
async def seller_cancel(order_id: str, body: CancelIn,
                        m: Marketplace = Depends(seller)) -> dict[str, Any]:
    """The seller cannot fill the order: the buyer is refunded (once, however often
    this is called)."""
    return _cancelled(m, order_id, "seller", body.reason)


# -- the buyers (control) ----------------------------------------------------------------------


@router.post("/_sim/orders")
async def buy(body: SimOrderIn, sim: Marketplace = Depends(simulator)) -> dict[str, Any]:
    lines = body.lines or ([SimLineIn(sku=body.sku, quantity=body.quantity,
                                      price=body.price)] if body.sku else [])
    if not lines:
        raise HTTPException(422, "an order needs a sku or lines")
    async with sim.lock:  # the listing check and its decrement are one step
        short = [line.sku for line in lines
                 if sim.listings.get(line.sku, Listing(line.sku, 0)).quantity < line.quantity]
        if short and not body.ignore_listing:
            raise HTTPException(409, f"not listed in that quantity: {', '.join(short)}")
        for line in lines:
            listing = sim.listings.setdefault(line.sku, Listing(line.sku, 0))
            listing.quantity = max(0, listing.quantity - line.quantity)
        order_id = body.id or f"mo_{secrets.token_hex(6)}"
        total = sum((line.price * line.quantity for line in lines), Decimal(0))
        order = {"id": order_id, "currency": body.currency, "status": "created",
                 "total": str(total), "refunded": "0",
                 "lines": [{"sku": line.sku, "quantity": line.quantity,
                            "price": str(line.price)} for line in lines]}
        sim.orders[order_id] = order
    event = sim.event("order.created", order)
    return await _delivered(sim, order, event, body.send_twice, body.age_seconds)


@router.post("/_sim/orders/{order_id}/cancel")
async def buyer_cancel(order_id: str, body: BuyerCancelIn,
                       sim: Marketplace = Depends(simulator)) -> dict[str, Any]:
    order = _cancelled(sim, order_id, "buyer", body.reason)
    event = sim.event("order.cancelled", {**order, "reason": body.reason})
    return await _delivered(sim, order, event, body.send_twice)


async def _delivered(sim: Marketplace, order: dict[str, Any], event: dict[str, Any],
                     twice: bool, age_seconds: int = 0) -> dict[str, Any]:
    """Send a buyer's event (twice when asked: a duplicate delivery) and say how it went."""
    deliveries = [await sim.deliver(event, age_seconds=age_seconds)]
    if twice:
        deliveries.append(await sim.deliver(event, age_seconds=age_seconds))
    return {"order": order, "event_id": event["id"], "deliveries": deliveries}


@router.post("/_sim/deliveries/{event_id}/resend")
async def resend(event_id: str, body: ResendIn,
                 sim: Marketplace = Depends(simulator)) -> dict[str, Any]:
    """Send a delivery again, exactly as before but signed `age_seconds` ago: a replay."""
    return await sim.deliver(sim.find_delivery(event_id)["event"], age_seconds=body.age_seconds)


@router.post("/_sim/config")
async def configure(body: ConfigIn, sim: Marketplace = Depends(simulator)) -> dict[str, Any]:
    for name in ("latency_ms", "fail_pushes", "rate_limit_pushes", "retry_after_seconds"):
        if (value := getattr(body, name)) is not None:
            setattr(sim.config, name, value)
    for sku, quantity in (body.drift or {}).items():  # the marketplace's own mistake
        sim.listings.setdefault(sku, Listing(sku, 0)).quantity = quantity
    if body.webhook_url is not None:
        sim.webhook_url = body.webhook_url
    return sim.state()


@router.get("/_sim/state")
async def state(sim: Marketplace = Depends(simulator)) -> dict[str, Any]:
    return sim.state()


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


def serve(host: str, port: int, webhook_url: str, webhook_secret: str,
          api_key: str | None) -> None:
    import uvicorn

    uvicorn.run(create_app(webhook_url, webhook_secret, api_key), host=host, port=port,
                log_level="warning", access_log=False)
