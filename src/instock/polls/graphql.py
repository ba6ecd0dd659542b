"""Polls in GraphQL: a shopper's next poll and their answer (anonymous sessions too), checked
by the REST routes' own input models."""

from __future__ import annotations

import strawberry

from instock.platform.graphql import Info, correlation_id, parse, require
from instock.polls import api, model
from instock.polls.service import PollsService


def service(info: Info) -> PollsService:
    svc: PollsService = info.context.state.polls
    return svc


def _customer(info: Info, customer_id: str | None) -> str | None:
    """As on REST: anonymous for a session only; a token's holder as `api.acting_for`."""
    principal = info.context.principal
    if principal is not None:
        principal = require(info, *api.SHOPPER_ROLES)
    return api.acting_for(principal, customer_id)


@strawberry.type
class PollAttribute:
    attribute: str
    value: str


@strawberry.type
class PollOption:
    id: str
    label: str
    attributes: list[PollAttribute] = strawberry.field(
        description="what choosing it says about the shopper, e.g. size M")


@strawberry.type
class PollQuestion:
    id: str
    text: str
    options: list[PollOption]


@strawberry.type
class Poll:
    id: str
    title: str
    questions: list[PollQuestion]


@strawberry.type
class PollAnswer:
    id: str
    poll_id: str


@strawberry.input
class PollChoiceInput:
    question_id: str
    option_id: str


def _poll(poll: model.Poll) -> Poll:
    return Poll(id=poll.id, title=poll.title, questions=[
        PollQuestion(id=q.id, text=q.text, options=[
            PollOption(id=o.id, label=o.label, attributes=[
                PollAttribute(attribute=a, value=v) for a, v in sorted(o.attributes.items())])
            for o in q.options]) for q in poll.questions])


@strawberry.type
class PollsQuery:
    @strawberry.field(description="the poll to show this shopper now (null: none); at most one "
                                  "per session per interval, never one they answered")
    async def next_poll(self, info: Info, session_id: str, context: str,
                        customer_id: str | None = None, product_id: str | None = None,
                        category: str | None = None) -> Poll | None:
        body = parse(api.NextIn, {"session_id": session_id, "context": context,
                                  "customer_id": customer_id, "product_id": product_id,
                                  "category": category})
        customer = _customer(info, body.customer_id)
        poll = await service(info).next_for(body.session_id, body.context, customer,
                                            body.product_id, body.category)
        return _poll(poll) if poll else None


@strawberry.type
class PollsMutation:
    @strawberry.mutation(description="answer a poll, once per session and per customer")
    async def answer_poll(self, info: Info, poll_id: str, answers: list[PollChoiceInput],
                          session_id: str | None = None,
                          customer_id: str | None = None) -> PollAnswer:
        body = parse(api.AnswerIn, {"session_id": session_id, "customer_id": customer_id,
                                    "answers": [vars(a) for a in answers]})
        customer = _customer(info, body.customer_id)
        answer = await service(info).answer(
            poll_id, body.session_id, customer,
            [model.Choice(c.question_id, c.option_id) for c in body.answers],
            correlation_id(info))
        return PollAnswer(id=answer.id, poll_id=answer.poll_id)
