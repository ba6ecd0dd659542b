"""Polls persistence: polls (their questions as JSON), answers (one per poll and session, one
per poll and customer), each answer's choices as rows for counting, and the poll each session
was last shown (the frequency cap)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.platform.db import UTCDateTime, dialect_insert, metadata, upsert
from instock.polls import model

PERSONAL = {"personal": True}

polls = sa.Table(
    "polls", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("questions", sa.JSON, nullable=False),
    sa.Column("contexts", sa.JSON, nullable=False),
    sa.Column("product_ids", sa.JSON, nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("ends_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),  # staff, never a shopper
)

poll_answers = sa.Table(
    "poll_answers", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("poll_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=True, info=PERSONAL),
    sa.Column("customer_id", sa.String(128), nullable=True, info=PERSONAL),
    sa.Column("answered_at", UTCDateTime, nullable=False),
    # One answer per shopper and poll, whichever id names them (NULLs never collide).
    sa.UniqueConstraint("poll_id", "session_id", name="uq_poll_answers_session"),
    sa.UniqueConstraint("poll_id", "customer_id", name="uq_poll_answers_customer"),
)
sa.Index("ix_poll_answers_customer_id", poll_answers.c.customer_id)

# The choices of each answer, a row each, so that results are one GROUP BY.
poll_choices = sa.Table(
    "poll_choices", metadata,
    sa.Column("answer_id", sa.String(64), primary_key=True),
    sa.Column("question_id", sa.String(64), primary_key=True),
    sa.Column("poll_id", sa.String(64), nullable=False, index=True),
    sa.Column("option_id", sa.String(64), nullable=False),
)

# The poll a session was last shown: at most one poll per session per interval.
poll_impressions = sa.Table(
    "poll_impressions", metadata,
    sa.Column("session_id", sa.String(128), primary_key=True, info=PERSONAL),
    sa.Column("poll_id", sa.String(64), nullable=False),
    sa.Column("shown_at", UTCDateTime, nullable=False),
)

PERSONAL_TABLES = frozenset({"poll_answers", "poll_impressions"})


def _questions_json(questions: Sequence[model.Question]) -> list[dict[str, Any]]:
    return [{"id": q.id, "text": q.text,
             "options": [{"id": o.id, "label": o.label, "attributes": o.attributes}
                         for o in q.options]} for q in questions]


def _poll(row: Any) -> model.Poll:
    questions = tuple(
        model.Question(q["id"], q["text"], tuple(
            model.Option(o["id"], o["label"], dict(o["attributes"])) for o in q["options"]))
        for q in row.questions)
    return model.Poll(row.id, row.title, questions, tuple(row.contexts),
                      tuple(row.product_ids), tuple(row.categories), row.starts_at,
                      row.ends_at, row.created_at, row.created_by)


async def add_poll(conn: AsyncConnection, poll: model.Poll) -> None:
    await conn.execute(polls.insert().values(
        id=poll.id, title=poll.title, questions=_questions_json(poll.questions),
        contexts=list(poll.contexts), product_ids=list(poll.product_ids),
        categories=list(poll.categories), starts_at=poll.starts_at, ends_at=poll.ends_at,
        created_at=poll.created_at, created_by=poll.created_by))


async def get_poll(conn: AsyncConnection, poll_id: str) -> model.Poll | None:
    row = (await conn.execute(sa.select(polls).where(polls.c.id == poll_id))).first()
    return None if row is None else _poll(row)


async def open_polls(conn: AsyncConnection, now: datetime) -> list[model.Poll]:
    """Polls open now (a shop runs a handful at a time; context and targeting are the
    model's to judge)."""
    rows = await conn.execute(sa.select(polls).where(
        polls.c.starts_at <= now, sa.or_(polls.c.ends_at.is_(None), polls.c.ends_at > now)))
    return [_poll(row) for row in rows]


async def answered_polls(conn: AsyncConnection, poll_ids: Sequence[str], session_id: str | None,
                         customer_id: str | None) -> set[str]:
    """Which of these polls the session or the customer answered."""
    who = [c == v for c, v in ((poll_answers.c.session_id, session_id),
                               (poll_answers.c.customer_id, customer_id)) if v]
    if not poll_ids or not who:
        return set()
    rows = await conn.execute(sa.select(poll_answers.c.poll_id).where(
        poll_answers.c.poll_id.in_(list(poll_ids)), sa.or_(*who)))
    return {row.poll_id for row in rows}


async def last_shown(conn: AsyncConnection, session_id: str) -> model.Shown | None:
    row = (await conn.execute(sa.select(poll_impressions).where(
        poll_impressions.c.session_id == session_id))).first()
    return None if row is None else model.Shown(row.poll_id, row.shown_at)


async def record_shown(conn: AsyncConnection, session_id: str, poll_id: str,
                       at: datetime) -> None:
    await upsert(conn, poll_impressions,
                 [{"session_id": session_id, "poll_id": poll_id, "shown_at": at}],
                 ["session_id"])


async def add_answer(conn: AsyncConnection, answer: model.Answer) -> bool:
    """Store an answer; False (nothing stored) when the shopper answered this poll before."""
    result = await conn.execute(dialect_insert(conn, poll_answers).on_conflict_do_nothing(), [{
        "id": answer.id, "poll_id": answer.poll_id, "session_id": answer.session_id,
        "customer_id": answer.customer_id, "answered_at": answer.answered_at}])
    if not result.rowcount:
        return False
    await conn.execute(poll_choices.insert(), [
        {"answer_id": answer.id, "question_id": c.question_id, "poll_id": answer.poll_id,
         "option_id": c.option_id} for c in answer.choices])
    return True


async def counts(conn: AsyncConnection, poll_id: str) -> tuple[dict[tuple[str, str], int], int]:
    """Answers per (question, option), and how many answered at all."""
    rows = await conn.execute(
        sa.select(poll_choices.c.question_id, poll_choices.c.option_id, sa.func.count())
        .where(poll_choices.c.poll_id == poll_id)
        .group_by(poll_choices.c.question_id, poll_choices.c.option_id))
    by_option = {(row[0], row[1]): int(row[2]) for row in rows}
    respondents = (await conn.execute(sa.select(sa.func.count()).select_from(poll_answers)
                                      .where(poll_answers.c.poll_id == poll_id))).scalar_one()
    return by_option, int(respondents)


async def answers_of(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    """A customer's answers with their choices, oldest first (for an export)."""
    rows = (await conn.execute(sa.select(poll_answers).where(
        poll_answers.c.customer_id == customer_id).order_by(poll_answers.c.answered_at))).all()
    choices: dict[str, list[dict[str, str]]] = {row.id: [] for row in rows}
    if choices:
        for c in await conn.execute(sa.select(poll_choices).where(
                poll_choices.c.answer_id.in_(list(choices))).order_by(
                poll_choices.c.answer_id, poll_choices.c.question_id)):
            choices[c.answer_id].append({"question_id": c.question_id,
                                         "option_id": c.option_id})
    return [{"answer_id": row.id, "poll_id": row.poll_id, "session_id": row.session_id,
             "answered_at": row.answered_at.isoformat(), "choices": choices[row.id]}
            for row in rows]


async def erase(conn: AsyncConnection, identifier: str, pseudonym: str) -> None:
    """A person's answers keep counting without naming them: as a customer, under the
    pseudonym (one answer per poll each, as before) and without their sessions; as a session
    (an alias: the shop's session before they logged in), without it. The impressions of
    those sessions go."""
    sessions = {identifier} | {row.session_id for row in await conn.execute(
        sa.select(poll_answers.c.session_id).where(poll_answers.c.customer_id == identifier,
                                                   poll_answers.c.session_id.is_not(None)))}
    await conn.execute(poll_impressions.delete().where(
        poll_impressions.c.session_id.in_(sorted(sessions))))
    await conn.execute(poll_answers.update().where(poll_answers.c.customer_id == identifier)
                       .values(customer_id=pseudonym, session_id=None))
    await conn.execute(poll_answers.update().where(poll_answers.c.session_id == identifier)
                       .values(session_id=None))
