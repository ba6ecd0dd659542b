"""Roles on routes: a route declares who may call it with `requires(...)`; the bearer token is
verified by the app's TokenAuthority (platform/tokens.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from instock.platform.errors import Forbidden, Unauthorized
from instock.platform.principal import STAFF, Principal, Role
from instock.platform.tokens import TokenAuthority

__all__ = ["STAFF", "Principal", "Role", "TokenAuthority", "load_or_create_secret",
           "principal_of", "requires"]


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
