"""realtime/broker/subscriber.py: the broker's pub/sub connection, against the real Redis
and against fake servers for what Redis does not do on demand (split replies, silence)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis

import realtime.broker.redis as broker_module
from realtime.broker.connection import encode_command
from realtime.broker.redis import RedisBroker
from realtime.broker.subscriber import SubscriberConnection, SubscriberError

from redis_server import SHARED, FakeRedisServer, shared_redis_url
from waiting import eventually


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    parser = hiredis.Reader()
    parser.feed(encode_command("SUBSCRIBE", "a:{1}", b"\xff\r\nbinary"))
    assert parser.gets() == [b"SUBSCRIBE", b"a:{1}", b"\xff\r\nbinary"]


async def read_until(sub: SubscriberConnection, want: Callable[[Any], bool]) -> Any:
    async with asyncio.timeout(5):
        while True:
            for reply in await sub.read():
                if want(reply):
                    return reply


async def test_subscribes_and_reads_messages_from_redis() -> None:
    channel = f"t{uuid.uuid4().hex}"
    sub = SubscriberConnection(SHARED, "taskmaster:test:sub")
    client = aioredis.from_url(SHARED)
    try:
        await sub.open()
        sub.send("SUBSCRIBE", channel)
        await read_until(sub, lambda r: r[0] == b"subscribe")
        names = await client.client_list()
        assert any(c["name"] == "taskmaster:test:sub" for c in names)
        for n in range(50):
            await client.publish(channel, f"m{n}")
        got = []
        async with asyncio.timeout(5):
            while len(got) < 50:
                got += [r[2] for r in await sub.read() if r[0] == b"message"]
        assert got == [f"m{n}".encode() for n in range(50)]  # in order, none lost
        sub.send("PING")  # in subscribed mode the answer comes in the stream
        assert await read_until(sub, lambda r: r[0] == b"pong") == [b"pong", b""]
    finally:
        sub.close()
        await client.aclose()


async def test_a_refused_command_is_an_error() -> None:
    sub = SubscriberConnection(SHARED, "taskmaster:test:sub")
    try:
        await sub.open()
        sub.send("SUBSCRIBE")  # no channel
        with pytest.raises(SubscriberError, match="wrong number of arguments"):
            await read_until(sub, lambda r: False)
    finally:
        sub.close()


@pytest.fixture
async def acl_user() -> AsyncIterator[tuple[str, str]]:
    client = aioredis.from_url(SHARED)
    name, password = f"tm-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await client.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*",
                                 "+@all")
    try:
        yield name, password
    finally:
        await client.execute_command("ACL", "DELUSER", name)
        await client.aclose()


async def test_authenticates_with_the_url_s_user_and_password(
        acl_user: tuple[str, str]) -> None:
    name, password = acl_user
    host = SHARED.split("://", 1)[1]
    sub = SubscriberConnection(f"redis://{name}:{password}@{host}", "taskmaster:test:acl")
    try:
        await sub.open()
        sub.send("PING")
        assert await read_until(sub, lambda r: True) == b"PONG"  # not subscribed yet
    finally:
        sub.close()
    wrong = SubscriberConnection(f"redis://{name}:wrong@{host}", "taskmaster:test:acl")
    try:
        with pytest.raises(SubscriberError, match=r"WRONGPASS|invalid"):
            await wrong.open()
    finally:
        wrong.close()


class FakeRedis(FakeRedisServer):
    """Answers the opening (AUTH, CLIENT SETNAME) with +OK, then writes what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[Any] = []
        self.connected = asyncio.Event()

    def on_connect(self, writer: asyncio.StreamWriter) -> None:
        self.connected.set()

    def on_command(self, command: Any, writer: asyncio.StreamWriter) -> None:
        self.commands.append(command)
        if command[0] in (b"AUTH", b"CLIENT"):
            writer.write(b"+OK\r\n")


async def test_a_reply_split_across_reads_is_read_whole() -> None:
    fake = FakeRedis()
    url = await fake.start()
    sub = SubscriberConnection(url, "x")
    try:
        await sub.open()
        message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$11\r\nhello world\r\n"
        writer = fake.writers[0]
        writer.write(message[:20])
        await writer.drain()
        assert await sub.read() == []  # half a reply: nothing yet
        writer.write(message[20:] + message)
        got: list[Any] = []
        async with asyncio.timeout(5):
            while len(got) < 2:
                got += await sub.read()
        assert got == [[b"message", b"ch", b"hello world"]] * 2
    finally:
        sub.close()
        await fake.stop()


async def test_a_silent_subscription_is_pinged_then_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-open connection (no data, no answer to PING) is replaced, and the broker
    reports itself unhealthy meanwhile."""
    monkeypatch.setattr(broker_module, "KEEPER_TICK", 0.05)
    monkeypatch.setattr(broker_module, "PING_AFTER", 0.2)
    monkeypatch.setattr(broker_module, "PING_ANSWER_WITHIN", 0.2)
    fake = FakeRedis()
    url = await fake.start()
    broker = RedisBroker(url + "?prefix=silent")
    await broker.start()
    try:
        await eventually(lambda: broker.healthy, 5, "subscribed to the fake")
        await eventually(lambda: [b"PING"] in fake.commands, 5, "a ping after silence")
        await eventually(lambda: broker.reconnects >= 1, 5, "the silent connection dropped")
        await eventually(lambda: len(fake.writers) >= 2, 5, "a new connection opened")
    finally:
        await broker.stop()
        await fake.stop()


async def test_an_instance_delivers_its_own_events_once() -> None:
    url = shared_redis_url()
    one, two = RedisBroker(url), RedisBroker(url)
    seen: dict[str, list[Any]] = {"one": [], "two": []}
    one.subscribe(seen["one"].append)
    two.subscribe(seen["two"].append)
    for broker in (one, two):
        await broker.start()
    try:
        await eventually(lambda: one.healthy and two.healthy, 5, "both subscribed")
        for broker in (one, two):
            await broker.watch("user:a")
        one.publish({"type": "task:created", "scope": "user:a", "seq": 1})
        await eventually(lambda: two.received == 1, 5, "the other instance hears it")
        assert [e.get("seq") for e in seen["two"] if e["type"] == "task:created"] == [1]
        # Its own instance delivered it at publish time, and not a second time from Redis.
        assert [e.get("seq") for e in seen["one"] if e["type"] == "task:created"] == [1]
        assert one.received == 0
    finally:
        for broker in (one, two):
            await broker.stop()
