"""API clients: registered by an admin, granted short-lived tokens for their secret
(OAuth 2.0 client credentials), revoked at once in this process and within
`revocation_poll_seconds` in every other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from instock.identity import model, store
from instock.identity.model import Client, ClientError
from instock.platform.db import Database, utcnow
from instock.platform.errors import NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.platform.principal import Role
from instock.platform.tokens import TokenAuthority

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_in: int
    scope: str


class IdentityService:
    def __init__(self, db: Database, tokens: TokenAuthority, *, token_ttl_seconds: int = 900,
                 revocation_poll_seconds: float = 2.0,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db, self.tokens = db, tokens
        self.token_ttl = token_ttl_seconds
        self.poll = revocation_poll_seconds
        self.clock = clock

    async def register(self, name: str, scopes: list[str]) -> tuple[Client, str]:
        """A new client and its secret, which is shown this once and stored only hashed."""
        try:
            granted = model.scopes(scopes)
        except ClientError as exc:
            raise ValidationFailed(exc.field, exc.reason) from exc
        secret = model.new_secret()
        # scrypt is slow on purpose: off the event loop.
        hashed = await asyncio.to_thread(model.hash_secret, secret)
        client = Client(f"cli_{new_id().replace('-', '')}", name, granted, hashed, self.clock())
        async with self.db.write() as conn:
            await store.insert_client(conn, client)
        return client, secret

    async def clients(self) -> list[Client]:
        async with self.db.read() as conn:
            return await store.all_clients(conn)

    async def revoke(self, client_id: str) -> Client:
        async with self.db.write() as conn:
            if not await store.revoke(conn, client_id, self.clock()):
                raise NotFound(f"no API client {client_id}")
            client = await store.get_client(conn, client_id)
        assert client is not None
        self.tokens.revoked_clients.add(client_id)  # here at once; elsewhere by the poll
        log.info("api_client_revoked", client=client_id)
        return client

    async def issue(self, client_id: str, secret: str, scope: str | None) -> Issued:
        """A token for a client presenting its secret. Raises ClientError."""
        async with self.db.read() as conn:
            client = await store.get_client(conn, client_id)
        granted = await asyncio.to_thread(model.grant, client, secret, scope)
        assert client is not None  # grant refuses an unknown client
        token = self.tokens.mint(Role(granted), f"client:{client.id}",
                                 ttl_seconds=self.token_ttl,
                                 claims={"cid": client.id, "scope": granted})
        return Issued(token, self.token_ttl, granted)

    async def follow_revocations(self) -> None:
        """Keep this process's set of revoked clients in step with the database (a revocation
        in another process reaches this one within a poll)."""
        while True:
            try:
                async with self.db.read() as conn:
                    revoked = await store.revoked_ids(conn)
                self.tokens.revoked_clients |= revoked
            except Exception:
                log.warning("revocations_unread", exc_info=True)
            await asyncio.sleep(self.poll)
