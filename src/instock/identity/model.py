"""API clients (services and integrations) and their credentials: the OAuth 2.0
client-credentials grant's rules, as pure functions.

A client holds a secret (shown once, stored only as a scrypt hash) and the scopes it may ask
for; a scope is the name of the role a token for it carries. Admin and customer are not scopes:
a machine never gets every right, nor acts as a shopper.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

SCOPES = ("service", "inventory", "fulfilment", "merchandiser", "support")
# scrypt's cost: 2^14 x 8 x 1 is about 16 MiB and ~50 ms here; a stolen table of hashes costs
# an attacker as much per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SECRET_PREFIX = "ics_"  # noqa: S105 - marks a client secret (secret scanners look for it)


class ClientError(Exception):
    """A grant refused; `error` is the RFC 6749 error code, `field` what was wrong."""

    def __init__(self, error: str, field: str, reason: str) -> None:
        super().__init__(reason)
        self.error, self.field, self.reason = error, field, reason


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def secret_matches(secret: str, stored: str) -> bool:
    """Whether `secret` is the one `stored` was hashed from (compared in constant time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n),
                               r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, base64.b64decode(digest))


@functools.cache
def _nobody() -> str:
    return hash_secret("", salt=bytes(16))


def scopes(asked: list[str]) -> tuple[str, ...]:
    """The scopes a new client may be given: known ones, at least one, no repeats."""
    unknown = sorted(set(asked) - set(SCOPES))
    if unknown or not asked:
        raise ClientError("invalid_scope", "scopes",
                          f"give one or more of {', '.join(SCOPES)}"
                          + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return tuple(dict.fromkeys(asked))


def grant(client: Client | None, secret: str, asked: str | None) -> str:
    """The scope a token is granted to a client presenting `secret` and asking for `asked`
    (one scope; none: the client's first). Raises ClientError."""
    # One answer, in the same time, for an unknown client and a wrong secret: no probing for
    # client ids (an unknown one is checked against a hash of nothing).
    matches = secret_matches(secret, client.secret_hash if client else _nobody())
    if client is None or not matches:
        raise ClientError("invalid_client", "client_secret", "unknown client or wrong secret")
    if client.revoked:
        raise ClientError("invalid_client", "client_id", "this client was revoked")
    wanted = (asked or "").split()
    if len(wanted) > 1:
        raise ClientError("invalid_scope", "scope", "ask for one scope per token")
    scope = wanted[0] if wanted else client.scopes[0]
    if scope not in client.scopes:
        raise ClientError("invalid_scope", "scope",
                          f"this client may ask for {', '.join(client.scopes)}")
    return scope
