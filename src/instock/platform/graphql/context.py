"""The per-request GraphQL context: who asks, the app's services, one DataLoader per entity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext
from strawberry.types import Info as StrawberryInfo

from instock.platform import http, telemetry, tracing
from instock.platform.auth import Principal, Role, TokenAuthority
from instock.platform.entry_context import EntryContext
from instock.platform.errors import Forbidden, Unauthorized, validation_problem

if TYPE_CHECKING:
    from instock.platform.graphql.results import Results

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)


class GraphContext(BaseContext):
    """Built once per HTTP request or WebSocket connection."""

    def __init__(self, state: Any, principal: Principal | None, *,
                 remember: bool = True, results: Results | None = None) -> None:
        super().__init__()
        self.state = state  # the app's state: its services, as REST routes see them
        self.principal = principal
        # A WebSocket keeps one context for every operation it runs, for as long as it stays
        # open: there loaders only batch what is asked together, and remember nothing.
        self.remember = remember
        self.results = results  # completed results reused across requests (None: none)
        self._loaders: dict[str, DataLoader[Any, Any]] = {}

    def loader(self, name: str,
               load: Callable[[Sequence[K]], Awaitable[Sequence[V]]]) -> DataLoader[K, V]:
        """This request's DataLoader for `name`: every resolver asking for that entity in one
        request shares it, so a page of 50 products costs one batch, not 50 reads."""
        found = self._loaders.get(name)
        if found is None:
            found = self._loaders[name] = DataLoader(load_fn=load, cache=self.remember)
        return found

    def authenticate(self, authorization: str | None, tokens: TokenAuthority) -> None:
        """Take the caller from an `Authorization: Bearer …` value (None: anonymous)."""
        self.principal = principal_from(authorization, tokens)


Info = StrawberryInfo[GraphContext, None]


def principal_from(authorization: str | None, tokens: TokenAuthority) -> Principal | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token>")
    return tokens.verify(token.strip())


def require(info: Info, *roles: Role) -> Principal:
    """The caller, if it holds one of `roles` (admin always may); else Unauthorized/Forbidden,
    rendered as a typed GraphQL error like REST's 401/403."""
    principal = info.context.principal
    if principal is None:
        raise Unauthorized("send Authorization: Bearer <token>")
    if principal.role not in {*roles, Role.ADMIN}:
        raise Forbidden(f"role {principal.role.value} may not do this")
    return principal


def entry_context(info: Info, principal: Principal, reason: str = "") -> EntryContext:
    """The command's who and why, exactly as a REST route builds it."""
    request = info.context.request
    if not isinstance(request, Request) or isinstance(request, WebSocket):
        return EntryContext(actor=f"{principal.role.value}:{principal.subject}", reason=reason,
                            traceparent=tracing.current_traceparent())
    return http.entry_context(request, principal, reason)


def correlation_id(info: Info) -> str | None:
    """The HTTP request's correlation id (none over a WebSocket)."""
    request = info.context.request
    return telemetry.correlation_id(request) if isinstance(request, Request) else None


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Check input with the same pydantic model the REST route uses: the same rules, and a
    refusal naming the same fields (`lines[0].quantity`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc.errors(), located=False) from exc
