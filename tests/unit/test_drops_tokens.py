"""Queue tickets and admission passes: what they say survives the trip, and nothing else passes
for them — an altered one, one of the other kind, one signed with another secret, a bearer token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from instock.drops import model
from instock.drops.tokens import BadToken, DropTokens
from instock.platform.principal import Role
from instock.platform.tokens import TokenAuthority

SECRET = "a-test-secret-of-some-length-0123456789"


@pytest.fixture
def now() -> datetime:
    """Now, when the test runs: a module-level one would age past the tokens' lifetimes in a
    long suite (collection happens long before the last test)."""
    return datetime.now(UTC)


def tokens(secret: str = SECRET) -> DropTokens:
    return DropTokens(secret, "instock", pass_ttl_seconds=120, ticket_ttl_seconds=3600)


def test_a_ticket_and_a_pass_say_what_they_were_given(now: datetime) -> None:
    t = tokens()
    ticket = t.ticket(model.TicketClaims("d1", "c1", "t1"), now)
    assert t.read_ticket(ticket) == model.TicketClaims("d1", "c1", "t1")
    granted = t.pass_for("d1", "c1", now)
    assert granted.expires_at == now + timedelta(seconds=120)
    read = t.read_pass(t.admission_pass(granted, now))
    assert (read.drop_id, read.customer_id) == ("d1", "c1")
    assert abs((read.expires_at - granted.expires_at).total_seconds()) < 1


def test_nothing_else_passes_for_a_ticket_or_a_pass(now: datetime) -> None:
    t = tokens()
    ticket = t.ticket(model.TicketClaims("d1", "c1", "t1"), now)
    admission = t.admission_pass(t.pass_for("d1", "c1", now), now)
    bearer = TokenAuthority(SECRET, "instock", 3600).mint(Role.CUSTOMER, "c1")
    elsewhere = tokens("another-secret-of-some-length-0123456789")
    with pytest.raises(BadToken, match="genuine pass"):
        t.read_pass(ticket)  # a ticket is not a pass
    with pytest.raises(BadToken, match="genuine ticket"):
        t.read_ticket(admission)  # nor a pass a ticket
    for forged in (bearer, elsewhere.admission_pass(elsewhere.pass_for("d1", "c1", now), now),
                   admission[:-3] + ("abc" if not admission.endswith("abc") else "xyz"),
                   "", "not.a.token"):
        with pytest.raises(BadToken, match="genuine pass"):
            t.read_pass(forged)


def test_an_expired_pass_says_so(now: datetime) -> None:
    t = tokens()
    then = now - timedelta(minutes=10)
    with pytest.raises(BadToken, match="expired"):
        t.read_pass(t.admission_pass(t.pass_for("d1", "c1", then), then))
