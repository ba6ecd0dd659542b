"""Customer use cases: each save one transaction (the model decides, the privacy service seals
the personal fields with the subject's key, the store writes, the outbox says so)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.catalog.events import PRODUCT_EVENTS
from instock.customers import model, store
from instock.orders.events import OrderPaid
from instock.platform.bus import Envelope, outbox
from instock.platform.bus.consumer import ConsumerSpec, gathered
from instock.platform.db import Database, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.polls.events import PollAnswered
from instock.privacy.model import Sealer, Shredded
from instock.privacy.service import PrivacyService
from instock.recommendations.events import BehaviourRecorded

log = structlog.get_logger(__name__)

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
        async with self.db.write() as conn:
            return await self._save_in(conn, customer_id, lambda _: changes, by, correlation_id)

    async def _save_in(self, conn: AsyncConnection, customer_id: str,
                       change: Callable[[model.Profile | None], model.Changes], by: str,
                       correlation_id: str | None) -> model.Profile:
        """One change of a profile within the caller's transaction: `change` is made from the
        profile as it is (None: no profile yet)."""
        now = utcnow()
        record = await store.get(conn, customer_id, for_update=True)
        try:
            sealer = await self.privacy.sealer(customer_id, conn)
        except Shredded as exc:
            raise Conflict(str(exc)) from exc
        assert sealer is not None
        current = profile_of(record, sealer) if record else None
        try:
            profile = model.apply(current, customer_id, change(current), by, now)
        except model.InvalidProfile as exc:
            raise ValidationFailed(exc.field, exc.reason) from exc
        if profile is current:
            return profile
        await store.save(conn, record_of(profile, sealer, record.created_at if record else now))
        await outbox.add(conn, [model.updated(profile)], correlation_id)
        return profile

    def poll_answers_consumer(self) -> ConsumerSpec:
        """A known customer's poll answers join their profile's stated preferences."""
        return ConsumerSpec("customers-poll-answers", frozenset({PollAnswered.type}),
                            self._on_poll_answered, ordered=False,
                            wants=lambda e: bool(e["data"].get("customer_id")
                                                 and e["data"]["attributes"]))

    async def _on_poll_answered(self, conn: AsyncConnection, envelope: Envelope) -> None:
        data = envelope["data"]
        stated = [(a["attribute"], a["value"]) for a in data["attributes"]]

        def change(current: model.Profile | None) -> model.Changes:
            before = current.preferences if current else {}
            return model.Changes(preferences=model.merge_stated(before, stated))
        try:
            await self._save_in(conn, data["customer_id"], change,
                                f"poll:{data['poll_id']}", envelope.get("correlationid"))
        except Conflict:  # erased: nothing more is written about them
            log.info("poll_answer_of_erased_customer", answer_id=data["answer_id"])
        except ValidationFailed as exc:  # a profile full of answers keeps what it has
            log.warning("poll_answer_not_merged", answer_id=data["answer_id"], error=str(exc))

    # -- the behaviour summary -------------------------------------------------------------

    def behaviour_consumer(self) -> ConsumerSpec:
        """Views (recommendations' behaviour events), paid orders and the catalogue's products
        (for brands and categories) into each customer's behaviour summary."""
        return ConsumerSpec(
            "customers-behaviour",
            frozenset({BehaviourRecorded.type, OrderPaid.type, *PRODUCT_EVENTS}),
            on_behaviour, wants=_behaviour_wanted, finish=fold_behaviour)

    async def behaviour_of(self, customer_id: str) -> model.Behaviour | None:
        async with self.db.read() as conn:
            return await store.behaviour(conn, customer_id)

    async def with_behaviour(self, customer_id: str
                             ) -> tuple[model.Profile, model.Behaviour | None]:
        """The profile (as `get`) and the customer's behaviour summary (None: none yet)."""
        return await self.get(customer_id), await self.behaviour_of(customer_id)

    async def export_behaviour(self, customer_id: str) -> dict[str, Any]:
        """The behaviour summary as JSON, for the privacy registry's export."""
        summary = await self.behaviour_of(customer_id)
        if summary is None:
            return {}
        return {"views": list(summary.views), "purchases": list(summary.purchases),
                "brands": summary.brands, "categories": summary.categories,
                "updated_at": summary.updated_at.isoformat()}

    async def erase_behaviour(self, customer_id: str) -> None:
        """The summary is about the person only: it goes (idempotent)."""
        async with self.db.write() as conn:
            await store.delete_behaviour(conn, customer_id)

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

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        """The profile as the person would read it (nothing once erased)."""
        behaviour = await self.export_behaviour(customer_id)  # events may come before a profile
        try:
            profile = await self.get(customer_id)
        except NotFound:
            return {"behaviour": behaviour} if behaviour else {}
        return {"profile": dataclasses.asdict(profile), "behaviour": behaviour}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        async with self.db.write() as conn:
            await store.erase(conn, customer_id, utcnow())
            await store.delete_behaviour(conn, customer_id)

    async def rehash_emails(self, batch: int = 500) -> int:
        """Hash every email again under the current master key (after a rotation): then the
        older master keys may leave the keyring without lookups by email missing anyone.
        How many hashes changed."""
        changed, after = 0, ""
        while True:
            async with self.db.write() as conn:
                records = await store.with_email_after(conn, after, batch)
                for record in records:
                    try:
                        sealer = await self.privacy.sealer(record.id, conn, create=False)
                    except Shredded:
                        continue
                    if sealer is None or record.email_enc is None:
                        continue
                    wanted = sealer.lookup_hash(sealer.decrypt(TABLE, "email_enc",
                                                               record.email_enc))
                    if wanted != record.email_hash:
                        await store.set_email_hash(conn, record.id, wanted)
                        changed += 1
            if len(records) < batch:
                return changed
            after = records[-1].id

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


VIEWS = frozenset({"view", "click"})


def _behaviour_wanted(envelope: Envelope) -> bool:
    kind, data = envelope["type"], envelope["data"]
    if kind == BehaviourRecorded.type:
        return data.get("kind") in VIEWS and bool(data.get("customer_id")
                                                  and data.get("product_id"))
    if kind == OrderPaid.type:
        return bool(data.get("customer_id"))
    return True  # a product: brands and categories of what is viewed and bought


async def on_behaviour(conn: AsyncConnection, envelope: Envelope) -> None:
    kind, data = envelope["type"], envelope["data"]
    if kind in PRODUCT_EVENTS:  # at once: the views and purchases behind it read it
        await store.save_items(conn, data["id"], data["brand"], data["category"],
                               list(data["skus"]))
        return
    batch: list[Envelope] = gathered("customers.behaviour", list)
    batch.append(envelope)


async def fold_behaviour(conn: AsyncConnection) -> None:
    """The batch's views and purchases, folded into their customers' summaries in the order
    they came: the summaries read at once, the items at once, and all written at once (four
    statements a batch instead of three an event)."""
    envelopes: list[Envelope] = gathered("customers.behaviour", list)
    if not envelopes:
        return
    customers = sorted({e["data"]["customer_id"] for e in envelopes})
    summaries = await store.behaviours(conn, customers)
    views = [e for e in envelopes if e["type"] == BehaviourRecorded.type]
    products = sorted({e["data"]["product_id"] for e in views})
    skus = sorted({line["sku"] for e in envelopes if e["type"] != BehaviourRecorded.type
                   for line in e["data"]["lines"]})
    by_product = await store.items_by_product(conn, products) if products else {}
    by_sku = await store.items_by_sku(conn, skus) if skus else {}
    for envelope in envelopes:
        data, customer_id = envelope["data"], envelope["data"]["customer_id"]
        summary = summaries.get(customer_id) or model.no_behaviour(customer_id, utcnow())
        if envelope["type"] == BehaviourRecorded.type:
            summary = model.viewed(summary, data["product_id"], by_product.get(
                data["product_id"]), datetime.fromisoformat(data["occurred_at"]))
        else:
            summary = model.bought(summary, data["order_id"], [
                (line["sku"], int(line["quantity"]), by_sku.get(line["sku"]))
                for line in data["lines"]], datetime.fromisoformat(envelope["time"]))
        summaries[customer_id] = summary
    await store.save_behaviours(conn, [summaries[c] for c in customers])
