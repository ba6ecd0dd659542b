"""Drops persistence: the drops (their SKUs and channels as JSON), and the waiting room's
tickets, one per drop and customer, each with its place (lane and key) in the room's order.
Every table of the context is declared here; a draw's queries are in `store/draws.py`.

A ticket's position is its rank in that order, counted by the database: every process asks the
same rows and gets the same answer, and a restart reorders no one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.drops import model
from instock.platform.db import UTCDateTime, dialect_insert, metadata, rows_where

PERSONAL = {"personal": True}

drops = sa.Table(
    "drops", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("skus", sa.JSON, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("ends_at", UTCDateTime, nullable=True),
    sa.Column("admit_per_second", sa.Float, nullable=False),
    sa.Column("per_customer_limit", sa.Integer, nullable=True),
    sa.Column("channels", sa.JSON, nullable=False),
    sa.Column("seed", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),  # staff, never a shopper
    sa.Column("entries_close_at", UTCDateTime, nullable=True),  # draw mode
    sa.Column("draw_winners", sa.Integer, nullable=True),
    sa.Column("claim_seconds", sa.Float, nullable=False,
              server_default=str(model.DEFAULT_CLAIM_SECONDS)),
    # Queue mode: "fixed" (admit_per_second throughout) or "capacity" (drop_rate_segments).
    sa.Column("admission", sa.String(16), nullable=False, server_default="fixed"),
    sa.Column("max_admit_per_second", sa.Float, nullable=True),
)

# A capacity drop's changes of rate (model.Segment): from `from_at` on the room admits `rate` a
# second. Appended ahead of the moment they take effect (model.capacity.next_change), never
# changed: the key is what makes two processes recomputing the same period write one.
drop_rate_segments = sa.Table(
    "drop_rate_segments", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("from_at", UTCDateTime, primary_key=True),
    sa.Column("rate", sa.Float, nullable=False),
    sa.Column("written_at", UTCDateTime, nullable=False),
    # what was measured (model.capacity.Throughput)
    sa.Column("through", sa.Integer, nullable=False),
    sa.Column("open", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
)

# Our copy of inventory's news of the reservations of a capacity drop's SKUs (reservation.*.v1,
# heard on the bus: drops/capacity.py): when each began and how it ended, the measure of
# checkout capacity. No customer: only the drop's throughput is read from it.
drop_checkouts = sa.Table(
    "drop_checkouts", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("reservation_id", sa.String(64), primary_key=True),
    sa.Column("reserved_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),  # "through" or "expired"
)
sa.Index("ix_drop_checkouts_ended", drop_checkouts.c.drop_id, drop_checkouts.c.ended_at)

drop_tickets = sa.Table(
    "drop_tickets", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(128), primary_key=True, info=PERSONAL),
    sa.Column("ticket_id", sa.String(64), nullable=False),
    sa.Column("lane", sa.Integer, nullable=False),
    sa.Column("place_key", sa.String(64), nullable=False),
    sa.Column("arrived_at", UTCDateTime, nullable=False),
    # The bot scoring's verdict on the first ask (drops/bots.py): "review" holds the place
    # without admitting it; a refused shopper has no row at all.
    sa.Column("decision", sa.String(8), nullable=False, server_default="admit"),
    sa.Column("verdict", sa.JSON, nullable=True),
    # A keyed hash of the client address (never the address): shoppers sharing one are counted.
    sa.Column("client_key", sa.String(64), nullable=True, info=PERSONAL),
    sa.Column("asks", sa.Integer, nullable=False, server_default="1"),  # tickets asked for
    # A keyed hash of the payment method or address fingerprint the storefront vouched for
    # (drops/tokens.py), as an entry's: a bot signal only, many places may share one.
    sa.Column("fingerprint", sa.String(64), nullable=True, info=PERSONAL),
)
# Positions are counts of the places before one: this index answers them without the rows.
# Place keys are lowercase hex (a digest, or a UUIDv7 whose dashes all stand at the same
# places), which every collation orders as Python orders them (model.Place).
sa.Index("ix_drop_tickets_place", drop_tickets.c.drop_id, drop_tickets.c.lane,
         drop_tickets.c.place_key)
sa.Index("ix_drop_tickets_client", drop_tickets.c.drop_id, drop_tickets.c.client_key)
# The shoppers on a fingerprint across drops (shoppers_on_fingerprint) from the index alone,
# each once, in order: the first few of a farm's thousands are read, not all of them.
sa.Index("ix_drop_tickets_fingerprint", drop_tickets.c.fingerprint, drop_tickets.c.customer_id,
         drop_tickets.c.arrived_at)

# A draw drop's entries: one per drop and customer, and one per fingerprint when one is given
# (a keyed hash of the payment method or address the storefront vouches for, never the raw
# value). The bot scoring columns are the tickets' (the same `asking`).
drop_entries = sa.Table(
    "drop_entries", metadata,
    sa.Column("entry_id", sa.String(64), primary_key=True),
    sa.Column("drop_id", sa.String(64), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False, info=PERSONAL),
    sa.Column("fingerprint", sa.String(64), nullable=True, info=PERSONAL),
    sa.Column("arrived_at", UTCDateTime, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False, server_default="admit"),
    sa.Column("verdict", sa.JSON, nullable=True),
    sa.Column("client_key", sa.String(64), nullable=True, info=PERSONAL),
    sa.Column("asks", sa.Integer, nullable=False, server_default="1"),
    # When the entrant was told of a right (drop.won.v1): each right is announced once.
    sa.Column("won_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("drop_id", "customer_id", name="uq_drop_entries_customer"),
    # NULLs never collide (both backends): entries without a fingerprint are not limited here.
    sa.UniqueConstraint("drop_id", "fingerprint", name="uq_drop_entries_fingerprint"),
)
sa.Index("ix_drop_entries_client", drop_entries.c.drop_id, drop_entries.c.client_key)
sa.Index("ix_drop_entries_fingerprint", drop_entries.c.fingerprint, drop_entries.c.customer_id,
         drop_entries.c.arrived_at)

# One draw per drop (the primary key is what makes two concurrent draws one): the seed, kept
# secret until this row exists, and what anyone needs to re-compute the order.
drop_draws = sa.Table(
    "drop_draws", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("seed", sa.String(64), nullable=False),
    sa.Column("drawn_at", UTCDateTime, nullable=False),
    sa.Column("drawn_by", sa.String(200), nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("entries", sa.JSON, nullable=False),  # the entry ids drawn from, sorted
    sa.Column("draw_order", sa.JSON, nullable=False),  # model.draws.draw_order of them
)

# Our copy of inventory's news that an entrant reserved the drop's SKUs (reservation.created.v1,
# heard on the bus): a claim of their right. The first one counts; it never changes.
drop_claims = sa.Table(
    "drop_claims", metadata,
    sa.Column("drop_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(128), primary_key=True, info=PERSONAL),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.Column("reservation_id", sa.String(64), nullable=False),
)

# Our copy of checkout's news that a shopper's payment attempt failed (order.payment_failed.v1,
# heard on the bus: drops/declines.py), for the bot scoring: one row per failed checkout, kept
# for bots.FAILED_PAYMENTS_WINDOW (older ones are pruned as the shopper's next one arrives).
drop_payment_failures = sa.Table(
    "drop_payment_failures", metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),  # one failure per checkout
    sa.Column("customer_id", sa.String(128), nullable=False, info=PERSONAL),
    sa.Column("failed_at", UTCDateTime, nullable=False),
)
# Counts a shopper's recent failures from the index alone.
sa.Index("ix_drop_payment_failures_customer", drop_payment_failures.c.customer_id,
         drop_payment_failures.c.failed_at)

PERSONAL_TABLES = frozenset({"drop_tickets", "drop_entries", "drop_claims",
                             "drop_payment_failures"})


def drop_from_row(row: Any) -> model.Drop:
    return model.Drop(row.id, tuple(row.skus), row.starts_at, model.Mode(row.mode),
                      float(row.admit_per_second), row.per_customer_limit, tuple(row.channels),
                      row.ends_at, row.seed, row.created_at, row.created_by,
                      row.entries_close_at, row.draw_winners, float(row.claim_seconds),
                      model.Admission(row.admission),
                      None if row.max_admit_per_second is None
                      else float(row.max_admit_per_second))


async def add_drop(conn: AsyncConnection, drop: model.Drop) -> None:
    await conn.execute(drops.insert().values(
        id=drop.id, skus=list(drop.skus), mode=drop.mode.value, starts_at=drop.starts_at,
        ends_at=drop.ends_at, admit_per_second=drop.admit_per_second,
        per_customer_limit=drop.per_customer_limit, channels=list(drop.channels),
        seed=drop.seed, created_at=drop.created_at, created_by=drop.created_by,
        entries_close_at=drop.entries_close_at, draw_winners=drop.draw_winners,
        claim_seconds=drop.claim_seconds, admission=drop.admission.value,
        max_admit_per_second=drop.max_admit_per_second))


async def get_drop(conn: AsyncConnection, drop_id: str) -> model.Drop | None:
    row = (await conn.execute(sa.select(drops).where(drops.c.id == drop_id))).first()
    return None if row is None else (await with_rates(conn, [drop_from_row(row)]))[0]


async def live_drops(conn: AsyncConnection, now: datetime, *,
                     rates: bool = False) -> list[model.Drop]:
    """Drops that still gate their SKUs (not ended): a shop runs a handful at a time; with
    their rate segments when asked (the gate needs none)."""
    rows = await conn.execute(sa.select(drops).where(
        sa.or_(drops.c.ends_at.is_(None), drops.c.ends_at > now)))
    found = [drop_from_row(row) for row in rows]
    return await with_rates(conn, found) if rates else found


async def with_rates(conn: AsyncConnection, found: list[model.Drop]) -> list[model.Drop]:
    """The drops with their stored changes of rate (one read, for the capacity drops only:
    a fixed-rate drop has none to read)."""
    ids = [drop.id for drop in found if drop.admission is model.Admission.CAPACITY]
    if not ids:
        return found
    rows = await conn.execute(sa.select(
        drop_rate_segments.c.drop_id, drop_rate_segments.c.from_at, drop_rate_segments.c.rate,
    ).where(drop_rate_segments.c.drop_id.in_(ids)).order_by(drop_rate_segments.c.from_at))
    by_drop: dict[str, list[model.Segment]] = {}
    for row in rows:
        by_drop.setdefault(row.drop_id, []).append(model.Segment(row.from_at, float(row.rate)))
    return [replace(drop, rates=tuple(by_drop.get(drop.id, ()))) for drop in found]


async def decisions(conn: AsyncConnection, drop_id: str, table: sa.Table) -> dict[str, int]:
    """How many tickets (or entries: `table`) of the drop stand at each decision."""
    rows = await conn.execute(sa.select(table.c.decision, sa.func.count()).where(
        table.c.drop_id == drop_id).group_by(table.c.decision))
    return {decision: int(count) for decision, count in rows}


async def add_ticket(conn: AsyncConnection, drop_id: str, customer_id: str, ticket_id: str,
                     place: model.Place, at: datetime, *, decision: str = "admit",
                     verdict: dict[str, Any] | None = None, client_key: str | None = None,
                     fingerprint: str | None = None) -> None:
    """Take a place in the room, unless the customer holds one (their first place stands:
    asking again never moves anyone)."""
    await conn.execute(dialect_insert(conn, drop_tickets).on_conflict_do_nothing(), [{
        "drop_id": drop_id, "customer_id": customer_id, "ticket_id": ticket_id,
        "lane": place.lane, "place_key": place.key, "arrived_at": at, "decision": decision,
        "verdict": verdict, "client_key": client_key, "fingerprint": fingerprint, "asks": 1}])


async def asked_again(conn: AsyncConnection, drop_id: str, customer_id: str,
                      table: sa.Table = drop_tickets) -> None:
    await conn.execute(table.update().where(
        table.c.drop_id == drop_id, table.c.customer_id == customer_id,
    ).values(asks=table.c.asks + 1))


async def asking(conn: AsyncConnection, drop_id: str, customer_id: str,
                 client_key: str | None, table: sa.Table = drop_tickets,
                 ) -> tuple[int, int, int, datetime | None]:
    """What the room (or the draw's entries: `table`) knows of who is asking: (the shopper's
    asks, the asks from this client address, the other shoppers from it, the shopper's first
    ask) in this drop."""
    mine = (await conn.execute(sa.select(table.c.asks, table.c.arrived_at).where(
        table.c.drop_id == drop_id, table.c.customer_id == customer_id))).first()
    client_asks = others = 0
    if client_key is not None:
        row = (await conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(table.c.asks), 0),
            sa.func.count().filter(table.c.customer_id != customer_id)).where(
            table.c.drop_id == drop_id, table.c.client_key == client_key))).one()
        client_asks, others = int(row[0]), int(row[1])
    return ((mine.asks, client_asks, others, mine.arrived_at) if mine is not None
            else (0, client_asks, others, None))


async def shoppers_on_fingerprint(conn: AsyncConnection, fingerprint: str, customer_id: str,
                                  since: datetime, at_most: int) -> int:
    """How many other shoppers gave this (keyed) fingerprint with a ticket or an entry, in any
    drop, since then: each counted once, and no more than `at_most`. Each table gives its first
    `at_most` shoppers in the fingerprint index's order (a scan that stops there, however many
    a farm has put on it); their union counts exactly up to `at_most`, since either side alone
    reaches it or both gave every shopper they hold."""
    firsts = [sa.select(table.c.customer_id).where(
        table.c.fingerprint == fingerprint, table.c.arrived_at >= since,
        table.c.customer_id != customer_id,
    ).distinct().order_by(table.c.customer_id).limit(at_most).subquery()
        for table in (drop_tickets, drop_entries)]
    others = sa.union(*(sa.select(first.c.customer_id) for first in firsts)).subquery()
    capped = sa.select(others.c.customer_id).limit(at_most).subquery()
    return int((await conn.execute(
        sa.select(sa.func.count()).select_from(capped))).scalar_one())


async def decision_of(conn: AsyncConnection, drop_id: str,
                      customer_id: str) -> tuple[str, dict[str, Any] | None] | None:
    row = (await conn.execute(sa.select(drop_tickets.c.decision, drop_tickets.c.verdict).where(
        drop_tickets.c.drop_id == drop_id,
        drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else (row.decision, row.verdict)


@dataclass(frozen=True)
class HeldRow:
    """A ticket or entry the scoring held (or staff since decided)."""

    id: str  # the ticket's or entry's id
    customer_id: str
    arrived_at: datetime
    decision: str
    verdict: dict[str, Any] | None


def _id_column(table: sa.Table) -> sa.Column[Any]:
    return table.c.ticket_id if table is drop_tickets else table.c.entry_id


async def held(conn: AsyncConnection, drop_id: str, table: sa.Table) -> list[HeldRow]:
    """The drop's tickets (or entries: `table`) held for review, oldest first."""
    rows = await conn.execute(sa.select(
        _id_column(table).label("id"), table.c.customer_id, table.c.arrived_at,
        table.c.decision, table.c.verdict,
    ).where(table.c.drop_id == drop_id, table.c.decision == "review")
        .order_by(table.c.arrived_at, table.c.customer_id))
    return [HeldRow(r.id, r.customer_id, r.arrived_at, r.decision, r.verdict) for r in rows]


async def ask_of(conn: AsyncConnection, drop_id: str, customer_id: str,
                 table: sa.Table) -> HeldRow | None:
    row = (await conn.execute(sa.select(
        _id_column(table).label("id"), table.c.customer_id, table.c.arrived_at,
        table.c.decision, table.c.verdict,
    ).where(table.c.drop_id == drop_id, table.c.customer_id == customer_id))).first()
    return None if row is None else HeldRow(row.id, row.customer_id, row.arrived_at,
                                            row.decision, row.verdict)


async def decide(conn: AsyncConnection, drop_id: str, customer_id: str, table: sa.Table,
                 decision: str, verdict: dict[str, Any]) -> bool:
    """Record staff's decision on a held ask; False if it was no longer held (decided by
    someone else meanwhile)."""
    done = await conn.execute(table.update().where(
        table.c.drop_id == drop_id, table.c.customer_id == customer_id,
        table.c.decision == "review").values(decision=decision, verdict=verdict))
    return bool(done.rowcount)


async def ticket_of(conn: AsyncConnection, drop_id: str,
                    customer_id: str) -> tuple[str, model.Place] | None:
    """The customer's ticket id and place in the drop's room, if they hold one."""
    row = (await conn.execute(sa.select(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else (row.ticket_id, model.Place(row.lane, row.place_key))


@dataclass(frozen=True)
class Held:
    """What a ticket holder's live stream reads of its row, once, when it connects."""

    ticket_id: str
    place: model.Place
    arrived_at: datetime
    decision: str


async def held_by(conn: AsyncConnection, drop_id: str, customer_id: str) -> Held | None:
    row = (await conn.execute(sa.select(
        drop_tickets.c.ticket_id, drop_tickets.c.lane, drop_tickets.c.place_key,
        drop_tickets.c.arrived_at, drop_tickets.c.decision).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.customer_id == customer_id))).first()
    return None if row is None else Held(row.ticket_id, model.Place(row.lane, row.place_key),
                                         row.arrived_at, row.decision)


async def tickets(conn: AsyncConnection, drop_id: str) -> int:
    """How many places the room holds (the index answers it)."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id))).scalar_one())


async def early_keys(conn: AsyncConnection, drop_id: str) -> list[str]:
    """The place keys of those who came before the start, in the room's order: ranks for
    many tickets in one read (their positions are final once the drop has started)."""
    rows = await conn.execute(sa.select(drop_tickets.c.place_key).where(
        drop_tickets.c.drop_id == drop_id, drop_tickets.c.lane == model.PRE_START,
    ).order_by(drop_tickets.c.place_key))
    return [row.place_key for row in rows]


async def position(conn: AsyncConnection, drop_id: str, place: model.Place) -> int:
    """1 + how many places of the room come before this one."""
    before = (await conn.execute(sa.select(sa.func.count()).select_from(drop_tickets).where(
        drop_tickets.c.drop_id == drop_id,
        sa.or_(drop_tickets.c.lane < place.lane,
               sa.and_(drop_tickets.c.lane == place.lane,
                       drop_tickets.c.place_key < place.key))))).scalar_one()
    return int(before) + 1


async def export_customer(conn: AsyncConnection, customer_id: str
                          ) -> dict[str, list[dict[str, object]]]:
    return {"drop_tickets": await rows_where(conn, drop_tickets.c.customer_id, customer_id),
            "drop_entries": await rows_where(conn, drop_entries.c.customer_id, customer_id),
            "drop_claims": await rows_where(conn, drop_claims.c.customer_id, customer_id),
            "drop_payment_failures": await rows_where(
                conn, drop_payment_failures.c.customer_id, customer_id)}


async def pseudonymise(conn: AsyncConnection, customer_id: str, pseudonym: str) -> None:
    """The tickets and entries stay (their places are others' positions, the entries are in
    published draws) under the pseudonym."""
    await conn.execute(drop_tickets.update().where(drop_tickets.c.customer_id == customer_id)
                       .values(customer_id=pseudonym, client_key=None, fingerprint=None))
    await conn.execute(drop_entries.update().where(drop_entries.c.customer_id == customer_id)
                       .values(customer_id=pseudonym, client_key=None, fingerprint=None))
    await conn.execute(drop_claims.update().where(drop_claims.c.customer_id == customer_id)
                       .values(customer_id=pseudonym))
    # Only ever a signal about the shopper for a day: nothing else refers to them.
    await conn.execute(drop_payment_failures.delete().where(
        drop_payment_failures.c.customer_id == customer_id))


# -- failed payment attempts, heard from checkout ------------------------------------------


async def add_payment_failure(conn: AsyncConnection, order_id: str, customer_id: str,
                              at: datetime, prune_before: datetime) -> None:
    """Count the checkout's failure once (heard twice, it is one), and forget the shopper's
    failures too old to count any more."""
    await conn.execute(dialect_insert(conn, drop_payment_failures).on_conflict_do_nothing(), [{
        "order_id": order_id, "customer_id": customer_id, "failed_at": at}])
    await conn.execute(drop_payment_failures.delete().where(
        drop_payment_failures.c.customer_id == customer_id,
        drop_payment_failures.c.failed_at < prune_before))


async def payment_failures(conn: AsyncConnection, customer_id: str, since: datetime) -> int:
    """How many of the shopper's checkouts failed on payment since then."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(
        drop_payment_failures).where(
        drop_payment_failures.c.customer_id == customer_id,
        drop_payment_failures.c.failed_at >= since))).scalar_one())
