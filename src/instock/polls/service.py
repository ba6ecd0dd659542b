"""Poll use cases: define a poll, pick the next one for a shopper, take an answer (stored and
published as `poll.answered.v1` in one transaction), add the answers up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from instock.platform.bus import outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import Conflict, NotFound, ValidationFailed
from instock.platform.ids import new_id
from instock.polls import model, store


@dataclass(frozen=True)
class PollSettings:
    # At most one poll per session per this many minutes (the same one may come back).
    minutes_between_polls: float = 30.0


class PollsService:
    def __init__(self, db: Database, settings: PollSettings | None = None) -> None:
        self.db = db
        self.settings = settings or PollSettings()

    async def define(self, poll: model.Poll) -> model.Poll:
        """Store a new poll (its id and creation time are ours); 422 naming the bad field."""
        poll = replace(poll, id=new_id(), created_at=utcnow())
        try:
            model.check_poll(poll)
        except model.InvalidPoll as exc:
            raise ValidationFailed(exc.field, exc.reason) from exc
        async with self.db.write() as conn:
            await store.add_poll(conn, poll)
        return poll

    async def get(self, poll_id: str) -> model.Poll:
        async with self.db.read() as conn:
            poll = await store.get_poll(conn, poll_id)
        if poll is None:
            raise NotFound(f"poll {poll_id} does not exist")
        return poll

    async def next_for(self, session_id: str, context: str, customer_id: str | None = None,
                       product_id: str | None = None,
                       category: str | None = None) -> model.Poll | None:
        """The poll to show this shopper now (None: none), remembered as shown to the session."""
        now = utcnow()
        async with self.db.write() as conn:
            candidates = await store.open_polls(conn, now)
            done = await store.answered_polls(conn, [p.id for p in candidates], session_id,
                                              customer_id)
            poll = model.choose(
                candidates, context=context, now=now, answered=done,
                last_shown=await store.last_shown(conn, session_id),
                interval=timedelta(minutes=self.settings.minutes_between_polls),
                product_id=product_id, category=category)
            if poll is not None:
                await store.record_shown(conn, session_id, poll.id, now)
        return poll

    async def answer(self, poll_id: str, session_id: str | None, customer_id: str | None,
                     choices: Sequence[model.Choice],
                     correlation_id: str | None = None) -> model.Answer:
        """Store an answer and publish it; 422 naming the field for an unknown question or
        option (nothing stored), 409 when this session or customer answered the poll before."""
        if not (session_id or customer_id):
            raise ValidationFailed("session_id", "session_id or customer_id is required")
        now = utcnow()
        async with self.db.write() as conn:
            poll = await store.get_poll(conn, poll_id)
            if poll is None:
                raise NotFound(f"poll {poll_id} does not exist")
            try:
                checked = model.check_answer(poll, choices, now)
            except model.InvalidPoll as exc:
                raise ValidationFailed(exc.field, exc.reason) from exc
            answer = model.Answer(new_id(), poll_id, session_id, customer_id, checked, now)
            if not await store.add_answer(conn, answer):
                raise Conflict(f"this shopper already answered poll {poll_id}")
            await outbox.add(conn, [model.answered(poll, answer)], correlation_id)
        return answer

    async def results(self, poll_id: str) -> model.Results:
        async with self.db.read() as conn:
            poll = await store.get_poll(conn, poll_id)
            if poll is None:
                raise NotFound(f"poll {poll_id} does not exist")
            counts, respondents = await store.counts(conn, poll_id)
        return model.results(poll, counts, respondents)

    # -- personal data (the privacy registry calls these) ------------------------------------

    async def export_subject(self, customer_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            return {"poll_answers": await store.answers_of(conn, customer_id)}

    async def erase_subject(self, customer_id: str, pseudonym: str) -> None:
        """Idempotent; called with the customer id and with each session id they used."""
        async with self.db.write() as conn:
            await store.erase(conn, customer_id, pseudonym)
