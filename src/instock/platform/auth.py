"""JWT bearer tokens and roles. Routes declare who may call them with `requires(...)`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from instock.platform.db import utcnow
from instock.platform.errors import Forbidden, Unauthorized


class Role(StrEnum):
    ADMIN = "admin"
    MERCHANDISER = "merchandiser"
    INVENTORY = "inventory"
    FULFILMENT = "fulfilment"
    SUPPORT = "support"
    SERVICE = "service"
    CUSTOMER = "customer"


STAFF = frozenset(Role) - {Role.CUSTOMER}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role

    @property
    def is_customer(self) -> bool:
        return self.role is Role.CUSTOMER

    def assert_acts_for(self, customer_id: str | None) -> None:
        """A customer may only act for itself; staff may act for anyone."""
        if self.is_customer and customer_id != self.subject:
            raise Forbidden("a customer may only act for itself")


class TokenAuthority:
    """Mints and checks HS256 tokens with one secret."""

    algorithm = "HS256"

    # Tokens already verified, until they expire: a buyer's token comes back on every request
    # (and twice on one with an Idempotency-Key), and HS256 verification is a tenth of a
    # reservation's cost. Bounded; the oldest are forgotten first.
    CACHE_SIZE = 10_000

    def __init__(self, secret: str, issuer: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._issuer = issuer
        self._ttl = timedelta(seconds=ttl_seconds)
        self._verified: dict[str, tuple[Principal, float]] = {}

    def mint(self, role: Role, subject: str | None = None) -> str:
        now = utcnow()
        claims = {"sub": subject or f"{role.value}-user", "role": role.value, "iss": self._issuer,
                  "iat": now, "exp": now + self._ttl}
        return jwt.encode(claims, self._secret, algorithm=self.algorithm)

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None and time.time() < known[1]:
            return known[0]
        try:
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                issuer=self._issuer, options={"require": ["exp", "sub", "role"]})
            principal = Principal(subject=str(claims["sub"]), role=Role(claims["role"]))
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        if len(self._verified) >= self.CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, float(claims["exp"]))
        return principal


def load_or_create_secret(configured: str | None, state_dir: Path) -> str:
    """The configured secret, else one created on first run and kept under the state dir."""
    if configured:
        return configured
    path = state_dir / "jwt.key"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


# Declared so the OpenAPI document (and /docs) show the bearer scheme; we raise our own 401.
_bearer = HTTPBearer(auto_error=False)


def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send Authorization: Bearer <token>")
    authority: TokenAuthority = request.app.state.tokens
    return authority.verify(credentials.credentials)


def requires(*roles: Role) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency admitting only the given roles (admin always)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        principal = principal_of(request, credentials)
        if principal.role not in allowed:
            raise Forbidden(f"role {principal.role.value} may not do this")
        request.state.principal = principal
        return principal

    return dependency
