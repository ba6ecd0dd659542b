"""On-site micro-polls, free of I/O: what a valid poll and answer are, which poll a shopper
sees next, and what the answers add up to (shares with Wilson score intervals)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from instock.polls.events import ChosenOption, PollAnswered, StatedAttribute

# Where a storefront may show a poll.
CONTEXTS = ("product_page", "sold_out", "checkout_abandoned")
# The product attributes an option may map to: those recommendations learns preferences of
# (recommendations.engine.PREFERENCES). A cosmetics "shade" is a colour.
ATTRIBUTES = ("brand", "category", "colour", "size", "tag")
Z_95 = 1.959963984540054  # the standard normal quantile of 0.975


class InvalidPoll(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Option:
    id: str
    label: str
    attributes: dict[str, str]  # e.g. {"size": "M"}: what choosing it says about the shopper


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: tuple[Option, ...]

    def option(self, option_id: str) -> Option | None:
        return next((o for o in self.options if o.id == option_id), None)


@dataclass(frozen=True)
class Poll:
    id: str
    title: str
    questions: tuple[Question, ...]
    contexts: tuple[str, ...]
    product_ids: tuple[str, ...]  # product pages it is for (none: any, unless categories)
    categories: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime
    created_by: str

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    @property
    def targeted(self) -> bool:
        return bool(self.product_ids or self.categories)


@dataclass(frozen=True)
class Choice:
    question_id: str
    option_id: str


@dataclass(frozen=True)
class Answer:
    id: str
    poll_id: str
    session_id: str | None
    customer_id: str | None
    choices: tuple[Choice, ...]
    answered_at: datetime


def check_poll(poll: Poll) -> Poll:
    """The poll if it is one a shopper can answer; InvalidPoll names the first bad field."""
    if not poll.questions:
        raise InvalidPoll("questions", "at least one question")
    if not poll.contexts:
        raise InvalidPoll("contexts", "at least one context")
    for i, context in enumerate(poll.contexts):
        if context not in CONTEXTS:
            raise InvalidPoll(f"contexts[{i}]", f"one of {', '.join(CONTEXTS)}")
    if poll.targeted and "product_page" not in poll.contexts:
        raise InvalidPoll("product_ids", "only product_page polls are shown for products")
    if poll.ends_at is not None and poll.ends_at <= poll.starts_at:
        raise InvalidPoll("ends_at", "after starts_at")
    _unique("questions", [q.id for q in poll.questions])
    for qi, question in enumerate(poll.questions):
        if len(question.options) < 2:
            raise InvalidPoll(f"questions[{qi}].options", "at least two options")
        _unique(f"questions[{qi}].options", [o.id for o in question.options])
        for oi, option in enumerate(question.options):
            for attribute in option.attributes:
                if attribute not in ATTRIBUTES:
                    raise InvalidPoll(f"questions[{qi}].options[{oi}].attributes.{attribute}",
                                      f"one of {', '.join(ATTRIBUTES)}")
    return poll


def _unique(field: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise InvalidPoll(f"{field}[{i}].id", f"{value!r} is used twice")
        seen.add(value)


def check_answer(poll: Poll, choices: Sequence[Choice], now: datetime) -> tuple[Choice, ...]:
    """The choices if they answer this poll (each question at most once, known options);
    InvalidPoll names the first bad field (`answers[1].option_id`)."""
    if not poll.active(now):
        raise InvalidPoll("poll_id", "the poll is not open")
    if not choices:
        raise InvalidPoll("answers", "at least one answer")
    answered: set[str] = set()
    for i, choice in enumerate(choices):
        question = poll.question(choice.question_id)
        if question is None:
            raise InvalidPoll(f"answers[{i}].question_id",
                              f"no question {choice.question_id!r} in this poll")
        if choice.question_id in answered:
            raise InvalidPoll(f"answers[{i}].question_id", "answered twice")
        if question.option(choice.option_id) is None:
            raise InvalidPoll(f"answers[{i}].option_id",
                              f"no option {choice.option_id!r} in question {question.id!r}")
        answered.add(choice.question_id)
    return tuple(choices)


def mapped_attributes(poll: Poll, choices: Iterable[Choice]) -> list[tuple[str, str]]:
    """What the chosen options say about the shopper: (attribute, value), in answer order."""
    pairs: list[tuple[str, str]] = []
    for choice in choices:
        question = poll.question(choice.question_id)
        option = question.option(choice.option_id) if question else None
        if option is not None:
            pairs.extend(sorted(option.attributes.items()))
    return pairs


def answered(poll: Poll, answer: Answer) -> PollAnswered:
    return PollAnswered(
        answer_id=answer.id, poll_id=poll.id, session_id=answer.session_id,
        customer_id=answer.customer_id,
        choices=[ChosenOption(question_id=c.question_id, option_id=c.option_id)
                 for c in answer.choices],
        attributes=[StatedAttribute(attribute=a, value=v)
                    for a, v in mapped_attributes(poll, answer.choices)],
        answered_at=answer.answered_at)


# -- which poll a shopper sees ------------------------------------------------------------

@dataclass(frozen=True)
class Shown:
    """The poll a session was last shown, and when."""

    poll_id: str
    at: datetime


def choose(polls: Iterable[Poll], *, context: str, now: datetime, answered: set[str],
           last_shown: Shown | None, interval: timedelta, product_id: str | None = None,
           category: str | None = None) -> Poll | None:
    """The poll to show, or None.

    - only open polls for this context that the shopper has not answered;
    - a product-page poll for given products or categories only on those products' pages;
      one for the very product or category comes before a general one, then the newest;
    - at most one poll per session per `interval`: within it the poll last shown may be shown
      again (a reload must not lose it), any other waits."""
    fits = [p for p in polls if p.active(now) and context in p.contexts
            and p.id not in answered and _targets(p, context, product_id, category)]
    if last_shown is not None and now - last_shown.at < interval:
        return next((p for p in fits if p.id == last_shown.poll_id), None)
    fits.sort(key=lambda p: (not p.targeted, -p.created_at.timestamp(), p.id))
    return fits[0] if fits else None


def _targets(poll: Poll, context: str, product_id: str | None, category: str | None) -> bool:
    if context != "product_page" or not poll.targeted:
        return True
    return (product_id is not None and product_id in poll.product_ids) or (
        category is not None and category in poll.categories)


# -- what the answers add up to -----------------------------------------------------------

@dataclass(frozen=True)
class Share:
    count: int
    share: float
    low: float  # the 95 % Wilson score interval of the share
    high: float


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sound for small samples and shares near 0
    or 1, where the normal approximation leaves [0, 1]. No trials: anything, (0, 1)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def share(count: int, total: int) -> Share:
    low, high = wilson(count, total)
    return Share(count, count / total if total else 0.0, low, high)


@dataclass(frozen=True)
class QuestionResult:
    question_id: str
    answers: int
    options: dict[str, Share]


@dataclass(frozen=True)
class Results:
    poll_id: str
    respondents: int
    questions: tuple[QuestionResult, ...]
    # attribute -> value -> share among the answers that said something of that attribute
    # (the size curve before a drop: {"size": {"S": …, "M": …}})
    attributes: dict[str, dict[str, Share]]


def results(poll: Poll, counts: Mapping[tuple[str, str], int], respondents: int) -> Results:
    """Counts per (question, option) into shares per question and per attribute value."""
    questions = []
    by_attribute: dict[str, dict[str, int]] = {}
    for question in poll.questions:
        total = sum(counts.get((question.id, o.id), 0) for o in question.options)
        questions.append(QuestionResult(question.id, total, {
            o.id: share(counts.get((question.id, o.id), 0), total) for o in question.options}))
        for option in question.options:
            for attribute, value in option.attributes.items():
                values = by_attribute.setdefault(attribute, {})
                values[value] = values.get(value, 0) + counts.get((question.id, option.id), 0)
    attributes = {}
    for attribute, values in sorted(by_attribute.items()):
        total = sum(values.values())
        attributes[attribute] = {v: share(n, total) for v, n in values.items()}
    return Results(poll.id, respondents, tuple(questions), attributes)
