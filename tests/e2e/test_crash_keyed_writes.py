"""SIGKILL a server while keyed stock receipts flow: every retry is answered, none applied twice.

Issue 17, item 3 (the crash window of issue 2): a write whose server died after committing and
before storing its response must, on retry with the same key, return the committed result, not
"in progress" until a timeout, and never apply twice. A keyed write stores its response in the
transaction of its change, so after the kill each key is either committed with its answer or not
at all. Every client left without an answer retries at once on a second server: each gets 200
(the stored answer, or its receipt made now), and the stock received is exactly one unit per key.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    Call,
    Outcome,
    ServerFactory,
    audit_verify,
    burst,
    client,
    create_location,
    create_product,
    stock,
)

pytestmark = pytest.mark.slow

SKU, LOCATION = "keyed-1", "wh-1"
CLIENTS = 240
KILL_AFTER = 40  # answered receipts seen before the SIGKILL
KILL_DELAY = 0.01  # seconds after the KILL_AFTERth answer (not a timing assertion)
BODY = {"sku": SKU, "location": LOCATION, "kind": "receive", "quantity": 1, "reason": "crash"}


def calls(clients: list[int], base: int = 0) -> list[Call]:
    return [Call("/v1/inventory/adjustments", BODY, subject="receiver", role=Role.INVENTORY,
                 headers={"Idempotency-Key": f"receipt-{c:04d}"}, server=base) for c in clients]


async def test_sigkill_between_commit_and_answer_retries_get_the_committed_answer(
        servers: ServerFactory) -> None:
    victim = await servers.start()
    async with client(victim.base_url, Role.ADMIN) as admin:
        await create_product(admin, "keyed", [SKU])
        await create_location(admin, LOCATION)
    answered = 0

    def kill_mid_run(outcome: Outcome) -> None:
        nonlocal answered
        if outcome.status == 200:
            answered += 1
            if answered == KILL_AFTER:
                asyncio.get_running_loop().call_later(KILL_DELAY, victim.sigkill)

    result = await burst([victim.base_url], calls(list(range(CLIENTS))),
                         on_response=kill_mid_run)
    assert victim.process.returncode == -signal.SIGKILL, victim.process.returncode
    statuses = result.statuses()
    assert set(statuses) <= {200, None}, statuses
    first = {o.index: o for o in result.with_status(200)}
    cut = sorted(o.index for o in result.with_status(None))
    assert cut, f"the kill came too late to cut the load: {statuses}"
    committed_unseen = await servers.db.scalar(
        "SELECT count(*) FROM ledger WHERE sku = :sku", sku=SKU) - len(first)

    # A second server on the same database; every client without an answer retries there, now.
    survivor = await servers.start()
    retried = await burst([survivor.base_url], calls(cut))
    for outcome in retried.outcomes:
        assert outcome.status == 200, outcome  # never "in progress", never a 5xx
    replayed = sum(o.replayed for o in retried.outcomes)
    assert replayed == committed_unseen, (replayed, committed_unseen)

    # Every key is now stored with its answer: all of them replay, those answered before the
    # kill with the very answer they got.
    again = await burst([survivor.base_url], calls(list(range(CLIENTS))))
    for outcome in again.outcomes:
        assert outcome.status == 200 and outcome.replayed, outcome
        if outcome.index in first:
            assert outcome.body == first[outcome.index].body, outcome

    # One unit per key: none lost, none twice; the ledger holds one receipt per key.
    async with client(survivor.base_url, Role.ADMIN) as admin:
        assert (await stock(admin, SKU))["on_hand"] == CLIENTS
    receipts = await servers.db.scalar("SELECT count(*) FROM ledger WHERE sku = :sku", sku=SKU)
    assert receipts == CLIENTS
    code, said = await audit_verify(servers.db)
    assert code == 0, said
    print(f"\n[e2e crash, keyed writes] {servers.db.backend}: {len(first)} answered before the "
          f"SIGKILL, {committed_unseen} committed unanswered (replayed on retry), "
          f"{len(cut) - committed_unseen} not committed (made on retry)")
