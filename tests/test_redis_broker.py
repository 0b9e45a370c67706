"""Several instances sharing one store and one real Redis: fan-out, revocation, layout,
sharded pub/sub, bounded connections, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from realtime import keys
from realtime.app import create_app
from realtime.broker.redis import RedisBroker

from conftest import Api, OpenAPIChecker, make_config
from redis_server import RedisProcess, shared_redis_url
from socket_clients import Tab
from waiting import eventually

Cluster = Callable[..., Awaitable[list[Api]]]


@pytest.fixture
async def cluster(tmp_path: Path, aiohttp_client: Any,
                  openapi_checker: OpenAPIChecker) -> AsyncIterator[Cluster]:
    """`await cluster(n, broker_url)`: n instances on one SQLite file and one Redis."""

    async def start(n: int, broker_url: str, **overrides: Any) -> list[Api]:
        config = make_config(tmp_path, **{"broker.url": broker_url, **overrides})
        instances = []
        for index in range(n):
            app = create_app(config.replace(instance_id=f"i{index}"))
            instances.append(Api(await aiohttp_client(app), openapi_checker))
        for api in instances:
            await wait_ready(api)
        return instances

    yield start


async def wait_ready(api: Api, want: int = 200, timeout: float = 10) -> None:
    async def answers() -> bool:
        return bool((await api.get("/api/ready")).status == want)

    await eventually(answers, timeout, f"/api/ready answering {want}")


def url_of(api: Api) -> str:
    return str(api.client.make_url("/"))


def broker_of(api: Api) -> RedisBroker:
    broker = api.app[keys.BROKER]
    assert isinstance(broker, RedisBroker)
    return broker


async def server_state(api: Api, scope: str) -> dict[str, Any]:
    reply = await api.get("/api/sync", params={"scope": scope, "since": 0})
    return {c["id"]: c for c in reply.body["changes"]}


@pytest.mark.parametrize("pubsub", ["classic", "sharded"])
async def test_a_socket_on_one_instance_sees_writes_made_on_the_others(
        cluster: Cluster, closing: list[Any], pubsub: str) -> None:
    a, b, c = await cluster(3, shared_redis_url(pubsub=pubsub))
    user = await a.as_new_user()
    scope = f"user:{user.user['id']}"
    on_b = Api(b.client, b.checker, token=user.token)
    listener = await Tab(url_of(a), user.token).connect()
    closing.append(listener)
    writer = await Tab(url_of(c), user.token).connect()
    closing.append(writer)

    for n in range(5):
        assert (await on_b.post("/api/tasks", json={"title": f"rest on b {n}"})).status == 201
        ack = await writer.call("task:create", {"title": f"socket on c {n}"})
        assert ack["ok"], ack

    await listener.wait_for(lambda events: len(listener.task_events()) == 10, timeout=10)
    seqs = [e["seq"] for e in listener.task_events()]
    assert seqs == list(range(1, 11))  # each exactly once, in seq order
    assert listener.replica.violations == []
    assert listener.replica.tasks == await server_state(on_b, scope)
    assert broker_of(a).received >= 10  # they did come through Redis


async def test_logout_on_one_instance_drops_the_tokens_sockets_on_all(
        cluster: Cluster, closing: list[Any]) -> None:
    a, b, c = await cluster(3, shared_redis_url())
    user = await a.as_new_user()
    tabs = []
    for api in (a, b, c):
        tab = await Tab(url_of(api), user.token).connect()
        closing.append(tab)
        tabs.append(tab)
    on_b = Api(b.client, b.checker, token=user.token)
    assert (await on_b.post("/api/auth/logout")).status == 204
    for tab in tabs:
        ended = await tab.wait_event("session:ended", timeout=10)
        assert ended["reason"] == "token_revoked"
    for api in (a, c):  # and the token is refused everywhere
        assert (await api.get("/api/auth/me", token=user.token)).status == 401
    refused = Tab(url_of(c), user.token)
    closing.append(refused)
    with pytest.raises(Exception, match="failed to connect"):
        await refused.connect()
    assert refused.connect_error["message"] == "token revoked"


async def test_an_instance_only_hears_the_shards_of_its_sockets(
        cluster: Cluster, closing: list[Any]) -> None:
    a, b = await cluster(2, shared_redis_url(shards="4096"))
    watched, ignored = await a.as_new_user(), await a.as_new_user()
    tab = await Tab(url_of(a), watched.token).connect()
    closing.append(tab)
    broker = broker_of(a)
    watched_channel = broker.channel_of(f"user:{watched.user['id']}")
    ignored_channel = broker.channel_of(f"user:{ignored.user['id']}")
    assert watched_channel != ignored_channel  # 4096 shards: two users rarely collide
    assert watched_channel in broker._subscribed
    assert ignored_channel not in broker._subscribed

    on_b = Api(b.client, b.checker, token=ignored.token)
    for n in range(20):
        await on_b.post("/api/tasks", json={"title": f"not for a {n}"})
    on_b.token = watched.token
    await on_b.post("/api/tasks", json={"title": "for a"})
    await tab.wait_event("task:created")
    assert broker.received == 1  # instance a never received b's other traffic
    await tab.close()
    await eventually(lambda: watched_channel not in broker._subscribed, 5,
                     "the shard being unsubscribed")




async def test_bursts_are_pipelined_over_few_connections(cluster: Cluster,
                                                         closing: list[Any]) -> None:
    """python-socketio's AsyncRedisManager builds new Redis clients on pool exhaustion
    and never closes the old ones; ours publishes on one pipeline over a bounded pool."""
    url = shared_redis_url()
    a, b = await cluster(2, url)
    user = await a.as_new_user()
    tab = await Tab(url_of(b), user.token).connect()
    closing.append(tab)
    broker = broker_of(a)
    prefix = broker.prefix
    probe = aioredis.from_url(url.split("?")[0])

    async def ours() -> list[Any]:  # the shared Redis also serves other tests' clients
        return [c for c in await probe.client_list()
                if c.get("name", "").startswith(f"taskmaster:{prefix}:")]

    before = await ours()
    results = await asyncio.gather(*(Api(a.client, a.checker, token=user.token).post(
        "/api/tasks", json={"title": f"burst {n}"}) for n in range(200)))
    assert all(r.status == 201 for r in results)
    await tab.wait_for(lambda events: len(tab.task_events()) == 200, timeout=20)
    assert [e["seq"] for e in tab.task_events()] == list(range(1, 201))
    after = await ours()
    await probe.aclose()
    assert len(after) - len(before) <= 2, (prefix, len(before), len(after))
    assert broker.published == 200


async def test_redis_going_away_costs_no_client_its_convergence(
        cluster: Cluster, closing: list[Any]) -> None:
    server = RedisProcess()
    server.start()
    try:
        a, b = await cluster(2, f"{server.url}?prefix=fault")
        user = await a.as_new_user()
        scope = f"user:{user.user['id']}"
        on_b = Api(b.client, b.checker, token=user.token)
        second = await a.post("/api/auth/login", token=None, json={
            "email": user.user["email"], "password": "correct horse"})
        doomed = second.body["token"]
        tab = await Tab(url_of(a), user.token, cursors={scope: 0}).connect()
        closing.append(tab)
        await on_b.post("/api/tasks", json={"title": "before"})
        # live or, if it crossed the connect-time catch-up, in a sync page: seq 1 either way
        await tab.wait_for(lambda events: tab.replica.cursors.get(scope) == 1)

        server.stop()
        await wait_ready(a, want=503)  # a balancer stops routing to a deaf instance
        for n in range(5):  # REST keeps working on both instances meanwhile
            assert (await on_b.post("/api/tasks", json={"title": f"during {n}"})).status == 201
        local = await tab.call("task:create", {"title": "local socket write"})
        assert local["ok"]  # ... and local sockets keep working, live
        assert (await b.post("/api/auth/logout", token=doomed)).status == 204
        server.start()
        await wait_ready(a)
        await wait_ready(b)
        await on_b.post("/api/tasks", json={"title": "after"})
        truth = await server_state(on_b, scope)
        head = max(t["seq"] for t in truth.values())
        await tab.wait_for(lambda events: tab.replica.cursors.get(scope) == head, timeout=15)
        assert tab.replica.violations == []
        assert tab.replica.tasks == truth
        assert broker_of(a).reconnects >= 1
        # A logout made on b while a was deaf reaches a too once Redis is back.
        refused = await a.get("/api/auth/me", token=doomed)
        assert refused.status == 401 and refused.error["message"] == "token revoked"
    finally:
        server.stop()
