"""realtime/broker/publisher.py: the broker's publishing connection (PUBLISH / SPUBLISH
batches packed by hand, replies parsed by hiredis), against the real Redis (a unique
channel per test), a private redis-server killed and started again, and a fake server for
what Redis does not show (how many writes, when it answers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

import realtime.broker.redis as broker_module
from realtime.broker.publisher import PublisherConnection, PublisherError
from realtime.broker.redis import RedisBroker
from realtime.broker.subscriber import SubscriberConnection

from redis_server import SHARED, FakeRedisServer, RedisProcess, shared_redis_url
from waiting import eventually

DEADLINE = 5.0  # seconds for anything a test waits on


async def listen(url: str, *channels: str, sharded: bool = False) -> SubscriberConnection:
    """A subscription to `channels`, returned once Redis has confirmed it."""
    sub = SubscriberConnection(url, "taskmaster:test:listen")
    await sub.open()
    sub.send("SSUBSCRIBE" if sharded else "SUBSCRIBE", *channels)
    confirmed = 0
    async with asyncio.timeout(DEADLINE):
        while confirmed < len(channels):
            confirmed += sum(1 for r in await sub.read() if r[0] in (b"subscribe",
                                                                      b"ssubscribe"))
    return sub


async def messages(sub: SubscriberConnection, count: int) -> list[list[bytes]]:
    """The next `count` messages: [kind, channel, payload] each."""
    got: list[list[bytes]] = []
    async with asyncio.timeout(DEADLINE):
        while len(got) < count:
            got += [r for r in await sub.read() if r[0] in (b"message", b"smessage")]
    assert len(got) == count, got[count:]
    return got


def channel_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}:ev:{{1}}"


async def test_publishes_arrive_in_order_and_the_connection_has_its_name() -> None:
    channel = channel_name()
    sub = await listen(SHARED, channel)
    pub = PublisherConnection(SHARED, f"taskmaster:test:{channel}")
    probe = aioredis.from_url(SHARED)
    try:
        await pub.open()
        sent = [f"m{n}".encode() for n in range(300)]
        for start in range(0, 300, 100):  # three batches, one after the other
            assert await pub.publish((channel, m) for m in sent[start:start + 100]) == 100
        assert await pub.publish([]) == 0
        got = await messages(sub, 300)
        assert got == [[b"message", channel.encode(), m] for m in sent]
        names = [c["name"] for c in await probe.client_list()]
        assert f"taskmaster:test:{channel}" in names
    finally:
        pub.close()
        sub.close()
        await probe.aclose()


async def test_a_batch_is_one_write_and_arrives_whole() -> None:
    channels = [channel_name() for _ in range(3)]  # interleaved channels keep their order
    sub = await listen(SHARED, *channels)
    pub = PublisherConnection(SHARED, "taskmaster:test:batch")
    try:
        await pub.open()
        assert pub._writer is not None
        writes: list[bytes] = []
        real_write = pub._writer.write

        def spy(data: bytes) -> None:
            writes.append(data)
            real_write(data)

        pub._writer.write = spy  # type: ignore[method-assign]
        batch = [(channels[n % 3], b"\r\n$binary\xff %d" % n) for n in range(2000)]
        assert await pub.publish(batch) == 2000
        assert len(writes) == 1  # the whole batch in one write
        got = await messages(sub, 2000)
        assert [(r[1].decode(), r[2]) for r in got] == batch
    finally:
        pub.close()
        sub.close()


class HoldingRedis(FakeRedisServer):
    """A fake server: answers the opening with +OK; answers PUBLISH / SPUBLISH with :1 only
    once it holds `hold` of them, all at once, in pieces of `piece` bytes (a publisher that
    waits for each answer before the next command never gets one)."""

    def __init__(self, hold: int, piece: int = 3) -> None:
        super().__init__()
        self.hold, self.piece = hold, piece
        self.commands: list[list[bytes]] = []
        self._held: dict[asyncio.StreamWriter, int] = {}  # per connection

    def on_command(self, command: Any, writer: asyncio.StreamWriter) -> None:
        if command[0] in (b"PUBLISH", b"SPUBLISH"):
            self.commands.append(command)
            self._held[writer] = self._held.get(writer, 0) + 1
        elif command[0] != b"SUBSCRIBE":  # the broker's subscription: no answer
            writer.write(b"+OK\r\n")

    async def after_read(self, writer: asyncio.StreamWriter) -> None:
        held = self._held.get(writer, 0)
        if held >= self.hold:
            replies = b":1\r\n" * held
            self._held[writer] = 0
            for start in range(0, len(replies), self.piece):
                writer.write(replies[start:start + self.piece])
                await writer.drain()
                await asyncio.sleep(0)  # let the publisher read this piece alone


async def test_a_batch_is_one_round_trip_and_its_replies_may_come_in_pieces() -> None:
    fake = HoldingRedis(hold=500)
    url = await fake.start()
    pub = PublisherConnection(url, "x")
    try:
        await pub.open()
        async with asyncio.timeout(DEADLINE):  # no answer at all before all 500 are sent
            assert await pub.publish((f"c{n % 7}", b"p%d" % n) for n in range(500)) == 500
        assert fake.commands == [[b"PUBLISH", f"c{n % 7}".encode(), b"p%d" % n]
                                 for n in range(500)]
    finally:
        pub.close()
        await fake.stop()


async def test_the_broker_sends_everything_pending_as_one_batch() -> None:
    url = shared_redis_url()
    broker = RedisBroker(url)
    channel = broker.channel_of("user:a")
    sub = await listen(SHARED, channel)
    batches: list[int] = []
    real_publish = PublisherConnection.publish

    async def counted(self: PublisherConnection, batch: Any) -> int:
        batches.append(len(batch))
        return await real_publish(self, batch)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PublisherConnection, "publish", counted)
            await broker.start()
            for seq in range(1, 801):  # all before the publishing task runs again
                broker.publish({"type": "task:created", "scope": "user:a", "seq": seq})
            got = await messages(sub, 800)
        assert batches == [800]
        assert [orjson.loads(r[2])["event"]["seq"] for r in got] == list(range(1, 801))
        assert broker.published == 800 and broker.dropped == 0
    finally:
        await broker.stop()
        sub.close()


@pytest.fixture
async def acl_user() -> AsyncIterator[Callable[..., Any]]:
    """`await acl_user(*rules)`: a new ACL user with those rules; returns name, password."""
    client = aioredis.from_url(SHARED)
    made: list[str] = []

    async def make(*rules: str) -> tuple[str, str]:
        name, password = f"tm-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        await client.execute_command("ACL", "SETUSER", name, "on", f">{password}", *rules)
        made.append(name)
        return name, password

    try:
        yield make
    finally:
        for name in made:
            await client.execute_command("ACL", "DELUSER", name)
        await client.aclose()


def with_credentials(user: str, password: str) -> str:
    return f"redis://{user}:{password}@{SHARED.split('://', 1)[1]}"


async def test_authenticates_with_an_acl_user_and_a_wrong_password_is_refused(
        acl_user: Callable[..., Any]) -> None:
    name, password = await acl_user("~*", "&*", "+@all")
    channel = channel_name()
    sub = await listen(SHARED, channel)
    pub = PublisherConnection(with_credentials(name, password), "taskmaster:test:acl")
    wrong = PublisherConnection(with_credentials(name, "wrong"), "taskmaster:test:acl")
    probe = aioredis.from_url(SHARED)
    try:
        await pub.open()
        assert await pub.publish([(channel, b"authenticated")]) == 1
        assert (await messages(sub, 1))[0][2] == b"authenticated"
        users = {c["name"]: c["user"] for c in await probe.client_list()}
        assert users["taskmaster:test:acl"] == name  # it is that user's connection
        with pytest.raises(PublisherError, match=r"WRONGPASS|invalid"):
            await wrong.open()
    finally:
        for connection in (pub, wrong, sub):
            connection.close()
        await probe.aclose()


async def test_a_refused_publish_is_an_error_and_the_broker_retries_the_batch(
        acl_user: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A user not allowed the channel: NOPERM fails the batch; the broker keeps it (not
    counted as published) and tries again, with backoff."""
    monkeypatch.setattr(broker_module, "BACKOFF_START", 0.01)
    monkeypatch.setattr(broker_module, "BACKOFF_CAP", 0.02)
    name, password = await acl_user("resetchannels", "+@all")
    pub = PublisherConnection(with_credentials(name, password), "taskmaster:test:noperm")
    try:
        await pub.open()
        with pytest.raises(PublisherError, match="NOPERM"):
            await pub.publish([(channel_name(), b"refused")])
    finally:
        pub.close()
    broker = RedisBroker(with_credentials(name, password) + "?prefix=noperm")
    failures: list[tuple[str, int]] = []
    real_failed = broker._publish_failed

    async def noted(batch: Any, exc: Exception, backoff: float) -> float:
        failures.append((str(exc), len(batch)))
        return await real_failed(batch, exc, backoff)

    broker._publish_failed = noted  # type: ignore[method-assign]
    await broker.start()
    try:
        broker.publish({"type": "task:created", "scope": "user:a", "seq": 1})
        await eventually(lambda: len(failures) >= 3, DEADLINE, "three tries")
        assert all("NOPERM" in text and size == 1 for text, size in failures)
        assert broker.published == 0 and broker.dropped == 0
    finally:
        await broker.stop()


async def test_redis_killed_and_restarted_publishing_resumes_and_drops_are_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue holds 50: of 80 events published while Redis is down (40 of them failing
    in flight, 40 more queued behind them) the 30 oldest are dropped and counted, the 50
    newest are published in order once it is back, and publishing goes on."""
    monkeypatch.setattr(broker_module, "BACKOFF_START", 0.01)
    monkeypatch.setattr(broker_module, "BACKOFF_CAP", 0.05)
    server = RedisProcess()
    server.start()
    broker = RedisBroker(f"{server.url}?prefix=fault&queue=50")
    failing, release = asyncio.Event(), asyncio.Event()
    real_failed = broker._publish_failed

    async def gated(batch: Any, exc: Exception, backoff: float) -> float:
        failing.set()
        await release.wait()  # the test decides when the failure is handled
        return await real_failed(batch, exc, backoff)

    broker._publish_failed = gated  # type: ignore[method-assign]
    channel = broker.channel_of("user:a")
    sub: SubscriberConnection | None = None

    def event(seq: int) -> dict[str, Any]:
        return {"type": "task:created", "scope": "user:a", "seq": seq}

    try:
        await broker.start()
        sub = await listen(server.url, channel)
        broker.publish(event(0))
        assert orjson.loads((await messages(sub, 1))[0][2])["event"]["seq"] == 0
        sub.close()

        server.stop()  # the publisher's connection is dead; it does not know yet
        for seq in range(1, 41):
            broker.publish(event(seq))
        async with asyncio.timeout(DEADLINE):
            await failing.wait()  # the batch of 40 failed ...
        for seq in range(41, 81):  # ... and 40 more wait behind it: 80 > 50
            broker.publish(event(seq))
        assert broker.dropped == 0  # not yet: the failed batch is out of the queue
        server.start()
        sub = await listen(server.url, channel)  # before anything is published again
        release.set()
        got = await messages(sub, 50)
        assert [orjson.loads(r[2])["event"]["seq"] for r in got] == list(range(31, 81))
        assert broker.dropped == 30
        broker.publish(event(81))
        assert orjson.loads((await messages(sub, 1))[0][2])["event"]["seq"] == 81
        await eventually(lambda: broker.published == 52, DEADLINE, "counted as published")
    finally:
        await broker.stop()
        if sub is not None:
            sub.close()
        server.stop()


async def test_sharded_mode_uses_spublish_and_control_messages_publish() -> None:
    """On the real Redis, SPUBLISH reaches SSUBSCRIBE and not SUBSCRIBE; and the broker in
    sharded mode sends a scope's events with SPUBLISH, control messages with PUBLISH."""
    channel = channel_name()
    sharded = await listen(SHARED, channel, sharded=True)
    classic = await listen(SHARED, channel)
    pub = PublisherConnection(SHARED, "taskmaster:test:sharded", lambda c: "SPUBLISH")
    plain = PublisherConnection(SHARED, "taskmaster:test:classic")
    try:
        await pub.open()
        await plain.open()
        assert await pub.publish([(channel, b"s1"), (channel, b"s2")]) == 2
        assert await plain.publish([(channel, b"c1")]) == 1
        assert await messages(sharded, 2) == [[b"smessage", channel.encode(), b"s1"],
                                              [b"smessage", channel.encode(), b"s2"]]
        # The classic subscription's first message is the PUBLISH sent after them.
        assert await messages(classic, 1) == [[b"message", channel.encode(), b"c1"]]
    finally:
        for connection in (pub, plain, sharded, classic):
            connection.close()

    fake = HoldingRedis(hold=2)
    url = await fake.start()
    broker = RedisBroker(f"{url}?prefix=sh&pubsub=sharded")
    await broker.start()
    try:
        broker.publish({"type": "task:created", "scope": "user:a", "seq": 1})
        broker.publish({"type": "session:revoke", "token": "t"})  # no scope: control
        await eventually(lambda: broker.published == 2, DEADLINE, "both published")
        assert [c[:2] for c in fake.commands] == [
            [b"SPUBLISH", broker.channel_of("user:a").encode()],
            [b"PUBLISH", broker.control_channel.encode()]]
    finally:
        await broker.stop()
        await fake.stop()
