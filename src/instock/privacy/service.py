"""Data keys of data subjects: handed to other contexts as sealers, shredded, rotated.

Another context (customers) seals and opens its own columns inside its own transaction: it
passes its connection to `sealer`, which reads (or creates) the subject's key there, so the
key and the data it protects commit together, and that context never reads `subject_keys`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import Database, utcnow
from instock.privacy import model, store
from instock.privacy.model import Keyring, PersonalData, Sealer, Shredded

ROTATION_BATCH = 500  # keys rewrapped per transaction
GENERATED_KEY_FILE = "pii-master.keys"


def load_keyring(keys: str | None, key_file: Path | None, state_dir: Path) -> Keyring:
    """The configured master keys (environment, then file), else one created on first run and
    kept under the state dir, so the embedded default decrypts after a restart."""
    if keys:
        return Keyring.parse(keys)
    if key_file is not None:
        return Keyring.parse(key_file.read_text())
    path = state_dir / GENERATED_KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: of processes starting together, one creates the key and the others read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Keyring.parse(path.read_text())
    with os.fdopen(fd, "w") as out:
        out.write(Keyring.generate("local-1") + "\n")
    return Keyring.parse(path.read_text())


class PrivacyService:
    def __init__(self, db: Database, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring
        # Every context's personal data, set by the composition root (which builds them all).
        self.registry: Sequence[PersonalData] = ()

    def personal_data(self) -> PersonalData:
        """This context's own entry: the subject's key (its existence, never its bytes)."""
        return PersonalData("privacy", frozenset({"subject_keys"}), self._export_key,
                            self._forget_key)

    async def _export_key(self, subject_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return await store.export(conn, subject_id)

    async def _forget_key(self, subject_id: str, pseudonym: str) -> None:
        pass  # shredded first by `erase`: the row stays, so no new key is ever made for them

    async def export(self, subject_id: str) -> dict[str, Any]:
        """Everything instock holds about the person, by context (GDPR art. 15 and 20)."""
        return {entry.context: await entry.export(subject_id) for entry in self.registry}

    async def erase(self, subject_id: str) -> bool:
        """Forget the person (GDPR art. 17): their key is shredded first (so every sealed
        value, in backups too, is unreadable from then on), then each context erases or
        pseudonymises what it keeps. Safe to repeat: an interrupted erasure finishes with the
        same pseudonym. False when they were already erased."""
        aliases = sorted({alias for entry in self.registry if entry.aliases
                          for alias in await entry.aliases(subject_id)} - {subject_id})
        async with self.db.write() as conn:
            started = await store.begin_erasure(conn, subject_id, model.new_pseudonym(),
                                                aliases, utcnow())
        if started is None:
            return False
        pseudonym, aliases = started
        for entry in self.registry:
            for identifier in [subject_id, *aliases] if entry.per_alias else [subject_id]:
                await entry.erase(identifier, pseudonym)
        async with self.db.write() as conn:
            await store.finish_erasure(conn, subject_id, utcnow())
        return True

    async def sealer(self, subject_id: str, conn: AsyncConnection | None = None, *,
                     create: bool = True) -> Sealer | None:
        """The subject's sealer, in the caller's transaction `conn` (else one of its own).
        None when they have no key and `create` is false (nothing of theirs is sealed);
        `Shredded` when their key was destroyed."""
        if conn is None:
            async with (self.db.write() if create else self.db.read()) as own:
                return await self.sealer(subject_id, own, create=create)
        key = await store.get(conn, subject_id)
        if key is None:
            if not create:
                return None
            data_key, kid, wrapped = self.keyring.new_data_key(subject_id)
            if await store.insert(conn, model.SubjectKey(subject_id, kid, wrapped, utcnow())):
                return Sealer(subject_id, data_key, self.keyring)
            key = await store.get(conn, subject_id)  # a concurrent first write won
            assert key is not None
        if key.wrapped is None or key.kid is None:
            raise Shredded(f"the personal data of {subject_id} was erased")
        return Sealer(subject_id, self.keyring.unwrap(subject_id, key.kid, key.wrapped),
                      self.keyring)

    def lookup_hashes(self, value: str) -> list[str]:
        """What a row sealed under any master key of the keyring was hashed as."""
        return self.keyring.lookup_hashes(value)

    async def shred(self, subject_id: str) -> None:
        """Destroy the subject's data key: every ciphertext of theirs, in every backup, stops
        opening. For good: no new key is ever made for them."""
        async with self.db.write() as conn:
            await store.shred(conn, subject_id, utcnow())

    async def is_shredded(self, subject_id: str) -> bool:
        async with self.db.read() as conn:
            key = await store.get(conn, subject_id)
        return key is not None and key.shredded_at is not None

    async def rotate(self) -> int:
        """Rewrap every data key under the current master key; how many were moved. After it,
        older master keys may leave the keyring (keyed hashes aside: see README)."""
        moved = 0
        current = self.keyring.current.kid
        while True:
            async with self.db.write() as conn:
                batch = await store.not_under(conn, current, ROTATION_BATCH)
                for key in batch:
                    assert key.kid is not None and key.wrapped is not None
                    kid, wrapped = self.keyring.rewrap(key.subject_id, key.kid, key.wrapped)
                    moved += await store.rewrap(conn, key, kid, wrapped)
            if len(batch) < ROTATION_BATCH:
                return moved
