"""Identity routes: the OAuth 2.0 token endpoint (client credentials), API clients, and the
public keys that verify our tokens."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from instock.identity.model import SCOPES, Client, ClientError
from instock.identity.service import IdentityService
from instock.platform.auth import Principal, requires
from instock.platform.errors import (
    NotFound,
    problem_document,
    problem_response,
    problem_responses,
)

router = APIRouter(tags=["identity"], responses=problem_responses(400, 401, 403, 422))
ADMIN = requires()  # admin only: a client is a key to the house
ClientId = Annotated[str, Path(pattern=r"^cli_[0-9a-f]{32}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


async def service(request: Request) -> IdentityService:
    svc: IdentityService = request.app.state.identity
    return svc


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES), description=(
        f"roles its tokens may carry, one per token: {', '.join(SCOPES)}"))


class ClientOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ClientCreated(ClientOut):
    client_secret: str = Field(description="shown this once; only its hash is kept")


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme's name (RFC 6750)
    expires_in: int
    scope: str


def _out(client: Client) -> dict[str, Any]:
    return {"id": client.id, "name": client.name, "scopes": list(client.scopes),
            "created_at": client.created_at, "revoked_at": client.revoked_at}


@router.post("/v1/oauth/token", response_model=TokenOut, openapi_extra={"requestBody": {
    "required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["grant_type"], "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": {"type": "string"}, "client_secret": {"type": "string"},
            "scope": {"type": "string"}}}}}}})
async def token(request: Request,
                identity: IdentityService = Depends(service)) -> TokenOut | JSONResponse:
    """The client-credentials grant (RFC 6749 §4.4): a client's id and secret, in the form or
    as HTTP Basic, for a short-lived bearer token with one of its scopes as its role. Errors
    are problem+json that also carry RFC 6749's `error` and `error_description`."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"),
                          keep_blank_values=True))
    basic = _basic(request.headers.get("authorization"))
    client_id = basic[0] if basic else form.get("client_id", "")
    secret = basic[1] if basic else form.get("client_secret", "")
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "grant_type",
                            "only client_credentials is granted here")
    if not client_id or not secret:
        return _oauth_error(400, "invalid_request", "client_id",
                            "send client_id and client_secret (in the form or as Basic)")
    try:
        issued = await identity.issue(client_id[:200], secret[:500], form.get("scope"))
    except ClientError as exc:
        return _oauth_error(401 if exc.error == "invalid_client" else 400, exc.error,
                            exc.field, exc.reason)
    return TokenOut(access_token=issued.access_token, expires_in=issued.expires_in,
                    scope=issued.scope)


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = raw.partition(":")
    return unquote(user), unquote(password)


def _oauth_error(status: int, error: str, field: str, reason: str) -> JSONResponse:
    slug = "invalid-client" if error == "invalid_client" else "invalid-grant-request"
    doc = problem_document(status, slug, "The token request was refused", reason,
                           "/v1/oauth/token", error=error, error_description=reason,
                           errors=[{"field": field, "reason": reason}])
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="instock"'
    return problem_response(doc, headers)


@router.post("/v1/oauth/clients", status_code=201, response_model=ClientCreated)
async def register(body: ClientIn, _: Principal = Depends(ADMIN),
                   identity: IdentityService = Depends(service)) -> dict[str, Any]:
    """Register a service or integration: its secret is in this answer, and never again."""
    client, secret = await identity.register(body.name, body.scopes)
    return {**_out(client), "client_secret": secret}


@router.get("/v1/oauth/clients", response_model=list[ClientOut])
async def clients(_: Principal = Depends(ADMIN),
                  identity: IdentityService = Depends(service)) -> list[dict[str, Any]]:
    return [_out(c) for c in await identity.clients()]


@router.post("/v1/oauth/clients/{client_id}/revoke", response_model=ClientOut,
             responses=problem_responses(404))
async def revoke(client_id: ClientId, _: Principal = Depends(ADMIN),
                 identity: IdentityService = Depends(service)) -> dict[str, Any]:
    """Revoke a client: no new token, and its tokens stop working (at once here, within a few
    seconds in every other process)."""
    return _out(await identity.revoke(client_id))


class JwksOut(BaseModel):
    keys: list[dict[str, Any]] = Field(description="public JWKs, current first (RFC 7517)")


@router.get("/.well-known/jwks.json", tags=["identity"], response_model=JwksOut,
            responses=problem_responses(404))
async def jwks(request: Request) -> JSONResponse:
    """The public keys that verify our tokens (when they are signed with EdDSA or RS256)."""
    found = request.app.state.tokens.jwks()
    if not found["keys"]:
        raise NotFound("tokens are signed with a shared secret here: no public keys")
    return JSONResponse(found, headers={"Cache-Control": "public, max-age=300"})

