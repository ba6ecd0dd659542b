"""API clients and the OAuth 2.0 client-credentials grant (issue 20), over the app's HTTP
routes on a real database: a client's secret is shown once and kept hashed, its token carries
the scope it asked for as its role, a revoked client's tokens stop working (in another process
too), forged tokens are refused with the rule they broke, and the JWKS serves the public key."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from instock.app import create_app
from instock.identity.store import api_clients
from instock.platform.auth import Role, TokenAuthority
from tests.support import TEST_SECRET, make_settings

TOKEN = "/v1/oauth/token"


@contextlib.asynccontextmanager
async def serving(database_url: str, tmp_path: Path, **settings: Any
                  ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url, tmp_path, **settings))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield app, http


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with serving(database_url, tmp_path, oauth_revocation_poll_seconds=0.1) as served:
        yield served


def admin(app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.tokens.mint(Role.ADMIN, 'admin-1')}"}


async def register(app: Any, http: httpx.AsyncClient, scopes: list[str]) -> dict[str, Any]:
    made = await http.post("/v1/oauth/clients", headers=admin(app),
                           json={"name": "warehouse sync", "scopes": scopes})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def grant(http: httpx.AsyncClient, client: dict[str, Any], **form: str) -> httpx.Response:
    return await http.post(TOKEN, data={"grant_type": "client_credentials",
                                        "client_id": client["id"],
                                        "client_secret": client["client_secret"], **form})


async def test_a_client_gets_a_token_with_the_scope_it_asked_for_as_its_role(
        api: tuple[Any, httpx.AsyncClient], database_url: str) -> None:
    app, http = api
    client = await register(app, http, ["inventory", "support"])
    assert client["client_secret"].startswith("ics_")
    listed = (await http.get("/v1/oauth/clients", headers=admin(app))).json()
    assert [c["id"] for c in listed] == [client["id"]]
    assert "client_secret" not in listed[0] and "secret_hash" not in listed[0]
    async with app.state.identity.db.read() as conn:  # only a hash is kept
        stored = (await conn.execute(sa.select(api_clients.c.secret_hash))).scalar_one()
    assert stored.startswith("scrypt$") and client["client_secret"] not in stored

    answer = await grant(http, client)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 900,
                                                                      "inventory")
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["role"], claims["cid"], claims["sub"]) == (
        "inventory", client["id"], f"client:{client['id']}")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    # The role is the scope: inventory may read stock, not manage clients.
    assert (await http.get("/v1/locations", headers=bearer)).status_code == 200
    assert (await http.get("/v1/oauth/clients", headers=bearer)).status_code == 403
    # HTTP Basic works as well as the form; a second scope is asked for by name.
    basic = base64.b64encode(f"{client['id']}:{client['client_secret']}".encode()).decode()
    other = await http.post(TOKEN, data={"grant_type": "client_credentials",
                                         "scope": "support"},
                            headers={"Authorization": f"Basic {basic}"})
    assert other.status_code == 200 and other.json()["scope"] == "support", other.text


@pytest.mark.parametrize(("form", "status", "error", "field"), [
    ({"client_secret": "ics_wrong"}, 401, "invalid_client", "client_secret"),
    ({"client_id": "cli_" + "0" * 32}, 401, "invalid_client", "client_secret"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type", "grant_type"),
    ({"scope": "admin"}, 400, "invalid_scope", "scope"),
    ({"scope": "inventory support"}, 400, "invalid_scope", "scope"),
    ({"client_secret": ""}, 400, "invalid_request", "client_id"),
])
async def test_a_refused_grant_says_why_in_both_problem_and_oauth_terms(
        api: tuple[Any, httpx.AsyncClient], form: dict[str, str], status: int, error: str,
        field: str) -> None:
    app, http = api
    client = await register(app, http, ["inventory", "support"])
    answer = await grant(http, client, **form)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["error"] == error and body["errors"][0]["field"] == field
    assert client["client_secret"] not in answer.text


async def test_a_token_request_as_json_is_refused_at_the_edge(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    _, http = api
    answer = await http.post(TOKEN, json={"grant_type": "client_credentials"})
    assert answer.status_code == 415


async def test_revoking_a_client_stops_its_tokens_here_and_in_another_process(
        api: tuple[Any, httpx.AsyncClient], database_url: str, tmp_path: Path) -> None:
    app, http = api
    client = await register(app, http, ["service"])
    token = (await grant(http, client)).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    async with serving(database_url, tmp_path / "other",
                       oauth_revocation_poll_seconds=0.1) as (_, elsewhere):
        assert (await elsewhere.get("/v1/locations", headers=bearer)).status_code == 200
        revoked = await http.post(f"/v1/oauth/clients/{client['id']}/revoke",
                                  headers=admin(app))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        refused = await http.get("/v1/locations", headers=bearer)  # here: at once
        assert refused.status_code == 401 and refused.json()["reason"] == "revoked"
        for _ in range(50):  # there: within its poll (0.1 s here)
            answer = await elsewhere.get("/v1/locations", headers=bearer)
            if answer.status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert answer.status_code == 401 and answer.json()["reason"] == "revoked"
    again = await grant(http, client)
    assert again.status_code == 401 and again.json()["errors"][0]["field"] == "client_id"


async def test_forged_tokens_get_a_401_naming_the_rule(
        api: tuple[Any, httpx.AsyncClient]) -> None:
    app, http = api
    good = jwt.decode(app.state.tokens.mint(Role.ADMIN), options={"verify_signature": False})
    kid = app.state.tokens.current.kid
    header = base64.urlsafe_b64encode(f'{{"alg":"none","kid":"{kid}"}}'.encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(jwt.api_jws.json.dumps(good).encode()).rstrip(b"=")
    forged = {
        "algorithm": f"{header.decode()}.{payload.decode()}.",
        "expired": TokenAuthority(TEST_SECRET, "instock", -120).mint(Role.ADMIN),
        "audience": TokenAuthority(TEST_SECRET, "instock", 60, audience="x").mint(Role.ADMIN),
        "issuer": TokenAuthority(TEST_SECRET, "other", 60).mint(Role.ADMIN),
        "unknown-key": TokenAuthority(TEST_SECRET + "!", "instock", 60).mint(Role.ADMIN),
    }
    for rule, token in forged.items():
        answer = await http.get("/v1/locations", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (rule, answer.text)
        assert answer.json()["type"].endswith("/unauthorized")
        assert answer.json()["reason"] == rule, (rule, answer.json())


async def test_the_jwks_serves_the_public_key_that_verifies_our_tokens(
        database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path) as (_, http):
        assert (await http.get("/.well-known/jwks.json")).status_code == 404  # HS256 only
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    async with serving(database_url, tmp_path, jwt_private_key_file=key_file) as (app, http):
        keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
        assert [(k["kty"], k["crv"], k["alg"]) for k in keys] == [("OKP", "Ed25519", "EdDSA")]
        token = app.state.tokens.mint(Role.ADMIN, "a")
        jwt.decode(token, jwt.PyJWK(keys[0]), algorithms=["EdDSA"], audience="instock-api")
        assert (await http.get("/v1/locations",
                               headers={"Authorization": f"Bearer {token}"})).status_code == 200
        # HS256 "signed" with the public key anyone can fetch above: refused by algorithm.
        claims = jwt.decode(token, options={"verify_signature": False})
        public_pem = serialization.load_pem_private_key(
            key_file.read_bytes(), password=None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        confused = _hs256(claims | {"sub": "mallory"}, public_pem, keys[0]["kid"])
        refused = await http.get("/v1/locations", headers={"Authorization": f"Bearer {confused}"})
        assert refused.status_code == 401 and refused.json()["reason"] == "algorithm"
        # A token signed with the shared secret still verifies through the rollover.
        old = TokenAuthority(TEST_SECRET, "instock", 60).mint(Role.ADMIN)
        assert (await http.get("/v1/locations",
                               headers={"Authorization": f"Bearer {old}"})).status_code == 200


def _hs256(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """HMAC-SHA256 over a header and claims, by hand (PyJWT refuses a PEM as an HMAC key)."""
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"
