"""Consumers: exactly-once in effect, older sequences ignored, dead letters and replays."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from instock.app import Container
from instock.platform.bus import Envelope, inbox
from instock.platform.bus.consumer import Consumer, ConsumerSpec, once_per_batch
from instock.platform.bus.outbox import outbox
from instock.platform.db import utcnow
from instock.platform.ids import new_id
from instock.recommendations import store as recs_store
from tests.integration.test_relay import running


def envelope(subject: str, sequence: int, **data: Any) -> Envelope:
    return {"specversion": "1.0", "id": new_id(), "source": "/test", "type": "test.thing.v1",
            "subject": subject, "time": utcnow().isoformat(), "sequence": sequence,
            "data": data}


def recording(fail_times: int = 0) -> tuple[ConsumerSpec, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    failures = {"left": fail_times}

    async def handler(conn: AsyncConnection, env: Envelope) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("downstream is down")
        seen.append((env["subject"], env["sequence"]))

    return ConsumerSpec("recorder", frozenset({"test.thing.v1"}), handler), seen


def consumer(c: Container, spec: ConsumerSpec, attempts: int = 3) -> Consumer:
    return Consumer(c.db, c.bus, spec, attempts=attempts)


async def test_a_redelivered_event_takes_effect_once(container: Container) -> None:
    spec, seen = recording()
    worker = consumer(container, spec)
    event = envelope("A", 1)
    assert await worker.handle(event) == "applied"
    assert await worker.handle(event) == "duplicate"
    assert seen == [("A", 1)]


async def test_concurrent_deliveries_of_one_event_take_effect_once(container: Container) -> None:
    spec, seen = recording()
    event = envelope("A", 1)
    outcomes = await asyncio.gather(*(consumer(container, spec).handle(event) for _ in range(5)),
                                    return_exceptions=True)
    assert seen == [("A", 1)]
    assert sorted(map(str, outcomes)).count("applied") == 1


async def test_older_sequences_are_ignored_per_subject(container: Container) -> None:
    spec, seen = recording()
    worker = consumer(container, spec)
    for subject, sequence in [("A", 2), ("A", 1), ("B", 1), ("A", 2), ("A", 3)]:
        await worker.handle(envelope(subject, sequence))
    assert seen == [("A", 2), ("B", 1), ("A", 2), ("A", 3)]  # equal is one transaction's twin


async def test_an_unordered_consumer_sees_every_event(container: Container) -> None:
    spec, seen = recording()
    worker = consumer(container, ConsumerSpec(spec.name, spec.types, spec.handler,
                                              ordered=False))
    for subject, sequence in [("A", 2), ("A", 1), ("A", 1)]:
        await worker.handle(envelope(subject, sequence))
    assert seen == [("A", 2), ("A", 1), ("A", 1)]  # each a different event id


async def test_a_failing_event_is_retried_then_dead_lettered_and_replayable(
        container: Container) -> None:
    spec, seen = recording(fail_times=4)
    worker = consumer(container, spec, attempts=2)
    event = envelope("A", 1)
    assert await worker.handle(event) == "dead"
    assert await worker.handle(envelope("B", 1)) == "dead"  # failures three and four
    async with container.db.read() as conn:
        letters = await inbox.list_dead(conn, "recorder")
    assert [letter.event_id for letter in letters][:1] == [event["id"]]
    assert "downstream is down" in letters[0].error and letters[0].attempts == 2
    # The downstream is back: replaying applies them, and they leave the dead-letter list.
    assert [await worker.replay_dead(letter) for letter in letters] == ["applied", "applied"]
    async with container.db.read() as conn:
        assert await inbox.list_dead(conn, "recorder") == []
        assert len(await inbox.list_dead(conn, "recorder", include_replayed=True)) == 2
    assert seen == [("A", 1), ("B", 1)]


async def test_an_event_that_breaks_its_schema_is_dead_lettered_not_retried(
        container: Container) -> None:
    worker = container.consumer("recs-availability")
    bad = {"specversion": "1.0", "id": new_id(), "source": "/x",
           "type": "inventory.stock_changed.v1", "subject": "A", "time": utcnow().isoformat(),
           "data": {"sku": "A"}}
    assert await worker.handle(bad) == "dead"


async def test_replay_from_a_point_in_time_processes_again(container: Container) -> None:
    spec, seen = recording()
    worker = consumer(container, spec)
    since = utcnow()
    events = [envelope("A", n) for n in (1, 2, 3)]
    await container.bus.publish(events)
    for event in events:
        await worker.handle(event)
    assert await worker.replay(since) == {"applied": 3}
    assert seen == [("A", 1), ("A", 2), ("A", 3)] * 2


async def test_the_availability_projection_follows_stock(container: Container) -> None:
    from tests.integration.helpers import stocked

    await stocked(container, "P-1", 4)
    async with container.db.read() as conn:
        rows = (await conn.execute(sa.select(outbox.c.envelope).order_by(
            outbox.c.created_at))).scalars().all()
    worker = container.consumer("recs-availability")
    for env in reversed(rows):  # newest first: the older ones must not overwrite it
        await worker.handle(env)
    async with container.db.read() as conn:
        assert await recs_store.availability(conn, ["P-1"]) == {"P-1": (1, 4)}


async def test_the_availability_projection_writes_a_batch_in_one_statement(
        container: Container) -> None:
    """A batch of stock changes of several SKUs, some twice: each SKU's newest state lands,
    written by one statement for the whole batch."""
    from tests.integration.helpers import counting, receive, stocked

    await stocked(container, "Q-1", 4)
    await stocked(container, "Q-2", 2)
    await receive(container, "Q-1", "wh", 3)
    async with container.db.read() as conn:
        rows = (await conn.execute(sa.select(outbox.c.envelope).where(
            outbox.c.type == "inventory.stock_changed.v1").order_by(
            outbox.c.created_at))).scalars().all()
    assert len(rows) >= 3
    worker = container.consumer("recs-availability")
    with counting(container.db) as statements:
        assert set(await worker.handle_batch(rows)) == {"applied"}
    assert len([sql for sql in statements if "item_availability" in sql]) == 1
    async with container.db.read() as conn:
        states = await recs_store.availability(conn, ["Q-1", "Q-2"])
    assert states == {"Q-1": (2, 7), "Q-2": (1, 2)}


async def test_sequences_of_different_aggregates_with_one_name_do_not_mix(
        container: Container) -> None:
    seen: list[str] = []

    async def handler(conn: AsyncConnection, env: Envelope) -> None:
        seen.append(env["type"])

    types = frozenset({"inventory.thing.v1", "product.thing.v1"})
    worker = consumer(container, ConsumerSpec("mixed", types, handler))
    sku_event = {**envelope("SAME-ID", 5), "type": "inventory.thing.v1"}
    product_event = {**envelope("SAME-ID", 1), "type": "product.thing.v1"}
    assert [await worker.handle(sku_event), await worker.handle(product_event)] == \
        ["applied", "applied"]


def counting_transactions(c: Container) -> list[int]:
    """A list that grows by one per transaction committed through the container's database."""
    commits: list[int] = []
    for engine in c.db.engines:
        sa.event.listen(engine.sync_engine, "commit", lambda *_: commits.append(1))
    return commits


async def test_events_that_arrive_together_share_one_transaction_in_order(
        container: Container) -> None:
    spec, seen = recording()
    worker = consumer(container, spec)
    await worker.handle(envelope("A", 5))
    twice = envelope("B", 1)
    burst = [envelope("A", 6), twice, envelope("A", 4), twice, envelope("C", 1),
             envelope("A", 7)]
    commits = counting_transactions(container)
    outcomes = await worker.handle_batch(burst)
    assert outcomes == ["applied", "applied", "stale", "duplicate", "applied", "applied"]
    assert seen == [("A", 5), ("A", 6), ("B", 1), ("C", 1), ("A", 7)]
    assert len(commits) == 1
    # Positions advanced as if one by one: what is older than what the batch applied is stale.
    assert await worker.handle_batch([envelope("A", 6), envelope("B", 1)]) == [
        "stale", "applied"]
    assert await worker.handle(twice) == "duplicate"


async def test_one_bad_event_in_a_batch_never_takes_its_neighbours_down(
        container: Container) -> None:
    async with container.db.write() as conn:
        await conn.execute(sa.text("CREATE TABLE test_effects (subject VARCHAR(16))"))

    async def handler(conn: AsyncConnection, env: Envelope) -> None:
        await conn.execute(sa.text("INSERT INTO test_effects VALUES (:s)"), {"s": env["subject"]})
        if env["subject"] == "poison":
            raise RuntimeError("cannot handle this one")

    worker = consumer(container, ConsumerSpec("picky", frozenset({"test.thing.v1"}), handler),
                      attempts=2)
    burst = [envelope("A", 1), envelope("poison", 1), envelope("B", 1)]
    assert await worker.handle_batch(burst) == ["applied", "dead", "applied"]
    async with container.db.read() as conn:
        effects = (await conn.execute(sa.text("SELECT subject FROM test_effects"))).scalars()
        assert sorted(effects) == ["A", "B"]  # once each: the failed batch left nothing
        buried = (await conn.execute(sa.select(inbox.dead_letters.c.event_id))).scalars().all()
    assert buried == [burst[1]["id"]]


async def test_a_read_every_event_needs_is_made_once_per_transaction(
        container: Container) -> None:
    reads: list[int] = []

    async def who_subscribes() -> list[str]:
        reads.append(1)
        return ["hook"]

    async def handler(conn: AsyncConnection, env: Envelope) -> None:
        assert await once_per_batch("subscribers", who_subscribes) == ["hook"]

    worker = consumer(container, ConsumerSpec("reader", frozenset({"test.thing.v1"}), handler))
    assert await worker.handle_batch([envelope(s, 1) for s in "ABC"]) == ["applied"] * 3
    assert len(reads) == 1
    await worker.handle(envelope("D", 1))
    await worker.handle(envelope("E", 1))
    assert len(reads) == 3  # one transaction each



@pytest.mark.parametrize(("linger", "first_batch"), [(0.5, 4), (0.0, 1)])
async def test_a_lingering_consumer_takes_what_arrives_behind_its_first_event_in_one_batch(
        container: Container, linger: float, first_batch: int) -> None:
    """With `linger`, events that follow the first one within it share its transaction; without,
    the first is handled at once, alone."""
    batches: list[int] = []
    seen: list[int] = []

    async def handler(conn: AsyncConnection, env: Envelope) -> None:
        seen.append(env["sequence"])

    worker = Consumer(container.db, container.bus,
                      ConsumerSpec("lingering", frozenset({"test.thing.v1"}), handler),
                      linger=linger)
    real_batch = worker.handle_batch

    async def counted(envelopes: Any) -> list[str]:
        batches.append(len(envelopes))
        return await real_batch(envelopes)

    worker.handle_batch = counted  # type: ignore[method-assign]
    async with running(worker.run()):
        await asyncio.sleep(0.2)  # the consumer group exists before anything is published
        for i in range(4):
            await container.bus.publish([envelope("L", i + 1)])
            await asyncio.sleep(0.05)
        for _ in range(200):
            if len(seen) == 4:
                break
            await asyncio.sleep(0.02)
    assert seen == [1, 2, 3, 4]
    assert batches[0] == first_batch, batches
