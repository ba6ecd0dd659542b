"""Customer use cases: each save one transaction (the model decides, the privacy service seals
the personal fields with the subject's key, the store writes, the outbox says so)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from instock.customers import model, store
from instock.platform.bus import outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.privacy.model import Sealer, Shredded
from instock.privacy.service import PrivacyService

TABLE = "customers"


def _consents_json(consents: dict[str, model.Consent]) -> dict[str, Any]:
    return {p: {"granted": c.granted, "at": c.at.isoformat(), "source": c.source}
            for p, c in consents.items()}


def _consents(doc: dict[str, Any]) -> dict[str, model.Consent]:
    return {p: model.Consent(bool(c["granted"]), datetime.fromisoformat(c["at"]), c["source"])
            for p, c in doc.items()}


def _open(sealer: Sealer, column: str, token: str | None) -> str | None:
    return None if token is None else sealer.decrypt(TABLE, column, token)


def _seal(sealer: Sealer, column: str, value: str | None) -> str | None:
    return None if value is None else sealer.encrypt(TABLE, column, value)


def profile_of(record: store.Record, sealer: Sealer | None) -> model.Profile:
    """The profile a row holds; without a sealer (shredded subject) its contact data is gone."""
    return model.Profile(
        record.id,
        _open(sealer, "email_enc", record.email_enc) if sealer else None,
        _open(sealer, "phone_enc", record.phone_enc) if sealer else None,
        _open(sealer, "name_enc", record.name_enc) if sealer else None,
        record.sizes, record.preferences, _consents(record.consents), record.version,
        record.updated_at, erased=sealer is None, time_zone=record.time_zone)


def record_of(profile: model.Profile, sealer: Sealer, created_at: datetime) -> store.Record:
    return store.Record(
        profile.id, _seal(sealer, "email_enc", profile.email),
        _seal(sealer, "phone_enc", profile.phone), _seal(sealer, "name_enc", profile.name),
        sealer.lookup_hash(profile.email) if profile.email else None,
        profile.sizes, profile.preferences, _consents_json(profile.consents), profile.version,
        created_at, profile.updated_at, profile.time_zone)


class CustomersService:
    def __init__(self, db: Database, privacy: PrivacyService) -> None:
        self.db = db
        self.privacy = privacy

    async def save(self, customer_id: str, changes: model.Changes, by: str,
                   correlation_id: str | None = None) -> model.Profile:
        """Create or change a profile. 422 naming the field for bad input, nothing written;
        409 once the customer's personal data was erased (their key is gone for good)."""
        now = utcnow()
        async with self.db.write() as conn:
            record = await store.get(conn, customer_id, for_update=True)
            try:
                sealer = await self.privacy.sealer(customer_id, conn)
            except Shredded as exc:
                raise Conflict(str(exc)) from exc
            assert sealer is not None
            current = profile_of(record, sealer) if record else None
            try:
                profile = model.apply(current, customer_id, changes, by, now)
            except model.InvalidProfile as exc:
                raise ValidationFailed(exc.field, exc.reason) from exc
            if profile is current:
                return profile
            await store.save(conn, record_of(profile, sealer,
                                             record.created_at if record else now))
            await outbox.add(conn, [model.updated(profile)], correlation_id)
        return profile

    async def get(self, customer_id: str) -> model.Profile:
        """The profile, decrypted; after a shred, with `erased` set and no contact data."""
        async with self.db.read() as conn:
            record = await store.get(conn, customer_id)
            if record is None:
                raise NotFound(f"customer {customer_id} does not exist")
            try:
                sealer = await self.privacy.sealer(customer_id, conn, create=False)
            except Shredded:
                sealer = None  # every save makes the key first: no key means shredded
        return profile_of(record, sealer)

    async def find_by_email(self, email: str) -> model.Profile | None:
        """The customer with this email (any case or spacing), by its keyed hash."""
        wanted = model.normalise_email(email)
        async with self.db.read() as conn:
            records = await store.by_email_hash(conn, self.privacy.lookup_hashes(wanted))
            for record in records:
                try:
                    sealer = await self.privacy.sealer(record.id, conn, create=False)
                except Shredded:
                    continue
                profile = profile_of(record, sealer)
                if profile.email == wanted:  # a hash names the value, this proves it
                    return profile
        return None
