"""Queue tickets and admission passes as signed JWTs (HS256, the house's JWT library), with a
key of their own derived from the token secret (as unsubscribe tokens are): one secret to keep,
and neither kind is ever valid as a bearer token, nor one kind as the other (each has its own
audience). Tamper-proof and checkable by any process that holds the secret, without a lookup."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from instock.drops import bots, model

TICKET_AUDIENCE = "instock-drop-ticket"
ADMISSION_AUDIENCE = "instock-drop-pass"
CHALLENGE_AUDIENCE = "instock-drop-challenge"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "drop"]


class BadToken(ValueError):
    """A ticket or pass that does not verify; `reason` says why, for the problem document."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def drops_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"instock drop tokens v1", hashlib.sha256).digest()


class DropTokens:
    def __init__(self, secret: str, issuer: str, *, pass_ttl_seconds: float,
                 ticket_ttl_seconds: float) -> None:
        self._key = drops_key(secret)
        self.issuer = issuer
        self.pass_ttl = timedelta(seconds=pass_ttl_seconds)
        self.ticket_ttl = timedelta(seconds=ticket_ttl_seconds)

    def _encode(self, audience: str, claims: dict[str, Any]) -> str:
        return jwt.encode({"iss": self.issuer, "aud": audience, **claims}, self._key,
                          algorithm="HS256")

    def _decode(self, audience: str, token: str, what: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=["HS256"], audience=audience, issuer=self.issuer,
                options={"require": _REQUIRED})
        except jwt.ExpiredSignatureError:
            raise BadToken(f"the {what} has expired") from None
        except jwt.PyJWTError:
            # Forged, altered, of the other kind, or not a token at all: all one to the caller.
            raise BadToken(f"not a genuine {what}") from None
        return claims

    def ticket(self, claims: model.TicketClaims, now: datetime) -> str:
        return self._encode(TICKET_AUDIENCE, {
            "sub": claims.customer_id, "drop": claims.drop_id, "tid": claims.ticket_id,
            "iat": now, "exp": now + self.ticket_ttl})

    def read_ticket(self, token: str) -> model.TicketClaims:
        claims = self._decode(TICKET_AUDIENCE, token, "ticket")
        if "tid" not in claims:
            raise BadToken("not a genuine ticket")
        return model.TicketClaims(str(claims["drop"]), str(claims["sub"]), str(claims["tid"]))

    def pass_for(self, drop_id: str, customer_id: str, now: datetime) -> model.PassClaims:
        return model.PassClaims(drop_id, customer_id, now + self.pass_ttl)

    def admission_pass(self, claims: model.PassClaims, now: datetime) -> str:
        return self._encode(ADMISSION_AUDIENCE, {"sub": claims.customer_id, "drop": claims.drop_id,
                                            "iat": now, "exp": claims.expires_at})

    def read_pass(self, token: str) -> model.PassClaims:
        claims = self._decode(ADMISSION_AUDIENCE, token, "pass")
        return model.PassClaims(str(claims["drop"]), str(claims["sub"]),
                                datetime.fromtimestamp(int(claims["exp"]), tz=UTC))

    def challenge(self, drop_id: str, customer_id: str, difficulty: int, now: datetime,
                  ttl: timedelta, nonce: str) -> str:
        """A proof-of-work challenge for this shopper and drop (drops/bots.py): the client
        hashes this very string with its solution. `nonce` (random, from the caller) makes
        each one different, so no solution is worth keeping."""
        return self._encode(CHALLENGE_AUDIENCE, {
            "sub": customer_id, "drop": drop_id, "dif": difficulty, "jti": nonce,
            "iat": now, "exp": now + ttl})

    def read_challenge(self, token: str) -> bots.Challenge:
        claims = self._decode(CHALLENGE_AUDIENCE, token, "challenge")
        if not isinstance(claims.get("dif"), int):
            raise BadToken("not a genuine challenge")
        return bots.Challenge(str(claims["drop"]), str(claims["sub"]), int(claims["dif"]),
                              datetime.fromtimestamp(int(claims["exp"]), tz=UTC))

    def client_key(self, address: str) -> str:
        """A keyed hash of a client address: shoppers sharing an address can be counted
        without the address being stored."""
        return hmac.new(self._key, f"client {address}".encode(), hashlib.sha256).hexdigest()[:32]

    def fingerprint_key(self, fingerprint: str) -> str:
        """A keyed hash of a payment method or address fingerprint: entries sharing one are
        found without the value being stored."""
        return hmac.new(self._key, f"fingerprint {fingerprint}".encode(),
                        hashlib.sha256).hexdigest()[:32]
