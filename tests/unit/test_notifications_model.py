"""Pure rules of back-in-stock waves and notifications: wave sizes and order, quiet hours, rate
limits, the dedupe key, message ids and unsubscribe tokens."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from instock.notifications import model
from instock.notifications.model import Contact, Notification, Rules, Suppression
from instock.waitlist.model import Entry, after_wave, in_line, wave_size

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_wave_is_k_times_what_is_available_and_never_negative() -> None:
    assert wave_size(5, 2) == 10
    assert wave_size(0, 2) == 0
    assert wave_size(-3, 2) == 0
    assert wave_size(4, 0) == 4  # k below 1 is taken as 1


def test_first_subscribed_first_ties_by_customer_and_told_ones_left_out() -> None:
    entries = [Entry("s", "b", NOW), Entry("s", "a", NOW),
               Entry("s", "z", NOW - timedelta(seconds=1)),
               Entry("s", "told", NOW - timedelta(days=1), notified_at=NOW)]
    assert [e.customer_id for e in in_line(entries)] == ["z", "a", "b"]


def test_a_wave_goes_on_while_people_wait_and_stops_when_sold_out_or_nobody_waits() -> None:
    later = after_wave("s", "ev-1", 0, 10, True, NOW, timedelta(seconds=60))
    assert later is not None and later.waves == 1 and later.next_at == NOW + timedelta(seconds=60)
    assert after_wave("s", "ev-1", 1, 0, True, NOW, timedelta(seconds=60)) is None  # sold out
    assert after_wave("s", "ev-1", 1, 4, False, NOW, timedelta(seconds=60)) is None  # all told


def notification(reason: str = "back_in_stock", channel: str = "email",
                 recipient: str = "c1") -> Notification:
    return Notification("n1", recipient, None if recipient == model.STAFF else recipient,
                        reason, "sku-1", "ev-1", channel, {"sku": "sku-1"}, NOW)


RULES = Rules(time(22, 0), time(8, 0), "UTC", rate_per_hour=3)
OK = Contact("c1@example.test", consent=True)


def test_quiet_hours_defer_to_their_end_in_the_recipients_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")  # 12:00 UTC is 21:00 in Tokyo; 14:00 UTC is 23:00
    assert model.quiet_until(NOW, tokyo, time(22, 0), time(8, 0)) is None
    late = NOW + timedelta(hours=2)
    until = model.quiet_until(late, tokyo, time(22, 0), time(8, 0))
    assert until == datetime(2026, 12, 6, 8, 0, tzinfo=tokyo)
    early = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)  # 05:00 in Tokyo, the same night's end
    assert model.quiet_until(early, tokyo, time(22, 0), time(8, 0)) == datetime(
        2026, 12, 6, 8, 0, tzinfo=tokyo)
    assert model.quiet_until(NOW, tokyo, time(0, 0), time(0, 0)) is None  # no quiet hours
    lunch = model.quiet_until(datetime(2026, 12, 5, 4, 30, tzinfo=UTC), tokyo, time(13, 0),
                              time(14, 0))
    assert lunch == datetime(2026, 12, 5, 14, 0, tzinfo=tokyo)


def test_send_time_decisions_in_order() -> None:
    n = notification()
    assert model.decide(n, OK, NOW, RULES, 0).send
    assert model.decide(n, None, NOW, RULES, 0).suppression is Suppression.NO_ADDRESS
    assert model.decide(n, Contact("a@b.c", consent=True, erased=True), NOW, RULES,
                        0).suppression is Suppression.ERASED
    assert model.decide(n, Contact("a@b.c"), NOW, RULES, 0).suppression is Suppression.NO_CONSENT
    withdrawn = Contact("a@b.c", consent=False, consent_source=model.UNSUBSCRIBE_SOURCE)
    assert model.decide(n, withdrawn, NOW, RULES, 0).suppression is Suppression.UNSUBSCRIBED
    assert model.decide(n, Contact(None, consent=True), NOW, RULES,
                        0).suppression is Suppression.NO_ADDRESS
    assert model.decide(n, OK, NOW, RULES, 3).suppression is Suppression.RATE_LIMITED
    night = model.decide(n, Contact("a@b.c", consent=True, time_zone="Asia/Tokyo"),
                         NOW + timedelta(hours=2), RULES, 0)
    assert not night.send and night.suppression is None and night.defer_until is not None


def test_order_mail_is_transactional_and_staff_alerts_skip_customer_rules() -> None:
    order = notification("order_confirmation")
    at_night = Contact("a@b.c", time_zone="Asia/Tokyo")  # no consent asked for an order
    assert model.decide(order, at_night, NOW + timedelta(hours=2), RULES, 99).send
    assert model.decide(notification("low_stock", "slack", model.STAFF), None, NOW, RULES,
                        99).send


def test_rate_limit_and_dedupe_key() -> None:
    assert not model.over_rate(2, 3)
    assert model.over_rate(3, 3)
    assert notification().key == ("c1", "back_in_stock", "sku-1", "ev-1", "email")


def test_events_make_notifications_once_per_recipient_reason_subject_and_channel() -> None:
    ids = iter(range(100))
    made = model.from_event(
        "waitlist.notified.v1", {"sku": "s", "customer_id": "c1", "available": 3,
                                 "cause": "ev"}, lambda: str(next(ids)), NOW,
        customer_channels=frozenset({"email", "sms"}), staff_channels=frozenset())
    assert [(n.reason, n.channel, n.cause) for n in made] == [
        ("back_in_stock", "email", "ev"), ("back_in_stock", "sms", "ev")]
    alerts = model.from_event("inventory.low_stock.v1", {"sku": "s", "sku_version": 7,
                                                        "available": 2, "threshold": 3},
                              lambda: str(next(ids)), NOW, customer_channels=frozenset(),
                              staff_channels=frozenset({"slack"}))
    assert [(n.recipient, n.channel, n.cause) for n in alerts] == [(model.STAFF, "slack", "7")]
    anonymous = {"order_id": "o", "customer_id": None, "total": "1", "currency": "EUR",
                 "lines": []}
    assert model.from_event("order.paid.v1", anonymous, lambda: "x", NOW,
                            customer_channels=frozenset({"email"}),
                            staff_channels=frozenset()) == []


def test_a_drop_win_mails_the_entrant_once_per_entry() -> None:
    won = {"drop_id": "d1", "entry_id": "e1", "customer_id": "c1", "rank": 4,
           "rolled_over": True, "skus": ["s1"], "claim_until": "2026-12-07T12:15:00+00:00"}
    made = model.from_event("drop.won.v1", won, lambda: "n1", NOW,
                            customer_channels=frozenset({"email", "sms"}),
                            staff_channels=frozenset())
    assert [(n.recipient, n.reason, n.subject, n.cause, n.channel) for n in made] == [
        ("c1", "drop_won", "d1", "e1", "email")]
    assert made[0].transactional and made[0].data["rolled_over"] is True


def test_message_id_is_the_notifications_own() -> None:
    assert model.message_id("0190-ab", "instock <shop@brand.example>") == "<0190-ab@brand.example>"
    assert model.message_id("x", "shop@a.b") == model.message_id("x", "shop@a.b")


def test_unsubscribe_tokens_are_signed() -> None:
    token = model.unsubscribe_token(b"k" * 32, "cus-1", "back_in_stock_email")
    assert model.read_unsubscribe_token(b"k" * 32, token) == ("cus-1", "back_in_stock_email")
    body = token.split(".")[0]
    for bad in (token + "x", "abc", "", "é.é", "\ud800.x", body + ".é", body + ".",
                model.unsubscribe_token(b"o" * 32, "cus-1", "back_in_stock_email")):
        with pytest.raises(model.InvalidToken):
            model.read_unsubscribe_token(b"k" * 32, bad)


def test_pace_spaces_sends() -> None:
    pace = model.Pace(2.0)
    assert pace.wait(10.0) == 0.0
    assert pace.wait(10.0) == 0.5
    assert pace.wait(10.2) == pytest.approx(0.8)
    assert model.Pace(0).wait(1.0) == 0.0


@pytest.mark.parametrize("reason", ["back_in_stock", "order_confirmation", "order_shipped",
                                    "order_refunded", "low_stock", "sold_out", "drop_won"])
def test_every_packaged_template_renders_and_html_is_escaped(reason: str) -> None:
    from instock.notifications.templates import Templates

    context = {"sku": "<b>S</b>", "available": 3, "threshold": 5, "order_id": "o-1",
               "total": "59.90", "currency": "EUR", "lines": [{"sku": "S", "quantity": 1}],
               "name": "Ann <script>", "unsubscribe_url": "https://x.example/u?token=t",
               "shop_url": "https://x.example", "drop_id": "d-1", "skus": ["<i>S</i>"],
               "claim_until": "2026-12-07T12:15:00+00:00", "rolled_over": True}
    rendered = Templates().render(reason, "email", context)
    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.html is not None and "<script>" not in rendered.html
    assert Templates().render(reason, "slack", context).html is None


def test_a_template_missing_a_value_fails_whole(tmp_path: Path) -> None:
    from instock.notifications.templates import TemplateFailed, Templates

    directory = tmp_path
    (directory / "sold_out.txt").write_text("{{ nothing_here }}")
    with pytest.raises(TemplateFailed, match="nothing_here"):
        Templates(directory).render("sold_out", "slack", {"sku": "S"})
