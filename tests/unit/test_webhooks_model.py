"""Outbound webhook rules: type matching, subscription checks, the retry schedule, the signed
request a receiver gets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from instock.platform.signatures import SignatureError, verify
from instock.webhooks import model
from instock.webhooks.model import Delivery, Status, Subscription, WebhookError
from instock.webhooks.service import Policy, request_headers, wire_body

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
KNOWN = {"inventory.stock_changed.v1", "inventory.sold_out.v1", "order.paid.v1",
         "webhook.dead_lettered.v1"}


def subscription(*patterns: str, active: bool = True, sid: str = "sub-1") -> Subscription:
    return Subscription(sid, "https://example.com/hook", patterns, "s" * 32, "", active, NOW, NOW)


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(("patterns", "event_type", "expected"), [
    (["inventory.stock_changed.v1"], "inventory.stock_changed.v1", True),
    (["inventory.stock_changed.v1"], "inventory.sold_out.v1", False),
    (["inventory.*"], "inventory.sold_out.v1", True),
    (["inventory.*"], "inventoryx.sold_out.v1", False),  # the dot is part of the prefix
    (["order.*"], "inventory.sold_out.v1", False),
    (["order.*", "inventory.sold_out.v1"], "inventory.sold_out.v1", True),
    (["inventory.stock_changed.*"], "inventory.stock_changed.v2", True),
    ([], "inventory.sold_out.v1", False),
])
def test_an_event_type_matches_exact_types_and_prefix_wildcards(
        patterns: list[str], event_type: str, expected: bool) -> None:
    assert model.matches(patterns, event_type) is expected


def test_a_disabled_subscription_wants_nothing() -> None:
    assert subscription("inventory.*").wants("inventory.sold_out.v1", "SKU-1")
    assert not subscription("inventory.*", active=False).wants("inventory.sold_out.v1", "SKU-1")


def test_a_subscription_is_not_sent_its_own_dead_letters() -> None:
    watcher = subscription("webhook.*", sid="ops")
    assert watcher.wants("webhook.dead_lettered.v1", "another-subscription")
    assert not watcher.wants("webhook.dead_lettered.v1", "ops")


# -- checks ----------------------------------------------------------------------------------


def test_event_types_are_known_types_or_wildcards_that_match_one() -> None:
    assert model.event_types(["order.*", "inventory.sold_out.v1", "order.*"], KNOWN) == (
        "inventory.sold_out.v1", "order.*")
    with pytest.raises(WebhookError) as unknown:
        model.event_types(["inventory.sold_out.v1", "inventory.stock_changd.v1"], KNOWN)
    assert unknown.value.field == "event_types[1]" and "unknown" in unknown.value.reason
    with pytest.raises(WebhookError) as nothing:
        model.event_types(["refund.*"], KNOWN)
    assert nothing.value.field == "event_types[0]" and "matches no" in nothing.value.reason
    for bad in (["*"], [".*"], ["inventory"]):
        with pytest.raises(WebhookError):
            model.event_types(bad, KNOWN)
    with pytest.raises(WebhookError) as empty:
        model.event_types([], KNOWN)
    assert empty.value.field == "event_types"


@pytest.mark.parametrize("url", ["https://hooks.example.com/instock", "http://127.0.0.1:9000/x",
                                 "https://h.example/p?token=abc"])
def test_receiver_urls_are_absolute_http_or_https(url: str) -> None:
    assert model.url(url) == url


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "https://",
                                 "https:///path", "javascript:alert(1)", "http://h:99999/",
                                 "https://example.com/a b", "https://example.com/#frag",
                                 "https://example.com/\x00", "https://exa\x7fmple.com/",
                                 "https://example.com/" + "x" * 2048])
def test_other_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(WebhookError) as refused:
        model.url(url)
    assert refused.value.field == "url"


def test_secrets_are_long_and_printable() -> None:
    assert model.secret("x" * 16) == "x" * 16
    for bad in ("x" * 15, "x" * 201, "x" * 20 + "\x00"):
        with pytest.raises(WebhookError) as refused:
            model.secret(bad)
        assert refused.value.field == "secret"


def test_a_patch_changes_what_it_names_and_checks_it() -> None:
    s = subscription("order.*")
    later = NOW + timedelta(minutes=1)
    changed = model.patched(s, {"active": False, "event_types": ["inventory.*"]}, KNOWN, later)
    assert (changed.active, changed.event_types, changed.url, changed.secret) == (
        False, ("inventory.*",), s.url, s.secret)
    assert changed.updated_at == later and changed.created_at == NOW
    with pytest.raises(WebhookError) as bad:
        model.patched(s, {"url": "gopher://x"}, KNOWN, later)
    assert bad.value.field == "url"
    with pytest.raises(WebhookError) as secret:
        model.patched(s, {"secret": "x" * 40}, KNOWN, later)
    assert secret.value.field == "secret"


# -- retries ---------------------------------------------------------------------------------


def test_after_an_attempt_a_delivery_is_delivered_retried_or_dead() -> None:
    kwargs = {"max_attempts": 3, "now": NOW, "wait": timedelta(seconds=15)}
    assert model.after_attempt(1, True, **kwargs).status is Status.DELIVERED
    retry = model.after_attempt(2, False, **kwargs)
    assert retry.status is Status.PENDING and retry.due_at == NOW + timedelta(seconds=15)
    dead = model.after_attempt(3, False, **kwargs)
    assert dead.dead and dead.due_at is None
    assert model.after_attempt(3, True, **kwargs).status is Status.DELIVERED


# -- the request -----------------------------------------------------------------------------


def delivery(envelope: dict[str, object]) -> Delivery:
    return Delivery("del-1", "sub-1", str(envelope["id"]), str(envelope["type"]), envelope,
                    Status.PENDING, 2, NOW, NOW)


def test_the_signature_header_verifies_over_the_exact_bytes_sent() -> None:
    envelope = {"specversion": "1.0", "id": "evt-1", "type": "inventory.sold_out.v1",
                "subject": "SKU-ü", "data": {"sku": "SKU-ü", "n": 1}}
    body = wire_body(envelope)
    assert json.loads(body) == envelope
    headers = request_headers(delivery(envelope), body, "whsec_test-secret",
                              timestamp=1_800_000_000)
    assert headers["Instock-Event-Id"] == "evt-1"
    assert headers["Instock-Event-Type"] == "inventory.sold_out.v1"
    assert headers["Instock-Delivery-Id"] == "del-1" and headers["Instock-Attempt"] == "2"
    assert headers["Content-Type"] == "application/cloudevents+json"
    signature = headers["Instock-Signature"]
    assert signature.startswith("t=1800000000,v1=")
    assert verify(body, signature, "whsec_test-secret", now=1_800_000_010) == 1_800_000_000
    with pytest.raises(SignatureError):  # any other bytes, even the same JSON re-spaced
        verify(json.dumps(envelope).encode(), signature, "whsec_test-secret",
               now=1_800_000_010)
    with pytest.raises(SignatureError):
        verify(body, signature, "another-secret", now=1_800_000_010)


def test_the_policy_waits_in_the_upper_half_of_a_bound_that_doubles_up_to_the_cap() -> None:
    policy = Policy(backoff_base=30, backoff_max=300)
    schedule = [(policy.wait_after(n, 0.0), policy.wait_after(n, 1.0)) for n in range(1, 6)]
    assert [(low.total_seconds(), high.total_seconds()) for low, high in schedule] == [
        (15, 30), (30, 60), (60, 120), (120, 240), (150, 300)]
