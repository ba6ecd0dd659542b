"""SIGKILL a server mid-drop: every reservation a buyer saw confirmed exists, and none more.

Every buyer sends an `Idempotency-Key`, as a client that means to retry must. The server is killed
with SIGKILL while confirmations are flowing; a second server is started on the same database, and
every buyer who got no answer (a transport error: the request may or may not have committed)
retries with the same key there, as a real client would. Afterwards the reservations the database
holds for the SKU are exactly the ones buyers hold (confirmed before the kill, or answered on the
retry): none lost, none invented, none twice. The reserved units equal that count, never more
than the stock, and the ledger still folds to the levels with every chain intact
(`instock audit verify`).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import pytest

from instock.platform.auth import Role
from instock.platform.db import utcnow
from instock.platform.idempotency import IN_PROGRESS_TIMEOUT, idempotency_keys
from tests.e2e.harness import (
    Database,
    LoadResult,
    Outcome,
    ServerFactory,
    assert_clean_insufficient,
    assert_clean_problem,
    audit_verify,
    client,
    problem_slug,
    reserve_burst,
    setup_drop,
    stock,
)

pytestmark = pytest.mark.slow

SKU = "sneaker-42"
BUYERS = 300
UNITS = 150  # more than the kill leaves time to sell, so confirmations are still flowing
# Confirmations seen before the SIGKILL: early, as a quiet machine answers the whole drop in a few
# batches (at 40 it once answered all 300 before the kill: nothing was cut).
KILL_AFTER = 10
KILL_DELAY = 0.01  # seconds after the KILL_AFTERth confirmation (not a timing assertion)
BODY = {"lines": [{"sku": SKU, "quantity": 1}]}


def key_of(buyer: int) -> str:
    return f"crash-drop-{buyer:04d}"


async def retry(base_url: str, buyers: list[int]) -> dict[int, Outcome]:
    """The given buyers send their request again, with the same key and body, all at once."""
    result = await reserve_burst([base_url], [BODY] * len(buyers),
                                 subjects=[f"buyer-{b}" for b in buyers],
                                 keys=[key_of(b) for b in buyers])
    return {buyers[o.index]: o for o in result.outcomes}


async def age_unfinished_claims(db: Database) -> int:
    """Let the idempotency claims of the killed server's unanswered requests time out.

    A claim whose request is still running answers a retry with 409 idempotency-in-progress for
    IN_PROGRESS_TIMEOUT; the killed process will never finish its claims. Rather than sleep that
    long, move their start back by that timeout: to the server this is the same as waiting.
    """
    return await db.execute(idempotency_keys.update().where(
        idempotency_keys.c.done.is_(False)).values(
        created_at=utcnow() - IN_PROGRESS_TIMEOUT - timedelta(seconds=1)))


def assert_retry_answer(buyer: int, outcome: Outcome, *extra_slugs: str) -> None:
    """A retried buyer gets its reservation or a clean refusal, never a 5xx or no answer."""
    assert outcome.status in (201, 409), outcome
    if outcome.status == 201:
        assert outcome.body is not None and outcome.body["status"] == "active", outcome
        assert outcome.body["lines"] == BODY["lines"], outcome.body
        assert outcome.body["customer_id"] == f"buyer-{buyer}", outcome.body
    else:
        assert_clean_problem(outcome, 409, "insufficient-stock", *extra_slugs)


async def test_sigkill_mid_drop_every_confirmation_exists_none_more(
        servers: ServerFactory) -> None:
    victim = await servers.start()
    await setup_drop(victim.base_url, [SKU], UNITS)
    seen_confirmed = 0

    def kill_mid_run(outcome: Outcome) -> None:
        nonlocal seen_confirmed
        if outcome.status == 201:
            seen_confirmed += 1
            if seen_confirmed == KILL_AFTER:
                # A moment later, not at once: right after writing an answer is the one instant
                # a server deciding one request at a time holds no commit still unanswered.
                asyncio.get_running_loop().call_later(KILL_DELAY, victim.sigkill)

    result: LoadResult = await reserve_burst(
        [victim.base_url], [BODY] * BUYERS, on_response=kill_mid_run,
        keys=[key_of(b) for b in range(BUYERS)])
    assert victim.process.returncode == -signal.SIGKILL, victim.process.returncode
    statuses = result.statuses()
    assert set(statuses) <= {201, 409, None}, statuses
    cut = [o.index for o in result.with_status(None)]
    assert cut, f"the kill came too late to cut the load: {statuses}"
    for outcome in result.with_status(409):
        assert_clean_insufficient(outcome, {SKU})
    held: dict[int, str] = {}  # buyer -> the reservation id the buyer was told it holds
    for outcome in result.with_status(201):
        assert outcome.body is not None and outcome.body["customer_id"] == f"buyer-{outcome.index}"
        held[outcome.index] = outcome.body["id"]
    assert len(set(held.values())) == len(held) >= KILL_AFTER

    # What the dead process left committed: its answered reservations and, maybe, some whose
    # answer never left it (those buyers must get them back on their retry, not new ones).
    db = servers.db
    at_kill = set(await db.column(
        "SELECT reservation_id FROM reservation_lines WHERE sku = :sku", sku=SKU))
    assert set(held.values()) <= at_kill, "a confirmed reservation is missing after the kill"

    # A new process on the same database; the buyers left without an answer retry there.
    survivor = await servers.start()
    first = await retry(survivor.base_url, cut)
    for buyer, outcome in first.items():
        # A request the dead server had claimed but never finished is "in progress" until its
        # claim times out; anything else is answered (replayed or decided now).
        assert_retry_answer(buyer, outcome, "idempotency-in-progress")
    in_progress = [b for b, o in first.items() if problem_slug(o) == "idempotency-in-progress"]
    aged = await age_unfinished_claims(db)
    assert aged == len(in_progress), (aged, in_progress)
    second = await retry(survivor.base_url, in_progress) if in_progress else {}
    for buyer, outcome in second.items():
        assert_retry_answer(buyer, outcome)
    answers = {**first, **second}
    for buyer, outcome in answers.items():
        if outcome.status == 201:
            assert outcome.body is not None
            held[buyer] = outcome.body["id"]
    assert len(set(held.values())) == len(held), "two buyers were given one reservation"

    # Buyers who were answered before the kill get the same answer again, from the other
    # process: the stored response, replayed.
    replays = await retry(survivor.base_url, sorted(b for b in held if b not in answers))
    for buyer, outcome in replays.items():
        assert outcome.status == 201 and outcome.replayed, outcome
        assert outcome.body is not None and outcome.body["id"] == held[buyer], outcome.body

    # The narrowest window of all, where a kill may or may not land: the reservation committed,
    # the process dead before it stored the answer to the key. Put every answered key in that
    # state (claimed, unfinished, timed out) and let every holder retry once more: each must get
    # its own reservation back, and none a second one.
    forgotten = await db.execute(idempotency_keys.update().where(
        idempotency_keys.c.status_code == 201).values(
        done=False, status_code=None, headers=None, body=None,
        created_at=utcnow() - IN_PROGRESS_TIMEOUT - timedelta(seconds=1)))
    assert forgotten == len(held), (forgotten, len(held))
    again = await retry(survivor.base_url, sorted(held))
    for buyer, outcome in again.items():
        assert outcome.status == 201 and not outcome.replayed, outcome
        assert outcome.body is not None and outcome.body["id"] == held[buyer], outcome.body

    # Exactly what the buyers hold is in the database: none lost, none more.
    in_db = set(await db.column(
        "SELECT r.id FROM reservations r JOIN reservation_lines l "
        "ON l.reservation_id = r.id WHERE l.sku = :sku", sku=SKU))
    lost = set(held.values()) - in_db
    invented = in_db - set(held.values())
    assert not lost, f"confirmed to a buyer, absent from the database: {sorted(lost)}"
    assert not invented, f"in the database, held by no buyer: {sorted(invented)}"
    assert len(in_db) <= UNITS
    assert at_kill <= in_db
    statuses_in_db = set(await db.column(
        "SELECT DISTINCT r.status FROM reservations r JOIN reservation_lines l "
        "ON l.reservation_id = r.id WHERE l.sku = :sku", sku=SKU))
    assert statuses_in_db == {"active"}, statuses_in_db
    every_reservation = await db.scalar("SELECT count(*) FROM reservations")
    assert every_reservation == len(in_db) + 1  # + the warm-up hold on another SKU
    units_in_db = await db.scalar(
        "SELECT COALESCE(SUM(quantity), 0) FROM reservation_lines WHERE sku = :sku", sku=SKU)
    allocated = await db.scalar(
        "SELECT COALESCE(SUM(a.quantity), 0) FROM reservation_allocations a JOIN reservations r "
        "ON r.id = a.reservation_id WHERE a.sku = :sku AND r.status = 'active'", sku=SKU)

    async with client(survivor.base_url, Role.ADMIN) as admin:
        level = await stock(admin, SKU)
        assert level["reserved"] == units_in_db == allocated == len(in_db), (
            level, units_in_db, allocated, len(in_db))
        assert level["on_hand"] == UNITS
        assert level["available"] == UNITS - len(in_db)
        ledger = (await admin.get("/v1/ledger",
                                  params={"sku": SKU, "limit": 1000})).json()["entries"]
        reserves = [e["reference"] for e in ledger if e["kind"] == "reserve"]
        assert sorted(reserves) == sorted(in_db), "one ledger entry per reservation, no more"
        # One entry per change of the stock level, each its next version (the SKU's own version,
        # the ETag, counts transactions, and a batch decides many reservations in one).
        [at_location] = level["locations"]
        assert [e["version"] for e in ledger] == list(range(1, at_location["version"] + 1))
    print(f"\n[e2e crash] {db.backend}: {statuses.get(201, 0)} confirmed before the SIGKILL, "
          f"{len(at_kill) - statuses.get(201, 0)} more committed unseen, {len(cut)} cut off; "
          f"on retry {sum(o.replayed for o in answers.values())} replayed, "
          f"{len(in_progress)} in progress until their claim timed out; "
          f"{len(held)} reservations held by buyers, {len(in_db)} in the database")

    code, report = await audit_verify(db)
    assert code == 0, report

    # And the restarted server goes on selling where the dead one stopped.
    async with client(survivor.base_url, Role.CUSTOMER, "late-buyer") as late:
        after = await late.post("/v1/reservations", json=BODY)
        assert after.status_code == (201 if len(in_db) < UNITS else 409), after.text
    async with client(survivor.base_url, Role.ADMIN) as admin:
        assert (await stock(admin, SKU))["reserved"] == min(len(in_db) + 1, UNITS)
