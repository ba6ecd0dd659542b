"""Token rules (issue 20): pinned algorithms, required claims, bounded clock skew, keys by
`kid` with rotation, public keys as a JWKS, and revoked API clients. Every forged token is
refused with the rule it broke."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from instock.platform.principal import Role
from instock.platform.tokens import (
    InvalidToken,
    TokenAuthority,
    hmac_key,
    private_key,
    public_key,
)

SECRET = "a-test-secret-long-enough-for-hs256-keys-0123"


def pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, str], claims: dict[str, object], key: bytes) -> str:
    """A token signed by hand with HMAC-SHA256 over whatever the header says."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def reason(authority: TokenAuthority, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        authority.verify(token)
    return refused.value.reason


def test_a_minted_token_names_its_key_and_verifies() -> None:
    tokens = TokenAuthority(SECRET, "instock", 60)
    token = tokens.mint(Role.INVENTORY, "wh-bot")
    assert jwt.get_unverified_header(token)["kid"] == hmac_key(SECRET).kid
    principal = tokens.verify(token)
    assert (principal.subject, principal.role) == ("wh-bot", Role.INVENTORY)


def test_forged_tokens_are_refused_with_the_rule_they_broke() -> None:
    tokens = TokenAuthority(SECRET, "instock", 60)
    good = jwt.decode(tokens.mint(Role.ADMIN), options={"verify_signature": False})
    kid = hmac_key(SECRET).kid
    unsigned = (f"{b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}."
                f"{b64(json.dumps(good).encode())}.")
    assert reason(tokens, unsigned) == "algorithm"
    assert reason(tokens, TokenAuthority(SECRET, "instock", -100).mint(Role.ADMIN)) == "expired"
    assert reason(tokens, TokenAuthority(SECRET, "instock", 60, audience="other-api")
                  .mint(Role.ADMIN)) == "audience"
    assert reason(tokens, TokenAuthority(SECRET, "evil", 60).mint(Role.ADMIN)) == "issuer"
    assert reason(tokens, TokenAuthority(SECRET + "x", "instock", 60)
                  .mint(Role.ADMIN)) == "unknown-key"
    forged = handmade({"alg": "HS256", "kid": kid}, {**good, "role": "admin"}, b"guess")
    assert reason(tokens, forged) == "signature"
    no_audience = {k: v for k, v in good.items() if k != "aud"}
    assert reason(tokens, handmade({"alg": "HS256", "kid": kid}, no_audience,
                                   SECRET.encode())) == "missing-claim"
    assert reason(tokens, "not.a.token") == "malformed"


def test_a_small_clock_skew_is_forgiven_and_no_more() -> None:
    tokens = TokenAuthority(SECRET, "instock", 60, leeway_seconds=30)
    assert tokens.verify(TokenAuthority(SECRET, "instock", -10).mint(Role.ADMIN))
    assert reason(tokens, TokenAuthority(SECRET, "instock", -45).mint(Role.ADMIN)) == "expired"
    with pytest.raises(ValueError, match="leeway"):
        TokenAuthority(SECRET, "instock", 60, leeway_seconds=3600)


def test_hs256_signed_with_the_public_key_does_not_pass_for_eddsa() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    tokens = TokenAuthority(None, "instock", 60, signing=private_key(pem(key)))
    good = tokens.mint(Role.SUPPORT, "s-1")
    assert jwt.get_unverified_header(good)["alg"] == "EdDSA"
    assert tokens.verify(good).role is Role.SUPPORT
    claims = jwt.decode(good, options={"verify_signature": False})
    # The classic confusion: the public key, which anyone may have, used as an HMAC secret.
    confused = handmade({"alg": "HS256", "kid": tokens.current.kid},
                        {**claims, "role": "admin"}, public_pem(key))
    assert reason(tokens, confused) == "algorithm"


def test_two_keys_verify_during_a_rollover_and_the_jwks_publishes_both() -> None:
    old, new = ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    before = TokenAuthority(None, "instock", 60, signing=private_key(pem(old)))
    during = TokenAuthority(None, "instock", 60, signing=private_key(pem(new)),
                            previous=[public_key(public_pem(old))])
    issued_before = before.mint(Role.SERVICE, "svc")
    assert during.verify(issued_before).subject == "svc"  # still valid after the rotation
    issued_after = during.mint(Role.SERVICE, "svc")
    assert jwt.get_unverified_header(issued_after)["alg"] == "RS256"
    assert reason(before, issued_after) == "unknown-key"
    keys = during.jwks()["keys"]
    assert [k["kid"] for k in keys] == [during.current.kid, before.current.kid]
    # Anyone can verify our tokens with the published keys alone.
    published = {k["kid"]: jwt.PyJWK(k) for k in keys}
    for token in (issued_before, issued_after):
        header = jwt.get_unverified_header(token)
        jwt.decode(token, published[header["kid"]], algorithms=[header["alg"]],
                   audience="instock-api")
    # An HS256 secret is never published, and a previous secret still verifies.
    assert TokenAuthority(SECRET, "instock", 60).jwks() == {"keys": []}
    rolled = TokenAuthority("a-new-secret-long-enough-for-hs256-0123456", "instock", 60,
                            previous=[hmac_key(SECRET)])
    assert rolled.verify(TokenAuthority(SECRET, "instock", 60).mint(Role.ADMIN))


def test_a_revoked_clients_tokens_stop_working_even_when_seen_before() -> None:
    tokens = TokenAuthority(SECRET, "instock", 60)
    token = tokens.mint(Role.SERVICE, "client:cli_1", claims={"cid": "cli_1"})
    assert tokens.verify(token).subject == "client:cli_1"  # now cached
    tokens.revoked_clients.add("cli_1")
    assert reason(tokens, token) == "revoked"


def test_weak_rsa_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="2048"):
        private_key(pem(rsa.generate_private_key(65537, 1024)))
