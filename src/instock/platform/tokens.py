"""JWT bearer tokens: minted with the current key, verified by the key their `kid` names.

The rules every token meets (`verify`):
- its header names a key we hold (`kid`), and its algorithm is that key's own (pinned per key,
  so `alg: none`, or HS256 "signed" with a public key, never verifies);
- it carries `exp`, `iat`, `iss`, `aud`, `sub` and `role`; `iss` and `aud` are ours; a clock
  skew of at most `leeway_seconds` (bounded to 5 minutes) is forgiven;
- if it was issued to an API client (`cid`), that client is not revoked.

Keys: an HS256 secret (`INSTOCK_JWT_SECRET`, or one made on first run), or an Ed25519/RSA
private key (`INSTOCK_JWT_PRIVATE_KEY_FILE`: EdDSA or RS256), which then signs; keys that
signed before a rotation (`INSTOCK_JWT_PREVIOUS_SECRETS`, `INSTOCK_JWT_PREVIOUS_PUBLIC_KEY_FILES`)
still verify, so two keys are valid during a rollover. Public keys are published as a JWKS
(`/.well-known/jwks.json`) for other services to verify our tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from instock.platform.db import utcnow
from instock.platform.errors import Unauthorized
from instock.platform.principal import Principal, Role

MAX_LEEWAY_SECONDS = 300
DEFAULT_AUDIENCE = "instock-api"


class InvalidToken(Unauthorized):
    """A bearer token that does not verify; `reason` says which rule it broke."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"invalid token: {detail}", reason=reason)
        self.reason = reason


@dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str  # HS256, EdDSA or RS256
    verifying: Any  # the secret, or the public key
    signing: Any = None  # the secret, or the private key; None: it only verifies
    jwk: dict[str, Any] | None = None  # the public JWK of an asymmetric key

    @property
    def public(self) -> bool:
        return self.jwk is not None


def hmac_key(secret: str) -> Key:
    """An HS256 key; its kid is derived from it (every process with the secret agrees)."""
    kid = "hs256-" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    return Key(kid, "HS256", secret, secret)


def private_key(pem: bytes) -> Key:
    """A signing key from a PEM private key: Ed25519 signs EdDSA, RSA (2048 bits or more)
    RS256."""
    loaded = serialization.load_pem_private_key(pem, password=None)
    public = _public_key(loaded.public_key())  # type: ignore[arg-type]
    return Key(public.kid, public.algorithm, public.verifying, loaded, public.jwk)


def public_key(pem: bytes) -> Key:
    """A key that only verifies (a previous key, kept through a rollover)."""
    return _public_key(serialization.load_pem_public_key(pem))  # type: ignore[arg-type]


def _public_key(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> Key:
    if isinstance(key, ed25519.Ed25519PublicKey):
        algorithm, jwk = "EdDSA", json.loads(OKPAlgorithm.to_jwk(key))
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("an RSA signing key needs 2048 bits or more")
        algorithm, jwk = "RS256", json.loads(RSAAlgorithm.to_jwk(key))
    else:
        raise ValueError("token keys are Ed25519 or RSA")
    kid = _thumbprint(jwk)
    return Key(kid, algorithm, key, None, {**jwk, "kid": kid, "alg": algorithm, "use": "sig"})


def _thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint: a key's name that anyone holding its public half can check."""
    members = {"OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not-yet-valid"),
    (jwt.InvalidAudienceError, "audience"),
    (jwt.InvalidIssuerError, "issuer"),
    (jwt.MissingRequiredClaimError, "missing-claim"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.InvalidSignatureError, "signature"),
)


class TokenAuthority:
    """Mints tokens with the current key and verifies them with any key it holds."""

    # Tokens already verified, until they expire: a buyer's token comes back on every request
    # (and twice on one with an Idempotency-Key), and verification is a tenth of a
    # reservation's cost. Bounded; the oldest are forgotten first.
    CACHE_SIZE = 10_000

    def __init__(self, secret: str | None, issuer: str, ttl_seconds: int, *,
                 audience: str = DEFAULT_AUDIENCE, leeway_seconds: float = 30,
                 previous: Iterable[Key] = (), signing: Key | None = None) -> None:
        if signing is None:
            if not secret:
                raise ValueError("a token authority needs a secret or a signing key")
            signing = hmac_key(secret)
        if signing.signing is None:
            raise ValueError("the current key must be able to sign")
        if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"clock skew leeway is 0 to {MAX_LEEWAY_SECONDS} s")
        self.current = signing
        extra = [hmac_key(secret)] if secret and signing.algorithm != "HS256" else []
        self.keys = {k.kid: k for k in (signing, *extra, *previous)}
        self.issuer, self.audience = issuer, audience
        self.leeway = leeway_seconds
        self._ttl = timedelta(seconds=ttl_seconds)
        self.revoked_clients: set[str] = set()  # API clients whose tokens stop working
        self._verified: dict[str, tuple[Principal, float, str | None]] = {}

    def mint(self, role: Role, subject: str | None = None, *, ttl_seconds: int | None = None,
             claims: dict[str, Any] | None = None) -> str:
        now = utcnow()
        ttl = timedelta(seconds=ttl_seconds) if ttl_seconds is not None else self._ttl
        body = {"sub": subject or f"{role.value}-user", "role": role.value, "iss": self.issuer,
                "aud": self.audience, "iat": now, "exp": now + ttl, **(claims or {})}
        return jwt.encode(body, self.current.signing, algorithm=self.current.algorithm,
                          headers={"kid": self.current.kid})

    def verify(self, token: str) -> Principal:
        """The token's principal. Raises InvalidToken."""
        known = self._verified.get(token)
        if known is not None and time.time() < known[1]:
            self._not_revoked(known[2])
            return known[0]
        claims = self._claims(token)
        try:
            principal = Principal(subject=str(claims["sub"]), role=Role(claims["role"]))
        except ValueError as exc:
            raise InvalidToken("role", f"unknown role {claims['role']!r}") from exc
        client = str(claims["cid"]) if "cid" in claims else None
        self._not_revoked(client)
        if len(self._verified) >= self.CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, float(claims["exp"]), client)
        return principal

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed", str(exc)) from exc
        key = self.keys.get(str(header.get("kid")))
        if key is None:
            raise InvalidToken("unknown-key", f"no key named {header.get('kid')!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.verifying, algorithms=[key.algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "role"]})
        except jwt.PyJWTError as exc:
            reason = next((r for kind, r in _REASONS if isinstance(exc, kind)), "malformed")
            raise InvalidToken(reason, str(exc)) from exc
        return claims

    def _not_revoked(self, client: str | None) -> None:
        if client is not None and client in self.revoked_clients:
            raise InvalidToken("revoked", f"API client {client} was revoked")

    def jwks(self) -> dict[str, Any]:
        """The public keys, current first (none for HS256 alone: its key is a secret)."""
        return {"keys": [k.jwk for k in self.keys.values() if k.jwk is not None]}
