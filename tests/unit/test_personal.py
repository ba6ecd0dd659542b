"""Renaming a person inside JSON documents (events, stored responses), for erasure."""

from __future__ import annotations

from instock.inventory.model import without_customer
from instock.platform.entry_context import EntryContext
from instock.platform.personal import mentions, scrub


def test_scrub_renames_exact_values_and_role_prefixed_ones_only() -> None:
    doc = {"data": {"customer_id": "cus-1", "by": "customer:cus-1", "other": "cus-10",
                    "lines": [{"note": "cus-1"}, 3, None]}, "subject": "cus-1",
           "text": "hello cus-1"}
    assert scrub(doc, "cus-1", "anon-x") == {
        "data": {"customer_id": "anon-x", "by": "customer:anon-x", "other": "cus-10",
                 "lines": [{"note": "anon-x"}, 3, None]}, "subject": "anon-x",
        "text": "hello cus-1"}
    assert mentions(doc, "cus-1") and not mentions(doc, "cus-2")
    assert not mentions({"n": 1, "s": "xcus-1"}, "cus-1")


def test_the_ledger_names_a_customer_by_role_and_staff_by_name() -> None:
    bought = without_customer(EntryContext("customer:cus-1", "reserve", "c-1", "k-1", "r-1"))
    assert (bought.actor, bought.reason, bought.correlation_id, bought.idempotency_key,
            bought.reference) == ("customer", "reserve", "c-1", "k-1", "r-1")
    staff = EntryContext("admin:ann", "count")
    assert without_customer(staff) is staff
