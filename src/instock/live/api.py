"""Live routes: Server-Sent Events and a WebSocket carrying the same updates.

Public stock counts need no token; staff streams (reservations, ledger movements) do.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from instock.live import model
from instock.live.events import Update
from instock.live.service import Connection, LiveHub
from instock.platform.auth import STAFF, Principal, TokenAuthority, requires
from instock.platform.drain import RESTART_CLOSE_CODE, RESTART_REASON, Drain
from instock.platform.errors import NotFound, ValidationFailed, problem_responses
from instock.platform.ids import CALLER_ID_PATTERN, is_caller_id
from instock.platform.sse import event_stream
from instock.platform.telemetry import LIVE_CONNECTIONS

router = APIRouter(tags=["live"], responses=problem_responses(401, 403, 404, 422))
STAFF_ONLY = requires(*STAFF)
MAX_SKUS = 100
Sku = Annotated[str, StringConstraints(pattern=CALLER_ID_PATTERN)]


def hub(request: Request) -> LiveHub:
    live: LiveHub = request.app.state.live
    return live


def _sku_list(skus: str, field: str) -> list[str]:
    """The comma-separated SKUs of a query parameter, checked for form (not existence)."""
    wanted = [s.strip() for s in skus.split(",") if s.strip()]
    if not wanted or len(wanted) > MAX_SKUS:
        raise ValidationFailed(field, f"give between 1 and {MAX_SKUS} SKUs")
    bad = [s for s in wanted if not is_caller_id(s)]
    if bad:
        raise ValidationFailed(field, f"not a valid SKU: {bad[0]!r}")
    return wanted


@router.get("/v1/stream/inventory", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "stock updates as Server-Sent Events"}})
async def stream_inventory(
        request: Request,
        skus: Annotated[str, Query(description="comma-separated SKUs (at most 100)")],
        last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Each SKU's public stock (version, available, sold_out) now and on every change.

    The event id is a cursor of every SKU's version: reconnecting with `Last-Event-ID` sends
    only the SKUs that changed since. A comment line every few seconds keeps proxies open."""
    connection = Connection()
    await hub(request).watch(connection, _sku_list(skus, "skus"),
                             model.decode_cursor(last_event_id))
    return _sse(request, connection)


@router.get("/v1/stream/reservations", response_class=StreamingResponse)
async def stream_reservations(request: Request,
                              _: Principal = Depends(STAFF_ONLY)) -> StreamingResponse:
    """Every reservation's latest state as it changes (staff only)."""
    return _sse_topic(request, "reservations")


@router.get("/v1/stream/ledger", response_class=StreamingResponse)
async def stream_ledger(request: Request, _: Principal = Depends(STAFF_ONLY)) -> StreamingResponse:
    """Every stock level's latest movement as it happens (staff only)."""
    return _sse_topic(request, "ledger")


def _sse_topic(request: Request, topic: str) -> StreamingResponse:
    connection = Connection()
    hub(request).follow(connection, topic)
    return _sse(request, connection)


def _sse(request: Request, connection: Connection) -> StreamingResponse:
    live = hub(request)
    return event_stream(_Feed(live, connection), request.app.state.drain,
                        live.heartbeat_seconds, LIVE_CONNECTIONS.labels("sse"))


class _Feed:
    """A hub connection as an SSE feed (platform/sse.py): its updates as frames; reconnecting
    clients resume by Last-Event-ID."""

    def __init__(self, live: LiveHub, connection: Connection) -> None:
        self.live, self.connection = live, connection

    async def next(self, heartbeat: float) -> str:
        updates = await self.connection.next(heartbeat)
        return _sse_batch(self.connection, updates) if updates else ""

    def wake(self) -> None:
        self.connection.ready.set()

    def close(self) -> None:
        self.live.close(self.connection)


def _sse_batch(connection: Connection, updates: list[Update]) -> str:
    """The frames of one wake-up. Only the last public frame carries the cursor (`id:`):
    a browser keeps the last id it saw, and building it once per batch keeps a 100-SKU
    connection's frames small."""
    overflow = "event: overflow\ndata: {}\n\n" if connection.mailbox.overflowed else ""
    connection.mailbox.overflowed = False
    last = max((i for i, u in enumerate(updates) if u.topic == model.PUBLIC_TOPIC), default=-1)
    cursor = f"id: {model.encode_cursor(connection.mailbox.sent)}\n" if last >= 0 else ""
    return overflow + "".join(f"{cursor if i == last else ''}event: {u.topic}\ndata: {u.json}\n\n"
                              for i, u in enumerate(updates))


# -- WebSocket -------------------------------------------------------------------------------


class WsCommand(BaseModel):
    op: Annotated[str, StringConstraints(pattern="^(subscribe|unsubscribe)$")]
    skus: list[Sku] = Field(default_factory=list, max_length=MAX_SKUS)
    stream: Annotated[str, StringConstraints(pattern="^(reservations|ledger)$")] | None = None


@router.websocket("/v1/ws")
async def websocket(socket: WebSocket, token: str | None = None) -> None:
    """Send `{"op": "subscribe"|"unsubscribe", "skus": [...]}` for stock, or
    `{"op": "subscribe", "stream": "reservations"|"ledger"}` with a staff `?token=`.
    Updates arrive as `{"topic", "key", "data"}`; errors as `{"error", "field", "reason"}`."""
    principal = _principal(socket.app.state.tokens, token)
    await socket.accept()
    live: LiveHub = socket.app.state.live
    drain: Drain = socket.app.state.drain
    connection = Connection()
    LIVE_CONNECTIONS.labels("ws").inc()
    writer = asyncio.create_task(_ws_writer(socket, connection, live.heartbeat_seconds, drain))
    try:
        with drain.track(connection.ready.set):  # the writer closes with 1012 when told
            while True:
                await _ws_command(socket, live, connection, principal,
                                  await socket.receive_text())
    except WebSocketDisconnect:
        pass
    except RuntimeError:  # an answer to a command raced the writer's close: nothing to send
        if not drain.closing:
            raise
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        live.close(connection)
        LIVE_CONNECTIONS.labels("ws").dec()


def _principal(tokens: TokenAuthority, token: str | None) -> Principal | None:
    if not token:
        return None
    try:
        return tokens.verify(token)
    except Exception:
        return None


async def _ws_command(socket: WebSocket, live: LiveHub, connection: Connection,
                      principal: Principal | None, text: str) -> None:
    try:
        command = WsCommand.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        await socket.send_json({"error": "invalid-command",
                                "field": ".".join(str(p) for p in first["loc"]) or "body",
                                "reason": first["msg"]})
        return
    if command.stream is not None:
        if principal is None or principal.role not in STAFF:
            await socket.send_json({"error": "forbidden", "field": "stream",
                                    "reason": "staff streams need a staff token (?token=)"})
            return
        if command.op == "subscribe":
            live.follow(connection, command.stream)
        else:
            live.unfollow(connection, command.stream)
    if command.op == "unsubscribe":
        live.unwatch(connection, command.skus)
        return
    try:
        await live.watch(connection, command.skus)
    except NotFound as exc:
        await socket.send_json({"error": "not-found", "field": "skus", "reason": exc.detail})


async def _ws_writer(socket: WebSocket, connection: Connection, heartbeat: float,
                     drain: Drain) -> None:
    while not drain.closing:
        updates = await connection.next(heartbeat)
        if not updates:
            if not drain.closing:
                await socket.send_json({"topic": "ping"})
            continue
        for update in updates:
            message: dict[str, Any] = {"topic": update.topic, "key": update.key,
                                       "data": update.body}
            await socket.send_json(message)
    # The process is stopping: 1012 tells the client to reconnect (to another process).
    await socket.close(code=RESTART_CLOSE_CODE, reason=RESTART_REASON)
