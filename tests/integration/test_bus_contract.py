"""One contract for every bus adapter (DESIGN.md §3), run against memory:// and, when CI sets
INSTOCK_TEST_REDIS_URL / INSTOCK_TEST_NATS_URL / INSTOCK_TEST_RABBITMQ_URL, against real Redis,
NATS JetStream and RabbitMQ Streams servers.

Each test gets its own stream (URL query `stream=`) and deletes it afterwards. On the networked
buses each "member" gets a bus of its own, like separate worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from instock.platform.bus import Bus, Delivery, Envelope, connect
from instock.platform.bus.base import GAP
from instock.platform.bus.memory import MemoryBus
from instock.platform.bus.rabbitmq import RabbitStreamsBus
from instock.platform.bus.rabbitmq_link import Address, Link
from instock.platform.ids import new_id
from tests.support import bus_urls

WAIT = 5.0  # generous upper bound for anything that should happen "promptly"
REDELIVER = 0.5

T = TypeVar("T")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


def _with_query(url: str, **query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}" if query else url


def _rabbitmq(url: str) -> bool:
    return _scheme(url).startswith("rabbitmq")


class Proxy:
    """A TCP proxy in front of a server, whose connections a test can cut. For RabbitMQ it
    stands in front of the stream protocol's port (the URL's own port is AMQP's)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 0)
        if _rabbitmq(url):
            address = Address.from_url(url)
            self._upstream = (address.host, address.port)
        self._server: asyncio.Server | None = None
        self._links: list[asyncio.StreamWriter] = []
        self.url = url

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.url)
        if _rabbitmq(self.url):
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "stream_port"]
            self.url = parts._replace(query=urlencode([*query, ("stream_port", port)])).geturl()
        else:
            self.url = parts._replace(netloc=f"127.0.0.1:{port}").geturl()
        return self

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._links += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        """Drop every connection through the proxy, as a network failure would."""
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def _drop_stream(url: str, stream: str) -> None:
    if _scheme(url).startswith("redis"):
        import redis.asyncio as aioredis
        client = aioredis.from_url(url)
        try:
            await client.delete(stream)
        finally:
            await client.aclose()
    elif _scheme(url) in {"nats", "tls"}:
        import nats
        from nats.js.errors import NotFoundError
        nc = await nats.connect(url)
        try:
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
    elif _rabbitmq(url):  # the events and the groups' control stream
        bus = RabbitStreamsBus.from_url(_with_query(url, stream=stream))
        try:
            await bus.drop()
        finally:
            await bus.close()


@dataclass
class Target:
    """Where a test's buses live: the server URL and a stream of the test's own."""

    url: str
    stream: str

    @property
    def scheme(self) -> str:
        return _scheme(self.url)


class MakeBus(Protocol):
    def __call__(self, *, via: Proxy | None = None, **query: str) -> Bus: ...


@pytest.fixture(params=bus_urls(), ids=_scheme)
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    url: str = request.param
    name = uuid.uuid4().hex[:12]
    where = Target(url, f"T_{name}" if _scheme(url) in {"nats", "tls"}
                   else f"instock-test-{name}" if _rabbitmq(url) else f"instock:test:{name}")
    yield where
    await _drop_stream(where.url, where.stream)


@pytest.fixture
async def make_bus(target: Target) -> AsyncIterator[MakeBus]:
    """A factory of buses on the test's stream; memory:// has one shared bus (one process).

    `via` connects through a proxy the test can cut; `query` adds URL options.
    """
    buses: list[Bus] = []

    def make(*, via: Proxy | None = None, **query: str) -> Bus:
        if target.scheme == "memory":
            if not buses:
                buses.append(connect(_with_query(target.url, **query)))
            return buses[0]
        server = target.url if via is None else via.url
        buses.append(connect(_with_query(server, stream=target.stream, **query)))
        return buses[-1]

    yield make
    await asyncio.gather(*(bus.close() for bus in buses))  # as separate processes would


@pytest.fixture
def bus(make_bus: MakeBus) -> Bus:
    return make_bus()


def events(n: int, label: str = "e") -> list[Envelope]:
    return [{"specversion": "1.0", "id": new_id(), "source": "/test",
             "type": "inventory.stock_changed.v1", "subject": f"{label}-{i}",
             "time": datetime.now(UTC).isoformat(), "datacontenttype": "application/json",
             "data": {"label": label, "n": i}} for i in range(n)]


def ids(envelopes: list[Envelope]) -> list[str]:
    return [e["id"] for e in envelopes]


async def take(stream: AsyncIterator[Delivery], n: int = 0, *, until: Envelope | None = None,
               wait: float = WAIT) -> list[Envelope]:
    """The next n deliveries (or those up to and including `until`), acked; fail after `wait`
    seconds."""
    async def collect() -> list[Envelope]:
        got: list[Envelope] = []
        async for delivery in stream:
            got.append(delivery.envelope)
            await delivery.ack()
            if (delivery.envelope["id"] == until["id"]) if until else len(got) == n:
                break
        return got
    return await asyncio.wait_for(collect(), wait)


async def quiet(stream: AsyncIterator[Delivery], seconds: float) -> list[Envelope]:
    """Whatever arrives (and is acked) within `seconds`: used to show that nothing more comes."""
    got: list[Envelope] = []

    async def collect() -> None:
        async for delivery in stream:
            got.append(delivery.envelope)
            await delivery.ack()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), seconds)
    return got


async def bus_clock_gap() -> datetime:
    """A point in time with a clear gap either side (bus timestamps are in milliseconds)."""
    await asyncio.sleep(0.03)
    since = datetime.now(UTC)
    await asyncio.sleep(0.03)
    return since


async def test_a_consumer_sees_messages_in_publish_order(bus: Bus) -> None:
    published = events(10, "a") + events(1, "b") + events(25, "c")
    await bus.publish(published[:10])
    await bus.publish(published[10:11])
    await bus.publish(published[11:])

    assert ids(await take(bus.consume("order", batch=7), len(published))) == ids(published)


async def test_every_group_gets_every_message(bus: Bus) -> None:
    published = events(12)
    await bus.publish(published)

    first, second = await asyncio.gather(take(bus.consume("one"), 12),
                                         take(bus.consume("two"), 12))
    assert ids(first) == ids(published)
    assert ids(second) == ids(published)


async def test_a_group_told_its_types_gets_each_of_those_in_order(bus: Bus) -> None:
    """`types` is a hint: a bus may pass over other types (the memory bus does), but every
    event of the wanted types still comes, in order."""
    published = events(9)
    for event in published[::3]:
        event["type"] = "order.paid.v1"
    await bus.publish(published)
    got = await take(bus.consume("typed", types=frozenset({"order.paid.v1"})),
                     until=published[6])
    assert [e["id"] for e in got if e["type"] == "order.paid.v1"] == ids(published[::3])
    if isinstance(bus, MemoryBus):
        assert ids(got) == ids(published[::3])


async def test_members_of_a_group_share_the_messages_exactly_once(make_bus: MakeBus) -> None:
    published = events(30)
    a, b = make_bus(), make_bus()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def member(name: str, bus: Bus) -> None:
        async for delivery in bus.consume("shared", batch=2, redeliver_after=10):
            seen[name].append(delivery.envelope["id"])
            await asyncio.sleep(0.01)  # handling takes a moment, so the other member gets a turn
            await delivery.ack()

    members = [asyncio.create_task(member("a", a)), asyncio.create_task(member("b", b))]
    try:
        await asyncio.sleep(0.1)  # both members are up
        await a.publish(published)
        deadline = time.monotonic() + WAIT
        while len(seen["a"]) + len(seen["b"]) < len(published) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # anything delivered twice would show up now
    finally:
        for task in members:
            task.cancel()
        await asyncio.gather(*members, return_exceptions=True)

    together = seen["a"] + seen["b"]
    assert sorted(together) == sorted(ids(published))  # each exactly once
    assert seen["a"] and seen["b"]  # and both worked
    for name in seen:  # each member still sees its share in publish order
        assert seen[name] == [i for i in ids(published) if i in set(seen[name])]


@pytest.mark.parametrize("death", ["stops iterating", "closes its iterator"])
async def test_unacked_messages_of_a_dead_member_go_to_another(make_bus: MakeBus,
                                                               death: str) -> None:
    published = events(5)
    doomed, survivor = make_bus(), make_bus()
    await doomed.publish(published)

    dying = doomed.consume("work", redeliver_after=REDELIVER)
    first = await anext(dying)  # taken, never acked
    taken_at = time.monotonic()
    if death == "closes its iterator":
        await dying.aclose()  # type: ignore[attr-defined]

    got: dict[str, float] = {}

    async def collect() -> None:
        async for delivery in survivor.consume("work", redeliver_after=REDELIVER):
            got.setdefault(delivery.envelope["id"], time.monotonic())
            await delivery.ack()
            if len(got) == len(published):
                return

    await asyncio.wait_for(collect(), WAIT)
    assert set(got) == set(ids(published))
    # redelivered, but not before redeliver_after had passed
    assert got[first.envelope["id"]] - taken_at >= REDELIVER * 0.9


async def test_an_acked_message_is_not_redelivered(bus: Bus) -> None:
    published = events(3)
    await bus.publish(published)
    stream = bus.consume("done", redeliver_after=REDELIVER)
    assert ids(await take(stream, 3)) == ids(published)
    assert await quiet(stream, REDELIVER * 3) == []


async def test_a_new_group_starts_at_the_oldest_message_or_at_since(bus: Bus) -> None:
    old = events(4, "old")
    await bus.publish(old)
    since = await bus_clock_gap()
    new = events(3, "new")
    await bus.publish(new)

    assert ids(await take(bus.consume("from-start"), 7)) == ids(old + new)
    from_since = bus.consume("from-since", since=since)
    assert ids(await take(from_since, 3)) == ids(new)
    assert await quiet(from_since, 0.3) == []


async def test_an_existing_group_keeps_its_position(bus: Bus) -> None:
    first = events(3, "first")
    await bus.publish(first)
    assert ids(await take(bus.consume("keeps"), 3)) == ids(first)
    second = events(2, "second")
    await bus.publish(second)
    # `since` only places a new group; this one resumes after what it acked
    resumed = bus.consume("keeps", since=datetime(2000, 1, 1, tzinfo=UTC))
    assert ids(await take(resumed, 2)) == ids(second)


async def until(done: Callable[[], bool], *, probe: Bus | None = None,
                wait: float = WAIT) -> None:
    """Wait for `done()`, publishing a probe every 50 ms if asked: when a listener is subscribed
    is not observable otherwise."""
    deadline = time.monotonic() + wait
    while not done() and time.monotonic() < deadline:
        if probe is not None:
            await probe.publish(events(1, "probe"))
        await asyncio.sleep(0.05)


class Ears:
    """Listeners read in the background; `heard[i]` is what listener i got so far."""

    def __init__(self, *streams: AsyncIterator[Envelope]) -> None:
        self.heard: list[list[Envelope]] = [[] for _ in streams]
        self._tasks = [asyncio.create_task(self._hear(stream, into))
                       for stream, into in zip(streams, self.heard, strict=True)]

    @staticmethod
    async def _hear(stream: AsyncIterator[Envelope], into: list[Envelope]) -> None:
        async for envelope in stream:
            into.append(envelope)

    async def all_hear_a_probe(self, bus: Bus, wait: float = WAIT) -> None:
        before = [len(h) for h in self.heard]
        await until(lambda: all(_probes(h[n:]) for h, n in zip(self.heard, before, strict=True)),
                         probe=bus, wait=wait)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _probes(envelopes: list[Envelope]) -> list[Envelope]:
    return [e for e in envelopes if e["type"] != GAP and e["data"]["label"] == "probe"]


def _news(envelopes: list[Envelope]) -> list[str]:
    return [e["id"] for e in envelopes if e["type"] != GAP and e["data"]["label"] != "probe"]


def _gaps(envelopes: list[Envelope]) -> int:
    return sum(e["type"] == GAP for e in envelopes)


async def test_listeners_get_only_what_is_published_after_they_start(make_bus: MakeBus) -> None:
    bus = make_bus()
    before = events(3, "before")
    await bus.publish(before)
    ears = Ears(bus.listen(), make_bus().listen())
    try:
        await ears.all_hear_a_probe(bus)
        after = events(20, "after")
        await bus.publish(after)
        await until(lambda: all(len(_news(h)) >= len(after) for h in ears.heard))
    finally:
        await ears.stop()

    for heard in ears.heard:
        assert _news(heard) == ids(after)  # nothing from before, all of after, in order


async def test_a_listener_that_falls_behind_never_holds_up_publishing(target: Target,
                                                                     make_bus: MakeBus) -> None:
    # memory and NATS buffer for a listener (here 5 messages) and drop the oldest when it is
    # full; a Redis or RabbitMQ listener reads the stream at its own pace and so loses nothing.
    lossless = target.scheme.startswith("redis") or _rabbitmq(target.url)
    bus = make_bus(**({} if lossless else {"listen_buffer": "5"}))
    listener = bus.listen()
    subscribed = asyncio.ensure_future(anext(listener))
    await until(subscribed.done, probe=bus)
    assert subscribed.done()  # from here on nobody reads the listener for a while
    burst = events(50, "burst")
    for envelope in burst:
        await asyncio.wait_for(bus.publish([envelope]), WAIT)
    await asyncio.sleep(0.2)  # let everything reach the listener's side

    heard: list[Envelope] = []
    while not heard or heard[-1]["id"] != burst[-1]["id"]:
        heard.append(await asyncio.wait_for(anext(listener), WAIT))
    got = _news(heard)
    assert got == [i for i in ids(burst) if i in set(got)]  # in order, newest last
    assert got == (ids(burst) if lossless else ids(burst)[-5:])
    # a listener that lost some is told so, once, before what it still has
    assert _gaps(heard) == (0 if lossless else 1)
    assert lossless or heard[0]["type"] == GAP


async def test_history_replays_from_since_in_order_and_ends(bus: Bus) -> None:
    old = events(5, "old")
    await bus.publish(old)
    since = await bus_clock_gap()
    kept = events(12, "kept")
    await bus.publish(kept[:7])
    await bus.publish(kept[7:])

    replay = bus.history(since)
    first = await asyncio.wait_for(anext(replay), WAIT)
    await bus.publish(events(3, "later"))  # newer than the call: not part of this replay
    rest = await asyncio.wait_for(_drain(replay), WAIT)
    assert ids([first, *rest]) == ids(kept)

    assert await asyncio.wait_for(_drain(bus.history(await bus_clock_gap())), WAIT) == []


async def _drain(stream: AsyncIterator[T]) -> list[T]:
    return [item async for item in stream]


async def test_close_ends_pending_iterators(bus: Bus) -> None:
    await bus.publish(events(1))
    consumer = bus.consume("closing")
    assert len(await take(consumer, 1)) == 1
    waiting = [asyncio.create_task(_drain(consumer)),
               asyncio.create_task(_drain(bus.listen())),
               asyncio.create_task(_drain(bus.consume("other-closing")))]
    await asyncio.sleep(0.2)  # all of them are blocked on the bus
    await bus.close()
    await asyncio.wait_for(asyncio.gather(*waiting), WAIT)  # they end, without an error


async def test_consume_and_listen_survive_a_dropped_connection(target: Target,
                                                               make_bus: MakeBus) -> None:
    if target.scheme == "memory":
        pytest.skip("memory:// has no connection to lose")
    proxy = await Proxy(target.url).start()
    try:
        bus, publisher = make_bus(via=proxy), make_bus()
        consumer = bus.consume("steadfast", redeliver_after=30)
        ears = Ears(bus.listen())
        await ears.all_hear_a_probe(publisher)
        await publisher.publish(first := events(1, "first"))
        assert _news(await take(consumer, until=first[-1])) == ids(first)

        proxy.cut()
        await publisher.publish(second := events(1, "second"))
        # durable: what was published while the connection was down still arrives
        assert _news(await take(consumer, until=second[-1], wait=3 * WAIT)) == ids(second)
        # ephemeral: the listener is back (it may have missed what came while it was away, and
        # then it is told so: NATS's core subscription keeps nothing; the others resume)
        await ears.all_hear_a_probe(publisher, wait=3 * WAIT)
        assert _probes(ears.heard[0])
        missed = _news(ears.heard[0]) != ids(first) + ids(second)
        assert _gaps(ears.heard[0]) >= (1 if missed or target.scheme in {"nats", "tls"} else 0)
        if target.scheme not in {"nats", "tls"}:
            assert _gaps(ears.heard[0]) == 0 and not missed
        await ears.stop()
    finally:
        await proxy.close()


async def test_a_message_that_is_not_an_envelope_is_skipped(target: Target,
                                                            make_bus: MakeBus) -> None:
    if target.scheme == "memory":
        pytest.skip("memory:// only stores what publish() accepted")
    bus = make_bus()
    good = events(2)
    consumer = bus.consume("careful", redeliver_after=REDELIVER)
    await bus.publish(good[:1])
    await _write_raw(target, b"this is not JSON")
    await bus.publish(good[1:])
    assert ids(await take(consumer, 2)) == ids(good)
    assert await quiet(consumer, REDELIVER * 3) == []  # and the junk is not redelivered
    assert ids(await _drain(bus.history(datetime(2000, 1, 1, tzinfo=UTC)))) == ids(good)


async def _write_raw(target: Target, payload: bytes) -> None:
    """Put something that is not an envelope where the bus keeps its messages."""
    if target.scheme.startswith("redis"):
        import redis.asyncio as aioredis
        client = aioredis.from_url(target.url)
        try:
            await client.xadd(target.stream, {"junk": payload})
            await client.xadd(target.stream, {"envelope": payload})
        finally:
            await client.aclose()
    elif _rabbitmq(target.url):
        link = Link(Address.from_url(target.url), [(target.stream, {})])
        try:
            await link.publish(target.stream, [payload])
        finally:
            await link.close()
    else:
        import nats
        nc = await nats.connect(target.url)
        try:
            await nc.jetstream().publish(f"{target.stream.lower()}.junk", payload)
        finally:
            await nc.close()


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()


async def _publish_when_back(bus: Bus, envelopes: list[Envelope], wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            await bus.publish(envelopes)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.serial  # the machine's RabbitMQ stops under every other test using it
async def test_a_broker_restart_loses_nothing_and_publishing_resumes(target: Target,
                                                                     make_bus: MakeBus) -> None:
    """RabbitMQ's `stop_app` / `start_app` under a consumer, a listener and a publisher: what
    was published is all still there, what was acked is not lost, and all three carry on once
    the broker is back (about 8 s of broker restart; bounded at 2 minutes)."""
    if not _rabbitmq(target.url):
        pytest.skip("a RabbitMQ broker restart")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl next to the broker")
    async with asyncio.timeout(120):
        bus, publisher = make_bus(), make_bus()
        consumer = bus.consume("enduring", redeliver_after=5)
        ears = Ears(bus.listen())
        try:
            await ears.all_hear_a_probe(publisher)
            await publisher.publish(before := events(5, "before"))
            assert _news(await take(consumer, until=before[-1])) == ids(before)

            await _rabbitmqctl("stop_app")
            try:
                with pytest.raises(Exception):  # noqa: B017 - whichever error a dead broker gives
                    await publisher.publish(events(1, "refused"))
            finally:
                await _rabbitmqctl("start_app")
            await _publish_when_back(publisher, after := events(3, "after"), wait=60)

            # acked before the restart: not delivered again (at most what was not yet stored)
            got = _news(await take(consumer, until=after[-1], wait=60))
            assert [i for i in got if i not in set(ids(before))] == ids(after)
            await ears.all_hear_a_probe(publisher, wait=30)
            assert _probes(ears.heard[0])
        finally:
            await ears.stop()
        kept = _news(await _drain(publisher.history(datetime(2000, 1, 1, tzinfo=UTC))))
        assert list(dict.fromkeys(kept)) == ids(before + after)
