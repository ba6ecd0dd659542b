"""The one idempotency mechanism: an `Idempotency-Key` on any mutating request.

The first response to a key is stored; a retry with the same key and the same request gets that
response again (marked `Idempotent-Replayed: true`), the same key with another request is
rejected (422), and a retry while the first is still running gets 409. Keys are per caller (the
token's subject), so two clients cannot collide.

The response is stored in the transaction of the request's change (held.py): a server that dies
has committed both or neither, so a retry finds the answer to the committed change or runs the
request afresh, never "in progress" for a request that died and never twice. Of two twins (one
key, two processes) whose changes both got that far, the second finds the first's row when it
stores its own, and rolls back. Work in several transactions (a checkout's saga) claims the key
with its first commit and stores the response after its last, unless it keys its own records
(`Database.durable(rerunnable=True)`). A reservation's change is made by a group commit for many
requests at once; the reservation keeps the key, so a retry finds it there.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform import held
from instock.platform.auth import TokenAuthority
from instock.platform.db import Database, UTCDateTime, dialect_insert, metadata, utcnow
from instock.platform.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InstockError,
    Unauthorized,
    ValidationFailed,
    send_problem,
)

HEADER = "idempotency-key"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A request that died mid-flight must not lock its key forever.
IN_PROGRESS_TIMEOUT = timedelta(seconds=60)

idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("headers", sa.JSON, nullable=True),
    sa.Column("body", sa.Text, nullable=True, info={"personal": True}),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, db: Database, tokens: TokenAuthority,
                 unstored: tuple[str, ...] = ()) -> None:
        self.app, self.db, self.tokens = app, db, tokens
        # Paths whose responses carry personal data: stored here they would sit in plain text,
        # out of reach of crypto-shredding. Their routes must be idempotent by themselves.
        self.unstored = unstored

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in MUTATING
                or (self.unstored and scope["path"].startswith(self.unstored))):
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get(HEADER)
        subject = None if key is None else self._subject(headers.get("authorization", ""))
        if key is None or subject is None:  # no key, or no valid caller: nothing to remember
            return await self.app(scope, receive, send)
        if not 1 <= len(key) <= 128:
            return await send_problem(send, ValidationFailed("Idempotency-Key",
                                                              "must be 1 to 128 characters"))
        body = await _read_body(receive)
        request = _Keyed(hashlib.sha256(f"{subject}\0{key}".encode()).hexdigest(),
                         hashlib.sha256(b"\0".join(
                             [scope["method"].encode(), scope["path"].encode(), body])).hexdigest())
        try:
            stored = await self._stored(request)
        except InstockError as exc:
            return await send_problem(send, exc)
        if stored is not None:
            return await _send_stored(send, stored)
        await self._run_and_store(scope, body, send, request, key)

    def _subject(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return self.tokens.verify(token.strip()).subject
        except Unauthorized:
            return None

    async def _stored(self, request: _Keyed) -> dict[str, Any] | None:
        """The stored response of a finished twin; raises if the key cannot be used now."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(idempotency_keys).where(
                idempotency_keys.c.scope == request.scope))).first()
        if row is None:
            return None
        if row.request_hash != request.request_hash:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        if row.done:
            return dict(row._mapping)
        if utcnow() - row.created_at < IN_PROGRESS_TIMEOUT:
            raise IdempotencyInProgress("the first request with this key is still running")
        # Its request died between two of its steps' transactions: free the key for a retry.
        async with self.db.write() as conn:
            await conn.execute(idempotency_keys.delete().where(
                idempotency_keys.c.scope == request.scope, idempotency_keys.c.done.is_(False)))
        return None

    async def _run_and_store(self, scope: Scope, body: bytes, send: Send, request: _Keyed,
                             key: str) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def replay_receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            # Held back until stored: a client that retries after seeing the response must
            # find it stored.
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope.setdefault("state", {})["idempotency_key"] = key
        hold = held.Hold(request.claim)
        try:
            with held.holding(hold):
                await self.app(scope, replay_receive, capture)
        except BaseException:
            await self._fail(hold, request)
            raise
        response = _Response(start.get("status", 500), start.get("headers", []),
                             b"".join(chunks))
        try:
            stored = await self._finish(hold, request, response)
        except InstockError as exc:
            return await send_problem(send, exc)
        if stored is not None:
            return await _send_stored(send, stored)
        await send(start)
        await send({"type": "http.response.body", "body": response.body})

    async def _finish(self, hold: held.Hold, request: _Keyed,
                      response: _Response) -> dict[str, Any] | None:
        """Store the response with the request's change (committing it); a twin's stored
        response instead, if a twin got there first."""
        try:
            if not request.twin_first:
                await self._store(hold, request, response)
                return None
        except IdempotencyInProgress:
            if not request.twin_first:
                raise
        # A twin of this request (same key, maybe on another process) got its row in first:
        # this one's change is rolled back, and the twin's answer is the answer.
        await hold.discard()
        stored = await self._stored(request)
        if stored is None:  # the twin failed and freed the key: the client must try again
            raise IdempotencyInProgress("another request with this key was running")
        return stored

    async def _fail(self, hold: held.Hold, request: _Keyed) -> None:
        """The server failed: its held change goes and the key is free for the retry (a step
        committed before stays: multi-step work resumes or finds it on the retry)."""
        await hold.discard()
        if hold.started:
            async with self.db.write() as conn:
                await conn.execute(idempotency_keys.delete().where(
                    idempotency_keys.c.scope == request.scope))

    async def _store(self, hold: held.Hold, request: _Keyed, response: _Response) -> None:
        if response.status >= 500:
            await self._fail(hold, request)
            return
        if hold.holding:  # with the change: if a twin stored first, this change rolls back
            await hold.settle(functools.partial(request.store, response, update=hold.started))
            return
        # The change, if any, is committed already, or was made for many requests at once (a
        # group commit, which finds a twin's reservation by its key). A twin that stored first
        # has its answer replayed here too: twins decided apart (a refusal for one reason and
        # for another) still answer alike.
        async with self.db.write() as conn:
            await request.store(response, conn, update=hold.started)


@dataclass
class _Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _Keyed:
    """A request with an Idempotency-Key, as the key's row records it."""

    scope: str
    request_hash: str
    twin_first: bool = False  # another request with this key got its row in first

    async def claim(self, conn: AsyncConnection) -> None:
        """The request's first commit records it as started: a twin must not run it again.
        Its response is written with its last."""
        await self._insert(conn, done=False)

    async def store(self, response: _Response, conn: AsyncConnection, *, update: bool) -> None:
        kept = [[k.decode(), v.decode()] for k, v in response.headers
                if k.lower() in (b"content-type", b"etag", b"location")]
        values = {"done": True, "status_code": response.status, "headers": kept,
                  "body": response.body.decode()}
        if update:
            await conn.execute(idempotency_keys.update().where(
                idempotency_keys.c.scope == self.scope).values(**values))
        else:
            await self._insert(conn, **values)

    async def _insert(self, conn: AsyncConnection, **values: Any) -> None:
        # Two processes may both have found no row: the insert decides which one goes on (on
        # PostgreSQL it waits for a twin's uncommitted row, then finds it).
        inserted = await conn.scalar(
            dialect_insert(conn, idempotency_keys).values(
                scope=self.scope, request_hash=self.request_hash, created_at=utcnow(), **values)
            .on_conflict_do_nothing().returning(idempotency_keys.c.scope))
        if inserted is None:
            self.twin_first = True
            raise IdempotencyInProgress("the first request with this key is still running")


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_stored(send: Send, stored: dict[str, Any]) -> None:
    headers = [(k.encode(), v.encode()) for k, v in stored["headers"] or []]
    headers.append((b"idempotent-replayed", b"true"))
    await _send(send, stored["status_code"], headers, stored["body"].encode())


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
