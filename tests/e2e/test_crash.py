"""SIGKILL a server in the middle of a drop: no confirmed reservation is lost, none is invented.

Every reservation a client saw confirmed (201) must exist, active, after a restart on the same
database; the reserved units must equal exactly the reservations the database holds (some may
have committed without their response reaching the client, none may be half-written); and the
ledger must still fold to the levels with every chain intact.
"""

from __future__ import annotations

import signal

import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    Outcome,
    ServerFactory,
    assert_clean_insufficient,
    audit_verify,
    client,
    reserve_burst,
    setup_drop,
    stock,
)

pytestmark = pytest.mark.slow

BUYERS = 500
UNITS = 300  # more than the kill leaves time to sell, so confirmations are still flowing
KILL_AFTER = 60  # confirmations seen before the SIGKILL


async def test_sigkill_mid_drop_loses_no_confirmed_reservation(servers: ServerFactory) -> None:
    victim = await servers.start()
    await setup_drop(victim.base_url, ["sneaker-42"], UNITS)
    seen_confirmed = 0

    def kill_mid_run(outcome: Outcome) -> None:
        nonlocal seen_confirmed
        if outcome.status == 201:
            seen_confirmed += 1
            if seen_confirmed == KILL_AFTER:
                victim.sigkill()

    result = await reserve_burst([victim.base_url],
                                 [{"lines": [{"sku": "sneaker-42", "quantity": 1}]}] * BUYERS,
                                 on_response=kill_mid_run)
    assert victim.process.returncode == -signal.SIGKILL, victim.process.returncode
    statuses = result.statuses()
    assert set(statuses) <= {201, 409, None}, statuses
    assert statuses.get(None, 0) > 0, f"the kill came too late to cut the load: {statuses}"
    for outcome in result.with_status(409):
        assert_clean_insufficient(outcome, {"sneaker-42"})
    confirmed = {o.body["id"] for o in result.with_status(201) if o.body is not None}
    assert len(confirmed) == statuses[201] >= KILL_AFTER

    survivor = await servers.start()
    db = servers.db
    async with client(survivor.base_url, Role.ADMIN) as admin:
        for reservation_id in sorted(confirmed):
            response = await admin.get(f"/v1/reservations/{reservation_id}")
            assert response.status_code == 200, (reservation_id, response.text)
            body = response.json()
            assert body["status"] == "active", body
            assert body["lines"] == [{"sku": "sneaker-42", "quantity": 1}], body

        in_db = set(await db.column(
            "SELECT r.id FROM reservations r JOIN reservation_lines l "
            "ON l.reservation_id = r.id WHERE l.sku = :sku", sku="sneaker-42"))
        statuses_in_db = set(await db.column("SELECT DISTINCT status FROM reservations r JOIN "
                                             "reservation_lines l ON l.reservation_id = r.id "
                                             "WHERE l.sku = :sku", sku="sneaker-42"))
        units_in_db = await db.scalar(
            "SELECT COALESCE(SUM(quantity), 0) FROM reservation_lines WHERE sku = :sku",
            sku="sneaker-42")
        every_reservation = await db.scalar("SELECT count(*) FROM reservations")
        assert every_reservation == len(in_db) + 1  # + the warm-up hold on another SKU
        assert confirmed <= in_db, f"lost confirmed reservations: {sorted(confirmed - in_db)}"
        assert statuses_in_db == {"active"}, statuses_in_db
        assert len(in_db) <= UNITS

        level = await stock(admin, "sneaker-42")
        assert level["reserved"] == units_in_db == len(in_db), (level, units_in_db, len(in_db))
        assert level["on_hand"] == UNITS
        assert level["available"] == UNITS - len(in_db)

        ledger = (await admin.get("/v1/ledger",
                                  params={"sku": "sneaker-42", "limit": 1000})).json()["entries"]
        assert {e["reference"] for e in ledger if e["kind"] == "reserve"} == in_db
        assert [e["version"] for e in ledger] == list(range(1, level["version"] + 1))
        print(f"\n[e2e crash] {db.backend}: {len(confirmed)} confirmed to clients, "
              f"{len(in_db) - len(confirmed)} more committed unseen, "
              f"{statuses.get(None, 0)} requests cut off by the SIGKILL")

    code, report = await audit_verify(db)
    assert code == 0, report

    # And the restarted server goes on selling where the dead one stopped.
    async with client(survivor.base_url, Role.CUSTOMER, "late-buyer") as late:
        after = await late.post("/v1/reservations",
                                json={"lines": [{"sku": "sneaker-42", "quantity": 1}]})
        assert after.status_code == 201, after.text
    async with client(survivor.base_url, Role.ADMIN) as admin:
        assert (await stock(admin, "sneaker-42"))["reserved"] == len(in_db) + 1
