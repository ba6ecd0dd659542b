"""The one idempotency mechanism: an `Idempotency-Key` on any mutating request.

The first response to a key is stored; a retry with the same key and the same request gets that
response again (marked `Idempotent-Replayed: true`), the same key with another request is
rejected (422), and a retry while the first is still running gets 409. Keys are per caller (the
token's subject), so two clients cannot collide.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform.auth import TokenAuthority
from instock.platform.db import Database, UTCDateTime, dialect_insert, metadata, utcnow
from instock.platform.errors import (
    PROBLEM_JSON,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InstockError,
    Unauthorized,
    ValidationFailed,
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
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, db: Database, tokens: TokenAuthority) -> None:
        self.app, self.db, self.tokens = app, db, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get(HEADER)
        subject = None if key is None else self._subject(headers.get("authorization", ""))
        if key is None or subject is None:  # no key, or no valid caller: nothing to remember
            return await self.app(scope, receive, send)
        if not 1 <= len(key) <= 128:
            return await _send_problem(send, ValidationFailed("Idempotency-Key",
                                                              "must be 1 to 128 characters"))
        body = await _read_body(receive)
        scope_id = hashlib.sha256(f"{subject}\0{key}".encode()).hexdigest()
        request_hash = hashlib.sha256(
            b"\0".join([scope["method"].encode(), scope["path"].encode(), body])).hexdigest()
        try:
            stored = await self._claim(scope_id, request_hash)
        except InstockError as exc:
            return await _send_problem(send, exc)
        if stored is not None:
            return await _send_stored(send, stored)
        await self._run_and_store(scope, body, send, scope_id, key)

    def _subject(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return self.tokens.verify(token.strip()).subject
        except Unauthorized:
            return None

    async def _claim(self, scope_id: str, request_hash: str) -> dict[str, Any] | None:
        """Stored response for a finished twin, else claim the key for this request."""
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(idempotency_keys).where(
                idempotency_keys.c.scope == scope_id))).first()
            if row is not None:
                if row.request_hash != request_hash:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used for a different request")
                if row.done:
                    return dict(row._mapping)
                if utcnow() - row.created_at < IN_PROGRESS_TIMEOUT:
                    raise IdempotencyInProgress("the first request with this key is still running")
                await conn.execute(idempotency_keys.delete().where(
                    idempotency_keys.c.scope == scope_id))
            # Two processes may both have seen no row: the insert decides which one claimed it.
            claimed = await conn.scalar(
                dialect_insert(conn, idempotency_keys).values(
                    scope=scope_id, request_hash=request_hash, done=False, created_at=utcnow())
                .on_conflict_do_nothing().returning(idempotency_keys.c.scope))
            if claimed is None:
                raise IdempotencyInProgress("the first request with this key is still running")
        return None

    async def _run_and_store(self, scope: Scope, body: bytes, send: Send, scope_id: str,
                             key: str) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def replay_receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            # Held back until stored: a client that retries after seeing the response must
            # find it finished, not "in progress".
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope.setdefault("state", {})["idempotency_key"] = key
        try:
            await self.app(scope, replay_receive, capture)
        finally:
            body = b"".join(chunks)
            await self._finish(scope_id, start, body)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def _finish(self, scope_id: str, start: dict[str, Any], body: bytes) -> None:
        status = start.get("status", 500)
        where = idempotency_keys.c.scope == scope_id
        async with self.db.write() as conn:
            if status >= 500:  # the server failed: let the client try again with the same key
                await conn.execute(idempotency_keys.delete().where(where))
                return
            headers = [[k.decode(), v.decode()] for k, v in start.get("headers", [])
                       if k.lower() in (b"content-type", b"etag", b"location")]
            await conn.execute(idempotency_keys.update().where(where).values(
                done=True, status_code=status, headers=headers, body=body.decode()))


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


async def _send_problem(send: Send, exc: InstockError) -> None:
    await _send(send, exc.status, [(b"content-type", PROBLEM_JSON.encode())],
                json.dumps(exc.problem()).encode())


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
