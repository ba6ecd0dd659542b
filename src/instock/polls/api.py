"""Poll routes: merchandisers define polls and read their results; shoppers (anonymous
sessions too: the widget runs on any page) get the next poll and answer it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from instock.platform.auth import Principal, Role, principal_of, requires
from instock.platform.errors import Forbidden, ValidationFailed, problem_responses
from instock.platform.http import CallerId
from instock.platform.telemetry import correlation_id
from instock.platform.text import Printable
from instock.polls import model
from instock.polls.service import PollsService

router = APIRouter(prefix="/v1/polls", tags=["polls"],
                   responses=problem_responses(400, 401, 403, 404, 422))
MERCHANDISERS = requires(Role.MERCHANDISER)  # and admin, always
READERS = requires(Role.MERCHANDISER, Role.SUPPORT, Role.SERVICE)
# Who may ask for and answer polls with a token; without one, an anonymous session may.
SHOPPER_ROLES = frozenset({Role.CUSTOMER, Role.SERVICE, Role.MERCHANDISER, Role.SUPPORT,
                           Role.ADMIN})
_bearer = HTTPBearer(auto_error=False)

ShopperId = Annotated[Printable, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[Printable, StringConstraints(min_length=1, max_length=300,
                                              strip_whitespace=True)]
Value = Annotated[Printable, StringConstraints(min_length=1, max_length=128,
                                               strip_whitespace=True)]
Context = Literal["product_page", "sold_out", "checkout_abandoned"]
Attribute = Literal["brand", "category", "colour", "size", "tag"]


async def service(request: Request) -> PollsService:
    svc: PollsService = request.app.state.polls
    return svc


async def shopper(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
                  ) -> Principal | None:
    """The caller, or None for an anonymous shopper (a session on a storefront page)."""
    if credentials is None:
        return None
    principal = principal_of(request, credentials)
    if principal.role not in SHOPPER_ROLES:
        raise Forbidden(f"role {principal.role.value} may not do this")
    return principal


def acting_for(principal: Principal | None, customer_id: str | None) -> str | None:
    """The customer an anonymous caller may not name, and a customer's token names itself."""
    if principal is None:
        if customer_id is not None:
            raise Forbidden("naming a customer needs that customer's (or a service's) token")
        return None
    if principal.is_customer:
        customer_id = customer_id or principal.subject
    principal.assert_acts_for(customer_id)
    return customer_id


class OptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: CallerId
    label: Text
    attributes: dict[Attribute, Value] = Field(default_factory=dict, description=(
        "what choosing it says about the shopper, e.g. {\"size\": \"M\"}; a shade is a colour"))


class QuestionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: CallerId
    text: Text
    options: list[OptionIn] = Field(min_length=2, max_length=20)


class PollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Text
    questions: list[QuestionIn] = Field(min_length=1, max_length=10)
    contexts: list[Context] = Field(min_length=1, max_length=3, description=(
        "where it is shown: on a product page, after a sold-out, after checkout abandonment"))
    product_ids: list[CallerId] = Field(default_factory=list, max_length=200, description=(
        "product_page only: the products it is for (none and no categories: any product)"))
    categories: list[Value] = Field(default_factory=list, max_length=50)
    starts_at: AwareDatetime | None = Field(None, description="defaults to now")
    ends_at: AwareDatetime | None = None


class OptionOut(BaseModel):
    id: str
    label: str
    attributes: dict[str, str]


class QuestionOut(BaseModel):
    id: str
    text: str
    options: list[OptionOut]


class PollOut(BaseModel):
    id: str
    title: str
    questions: list[QuestionOut]
    contexts: list[str]
    product_ids: list[str]
    categories: list[str]
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime


class ChoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    option_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: ShopperId | None = None
    customer_id: ShopperId | None = Field(None, description=(
        "a known customer (their own token or a service's): the answer reaches the profile"))
    answers: list[ChoiceIn] = Field(min_length=1, max_length=10)


class NextIn(BaseModel):
    """What `GET /v1/polls/next` takes, as one model (GraphQL checks its arguments with it)."""

    session_id: ShopperId
    context: Context
    customer_id: ShopperId | None = None
    product_id: CallerId | None = None
    category: Value | None = None


class AnswerOut(BaseModel):
    id: str
    poll_id: str
    answered_at: datetime


class ShareOut(BaseModel):
    count: int
    share: float
    ci95_low: float = Field(description="95 % Wilson score interval of the share")
    ci95_high: float


class QuestionResultOut(BaseModel):
    question_id: str
    answers: int
    options: dict[str, ShareOut]


class ResultsOut(BaseModel):
    poll_id: str
    respondents: int
    questions: list[QuestionResultOut]
    attributes: dict[str, dict[str, ShareOut]] = Field(description=(
        "per attribute, each value's share of the answers that stated one (the size curve)"))


def render(poll: model.Poll) -> PollOut:
    return PollOut(
        id=poll.id, title=poll.title,
        questions=[QuestionOut(id=q.id, text=q.text, options=[
            OptionOut(id=o.id, label=o.label, attributes=o.attributes) for o in q.options])
            for q in poll.questions],
        contexts=list(poll.contexts), product_ids=list(poll.product_ids),
        categories=list(poll.categories), starts_at=poll.starts_at, ends_at=poll.ends_at,
        created_at=poll.created_at)


def _share(s: model.Share) -> ShareOut:
    return ShareOut(count=s.count, share=s.share, ci95_low=s.low, ci95_high=s.high)


@router.post("", status_code=201, response_model=PollOut)
async def define_poll(body: PollIn, principal: Principal = Depends(MERCHANDISERS),
                      polls: PollsService = Depends(service)) -> PollOut:
    """Define a poll: questions, options mapped to product attributes, where and when shown."""
    now = datetime.now(UTC)  # the service stamps created_at itself
    poll = model.Poll(
        id="", title=body.title,
        questions=tuple(model.Question(q.id, q.text, tuple(
            model.Option(o.id, o.label, {str(k): v for k, v in o.attributes.items()})
            for o in q.options)) for q in body.questions),
        contexts=tuple(dict.fromkeys(body.contexts)), product_ids=tuple(body.product_ids),
        categories=tuple(body.categories), starts_at=body.starts_at or now,
        ends_at=body.ends_at, created_at=now,
        created_by=f"{principal.role.value}:{principal.subject}")
    return render(await polls.define(poll))


@router.get("/next", response_model=PollOut, responses={204: {"description": "no poll now"}})
async def next_poll(
    session_id: Annotated[ShopperId, Query()],
    context: Annotated[Context, Query()],
    customer_id: Annotated[ShopperId | None, Query()] = None,
    product_id: Annotated[CallerId | None, Query()] = None,
    category: Annotated[Value | None, Query()] = None,
    principal: Principal | None = Depends(shopper),
    polls: PollsService = Depends(service),
) -> PollOut | Response:
    """The poll to show this shopper now: one not answered yet, at most one per session per
    interval (INSTOCK_POLL_MINUTES_BETWEEN); 204 when there is none. No token needed."""
    customer_id = acting_for(principal, customer_id)
    poll = await polls.next_for(session_id, context, customer_id, product_id, category)
    if poll is None:
        return Response(status_code=204)
    return render(poll)


@router.get("/{poll_id}", response_model=PollOut)
async def get_poll(poll_id: CallerId, principal: Principal = Depends(READERS),
                   polls: PollsService = Depends(service)) -> PollOut:
    return render(await polls.get(poll_id))


@router.post("/{poll_id}/answers", status_code=201, response_model=AnswerOut,
             responses=problem_responses(409))
async def answer_poll(poll_id: CallerId, body: AnswerIn, request: Request,
                      principal: Principal | None = Depends(shopper),
                      polls: PollsService = Depends(service)) -> AnswerOut:
    """Answer a poll, once per session and once per customer (a second answer is 409: answers
    are counted, so they are never replaced). An unknown question or option is 422 naming
    the field, and nothing is stored. No token needed for a session's answer."""
    customer_id = acting_for(principal, body.customer_id)
    if not (body.session_id or customer_id):
        raise ValidationFailed("session_id", "session_id or customer_id is required")
    answer = await polls.answer(
        poll_id, body.session_id, customer_id,
        [model.Choice(c.question_id, c.option_id) for c in body.answers],
        correlation_id(request))
    return AnswerOut(id=answer.id, poll_id=answer.poll_id, answered_at=answer.answered_at)


@router.get("/{poll_id}/results", response_model=ResultsOut)
async def poll_results(poll_id: CallerId, principal: Principal = Depends(MERCHANDISERS),
                       polls: PollsService = Depends(service)) -> ResultsOut:
    """Counts and shares (with 95 % Wilson intervals) per option, and per attribute value."""
    results = await polls.results(poll_id)
    return ResultsOut(
        poll_id=results.poll_id, respondents=results.respondents,
        questions=[QuestionResultOut(question_id=q.question_id, answers=q.answers,
                                     options={k: _share(v) for k, v in q.options.items()})
                   for q in results.questions],
        attributes={a: {v: _share(s) for v, s in values.items()}
                    for a, values in results.attributes.items()})
