"""`/graphql` over HTTP (GraphiQL on GET in a browser) and WebSocket (`graphql-transport-ws`
and the legacy `graphql-ws`), with the caller taken from the same bearer tokens as REST:
the `Authorization` header on HTTP, `{"Authorization": "Bearer …"}` in `connection_init`."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry import Schema
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from instock.platform.auth import TokenAuthority
from instock.platform.drain import RESTART_CLOSE_CODE, RESTART_REASON, Drain
from instock.platform.errors import InstockError
from instock.platform.graphql.context import GraphContext, principal_from
from instock.platform.graphql.errors import code_of


async def context_of(connection: HTTPConnection) -> GraphContext:
    """A fresh context (and so fresh DataLoaders) per request or WebSocket connection. A bad
    token on HTTP is a 401 problem+json, as on REST."""
    tokens: TokenAuthority = connection.app.state.tokens
    header = connection.headers.get("authorization")
    http = connection.scope["type"] == "http"
    # Results are reused on HTTP only: a WebSocket's context outlives its operations.
    return GraphContext(connection.app.state, principal_from(header, tokens) if http else None,
                        remember=http,
                        results=connection.app.state.graphql_results if http else None)


class InstockGraphQLRouter(GraphQLRouter[GraphContext, None]):
    def __init__(self, schema: Schema, **options: Any) -> None:
        super().__init__(schema, context_getter=context_of,
                         subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,
                                                 GRAPHQL_WS_PROTOCOL), **options)

    async def on_ws_connect(self, context: GraphContext) -> UnsetType | dict[str, object] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("Authorization") or params.get("authorization")
        request = context.request
        try:
            tokens: TokenAuthority = request.app.state.tokens  # type: ignore[union-attr]
            context.authenticate(str(authorization) if authorization else None, tokens)
        except InstockError as exc:
            raise ConnectionRejectionError({"code": code_of(exc.slug),
                                            "reason": exc.detail}) from exc
        return UNSET

    async def run(  # type: ignore[override]  # one body for strawberry's two overloads
            self, request: Request | WebSocket, context: GraphContext = UNSET,
            root_value: None = UNSET) -> Response | WebSocket:
        """A WebSocket is registered with the process's drain for its life: a stopping process
        closes it with 1012 "service restart" (its subscriptions end with it), and the
        client reconnects through the load balancer to a process that stays."""
        if not isinstance(request, WebSocket):
            return await super().run(request, context, root_value)
        socket = request
        drain: Drain = socket.app.state.drain

        async def close() -> None:
            await socket.close(code=RESTART_CLOSE_CODE, reason=RESTART_REASON)

        with drain.track(close):
            return await super().run(socket, context, root_value)
