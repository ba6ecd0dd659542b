"""Envelope encryption of personal data, free of I/O (`cryptography` only).

Each data subject (a customer) has a 32-byte data key; every personal field of theirs is
sealed with AES-256-GCM under it. The data key is stored only wrapped (AES-256-GCM again) by a
master key named by its key id (`kid`), so rotating a master key rewraps small keys instead of
re-encrypting every row, and destroying one subject's wrapped key makes all their ciphertexts,
in backups too, unreadable (crypto-shredding).

Associated data binds a field's ciphertext to `table.column` and to the subject: a value copied
into another column or onto another person's row does not open. Lookups (by email) go through
a keyed hash, never through the plain value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1  # the first byte of every sealed value and wrapped key: the layout below
NONCE_BYTES = 12
KEY_BYTES = 32
KID_PATTERN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class PrivacyError(Exception):
    """Something sealed cannot be opened, or a key cannot be had."""


class Undecryptable(PrivacyError):
    """Wrong key, wrong table/column or subject, or a tampered value: AES-GCM's tag fails."""


class UnknownKey(PrivacyError):
    """A data key wrapped under a master key id the keyring does not hold."""


class Shredded(PrivacyError):
    """The subject's data key was destroyed: their personal data can never be read again."""


@dataclass(frozen=True)
class SubjectKey:
    """A subject's data key as stored: wrapped by master key `kid`; `wrapped` None once shredded."""

    subject_id: str
    kid: str | None
    wrapped: bytes | None
    created_at: datetime
    shredded_at: datetime | None = None


def _derive(master: bytes, info: bytes) -> bytes:
    # One master key, separate keys per purpose: wrapping and lookups never share a key.
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


@dataclass(frozen=True)
class MasterKey:
    kid: str
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"master key {self.kid!r} must be {KEY_BYTES} bytes")
        if not self.kid or not set(self.kid) <= KID_PATTERN:
            raise ValueError(f"bad master key id {self.kid!r}")

    @property
    def wrapping_key(self) -> bytes:
        return _derive(self.key, b"instock wrap")

    @property
    def lookup_key(self) -> bytes:
        return _derive(self.key, b"instock lookup")


def normalise(value: str) -> str:
    """What a lookup hashes: case and surrounding spaces do not make another person."""
    return value.strip().lower()


def lookup_hash(key: MasterKey, value: str) -> str:
    return hmac.new(key.lookup_key, normalise(value).encode(), hashlib.sha256).hexdigest()


def _seal(key: bytes, plain: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond a subject's writes
    return bytes([VERSION]) + nonce + AESGCM(key).encrypt(nonce, plain, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[0] != VERSION:
        raise Undecryptable("not a sealed value of a known version")
    try:
        return AESGCM(key).decrypt(sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise Undecryptable("the value does not open here (tampered, moved or wrong key)") \
            from exc


def _wrap_aad(kid: str, subject_id: str) -> bytes:
    return b"instock data key\x00" + kid.encode() + b"\x00" + subject_id.encode()


class Keyring:
    """Master keys by id; the first is current (new and rewrapped keys go under it)."""

    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one master key")
        self.current = keys[0]
        self.keys = {k.kid: k for k in keys}
        if len(self.keys) != len(keys):
            raise ValueError("master key ids must be distinct")

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`kid:base64key[,kid:base64key…]` (commas or newlines), the current one first."""
        keys = []
        for item in text.replace("\n", ",").split(","):
            if not item.strip():
                continue
            kid, sep, encoded = item.strip().partition(":")
            if not sep:
                raise ValueError("master keys are written kid:base64key")
            try:
                keys.append(MasterKey(kid, base64.b64decode(encoded, validate=True)))
            except binascii.Error as exc:
                raise ValueError(f"master key {kid!r} is not base64") from exc
        return cls(keys)

    @staticmethod
    def generate(kid: str) -> str:
        """A new master key in the format `parse` reads."""
        return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"

    def _key(self, kid: str) -> MasterKey:
        try:
            return self.keys[kid]
        except KeyError:
            raise UnknownKey(f"no master key {kid!r} in the keyring") from None

    def new_data_key(self, subject_id: str) -> tuple[bytes, str, bytes]:
        """A fresh data key, and it wrapped under the current master key: (key, kid, wrapped)."""
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        return data_key, self.current.kid, self.wrap(subject_id, data_key)

    def wrap(self, subject_id: str, data_key: bytes) -> bytes:
        return _seal(self.current.wrapping_key, data_key,
                     _wrap_aad(self.current.kid, subject_id))

    def unwrap(self, subject_id: str, kid: str, wrapped: bytes) -> bytes:
        return _open(self._key(kid).wrapping_key, wrapped, _wrap_aad(kid, subject_id))

    def rewrap(self, subject_id: str, kid: str, wrapped: bytes) -> tuple[str, bytes]:
        """The data key moved under the current master key: (current kid, wrapped)."""
        return self.current.kid, self.wrap(subject_id, self.unwrap(subject_id, kid, wrapped))

    def lookup_hash(self, value: str) -> str:
        return lookup_hash(self.current, value)

    def lookup_hashes(self, value: str) -> list[str]:
        """The value's hash under every master key, current first: a row hashed before a
        rotation is still found while its old key is in the keyring."""
        return [lookup_hash(k, value) for k in self.keys.values()]


def _aad(table: str, column: str, subject_id: str) -> bytes:
    return f"{table}.{column}".encode() + b"\x00" + subject_id.encode()


class Sealer:
    """One subject's fields sealed and opened under their data key (never stored unwrapped)."""

    def __init__(self, subject_id: str, data_key: bytes, keyring: Keyring) -> None:
        self.subject_id = subject_id
        self._key = data_key
        self._keyring = keyring

    def encrypt(self, table: str, column: str, value: str) -> str:
        sealed = _seal(self._key, value.encode(), _aad(table, column, self.subject_id))
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def decrypt(self, table: str, column: str, token: str) -> str:
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise Undecryptable("not a sealed value") from exc
        return _open(self._key, sealed, _aad(table, column, self.subject_id)).decode()

    def lookup_hash(self, value: str) -> str:
        return self._keyring.lookup_hash(value)



# -- the registry of personal data -------------------------------------------------------------

Exporter = Callable[[str], Awaitable[Any]]
Eraser = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class PersonalData:
    """Where one context keeps data about a person, and how it gives it up and forgets it.
    Export and erasure walk the same registry, so nothing is exported that erasure would miss,
    and a table is registered once for both."""

    context: str
    tables: frozenset[str]
    export: Exporter  # subject id -> what the context holds about them (JSON-able)
    erase: Eraser  # (subject id, pseudonym): idempotent; records kept name the pseudonym only
    # Other identifiers the person went by in this context (a shop's sessions before they
    # logged in), which copies of events name instead of them.
    aliases: Callable[[str], Awaitable[list[str]]] | None = None
    # Called once per identifier (the subject's and every alias): copies of events.
    per_alias: bool = False


# Column names that always hold a person's identifier or contact data, marked or not.
PERSONAL_NAMES = frozenset({"customer_id", "session_id", "subject_id", "email", "email_enc",
                            "email_hash", "phone", "phone_enc", "name_enc", "address",
                            "recipient"})


def is_personal(column: str, info: Mapping[str, Any]) -> bool:
    """A column is personal when marked (`info={"personal": True}`) or named like one."""
    return bool(info.get("personal")) or column in PERSONAL_NAMES


def unregistered(tables: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]],
                 registry: Sequence[PersonalData]) -> dict[str, list[str]]:
    """Tables with a personal column that no context registered, with those columns: data
    export would not show and erasure would not touch."""
    covered = frozenset().union(*(entry.tables for entry in registry))
    found = {name: [column for column, info in columns if is_personal(column, info)]
             for name, columns in tables.items() if name not in covered}
    return {name: columns for name, columns in found.items() if columns}


def new_pseudonym() -> str:
    """Random, so nothing derives it from the person: once the erasure record forgets it, the
    records left behind link to each other but to no one."""
    return "anon-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Erasure:
    """An erasure under way (pseudonym kept, to finish one that was interrupted) or done
    (pseudonym forgotten)."""

    subject_hash: str
    pseudonym: str | None
    requested_at: datetime
    completed_at: datetime | None = None
