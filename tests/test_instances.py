"""Three real `taskmaster serve` processes sharing one store and one Redis, as in production:
fan-out across processes, revocation everywhere, and an instance killed mid-traffic."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import TEST_SECRET
from mongo_server import mongodb_uri, mongodb_url  # noqa: F401  (fixtures)
from processes import Instance
from redis_server import RedisProcess, shared_redis_url
from socket_clients import Tab


@pytest.fixture(params=["mongodb", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One MongoDB (the production layout), or one SQLite file shared by the processes."""
    if request.param == "mongodb":
        return str(request.getfixturevalue("mongodb_url"))
    return f"sqlite:///{tmp_path}/shared.db"


@contextlib.contextmanager
def three_instances(tmp_path: Path, store_url: str, redis_url: str) -> Iterator[list[Instance]]:
    """a, b and c sharing one store and one Redis, started together, stopped by pid."""
    env = {"TASKMASTER_STORE_URL": store_url, "REDIS_URL": redis_url,
           "JWT_SECRET": TEST_SECRET}
    instances = [Instance(tmp_path, env, name=name) for name in ("a", "b", "c")]
    try:
        for instance in instances:
            instance.start(wait=False)
        for instance in instances:
            instance.wait_until("/api/ready", 200)
        yield instances
    finally:
        for instance in instances:
            instance.stop()


@pytest.fixture
def trio(tmp_path: Path, store_url: str) -> Iterator[list[Instance]]:
    with three_instances(tmp_path, store_url, shared_redis_url()) as instances:
        yield instances


class Rest:
    def __init__(self, http: aiohttp.ClientSession, token: str = "") -> None:
        self.http, self.token = http, token

    async def call(self, instance: Instance, method: str, path: str,
                   body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, instance.url + path, json=body,
                                     headers=headers) as response:
            data = await response.json() if response.status != 204 else None
            # 503 `unavailable` (the store busy, a scope's queue full) is a clean refusal that
            # callers handle or assert against; any other 5xx is a server fault.
            code = (data or {}).get("error", {}).get("code")
            clean = response.status == 503 and code == "unavailable"
            assert response.status < 500 or clean, (response.status, data)
            return response.status, data


async def register(http: aiohttp.ClientSession, instance: Instance) -> tuple[Rest, str]:
    status, body = await Rest(http).call(instance, "POST", "/api/auth/register", {
        "email": f"u{random.randrange(10**9)}@example.com", "password": "correct horse",
        "name": "N"})
    assert status == 201
    return Rest(http, body["token"]), f"user:{body['user']['id']}"


async def state_of(rest: Rest, instance: Instance, scope: str) -> dict[str, Any]:
    status, body = await rest.call(instance, "GET", f"/api/sync?scope={scope}&since=0")
    assert status == 200 and not body["more"]
    return {c["id"]: c for c in body["changes"]}


async def converged(tab: Tab, rest: Rest, instance: Instance, scope: str) -> None:
    truth = await state_of(rest, instance, scope)
    head = max(t["seq"] for t in truth.values())
    await tab.wait_for(lambda events: tab.replica.cursors.get(scope) == head, timeout=15)
    assert tab.replica.violations == []
    assert tab.replica.tasks == truth


async def test_writes_on_b_and_c_reach_a_socket_on_a_in_order_once(
        trio: list[Instance], http: aiohttp.ClientSession, closing: list[Any]) -> None:
    a, b, c = trio
    rest, scope = await register(http, a)
    listener = await Tab(a.url, rest.token, cursors={scope: 0}).connect()
    closing.append(listener)
    writer = await Tab(c.url, rest.token).connect()
    closing.append(writer)
    for n in range(10):
        status, _ = await rest.call(b, "POST", "/api/tasks", {"title": f"rest on b {n}"})
        assert status == 201
        assert (await writer.call("task:create", {"title": f"socket on c {n}"}))["ok"]
    await converged(listener, rest, a, scope)
    # Exactly once, in order: live events and repair pages together carry each seq once.
    seen = [e["seq"] for e in listener.task_events()] + [
        c["seq"] for event, page in listener.events if event == "sync"
        for c in page["changes"]]
    assert sorted(seen) == list(range(1, 21))


async def test_a_revoked_token_is_refused_and_dropped_on_all_three(
        trio: list[Instance], http: aiohttp.ClientSession, closing: list[Any]) -> None:
    rest, _ = await register(http, trio[0])
    tabs = []
    for instance in trio:
        tab = await Tab(instance.url, rest.token).connect()
        closing.append(tab)
        tabs.append(tab)
    status, _ = await rest.call(trio[1], "POST", "/api/auth/logout")
    assert status == 204
    for tab in tabs:
        assert (await tab.wait_event("session:ended", timeout=10))["reason"] == "token_revoked"
    for instance in trio:
        status, body = await rest.call(instance, "GET", "/api/auth/me")
        assert status == 401 and body["error"]["message"] == "token revoked"


async def test_killing_an_instance_loses_no_acknowledged_write(
        trio: list[Instance], http: aiohttp.ClientSession, closing: list[Any]) -> None:
    a, b, c = trio
    rest, scope = await register(http, a)
    rng = random.Random(5)
    watchers = {name: await Tab(inst.url, rest.token, cursors={scope: 0}).connect()
                for name, inst in (("a", a), ("b", b), ("c", c))}
    closing.extend(watchers.values())
    acknowledged: dict[str, int] = {}  # task id -> version the server acknowledged
    killed = asyncio.Event()
    midway = asyncio.Event()

    async def write(n: int) -> None:
        for i in range(25):
            instance = rng.choice([a, c] if killed.is_set() else trio)
            try:
                if acknowledged and rng.random() < 0.4:
                    task_id = rng.choice(list(acknowledged))
                    status, body = await rest.call(instance, "PATCH", f"/api/tasks/{task_id}",
                                                   {"title": f"w{n}-{i}"})
                else:
                    status, body = await rest.call(instance, "POST", "/api/tasks",
                                                   {"title": f"w{n}-{i}"})
            except (aiohttp.ClientError, TimeoutError):
                continue  # the killed instance: not acknowledged, nothing to keep
            if status == 503:
                continue  # a clean "unavailable" (store busy): not acknowledged either
            assert status in (200, 201), body
            task = body["task"]
            acknowledged[task["id"]] = max(acknowledged.get(task["id"], 0), task["version"])
            if len(acknowledged) >= 30:
                midway.set()

    async def kill_b_midway() -> None:
        await asyncio.wait_for(midway.wait(), 60)
        b.kill()
        killed.set()

    async with asyncio.TaskGroup() as group:  # one failing cancels the rest
        for n in range(6):
            group.create_task(write(n))
        group.create_task(kill_b_midway())
    assert killed.is_set()

    # b's socket lost its server; it reconnects to another instance with its cursor.
    orphan = watchers["b"]
    await orphan.wait_event("disconnect", timeout=30)
    again = await Tab(c.url, rest.token,
                      cursors={scope: orphan.replica.cursors.get(scope, 0)}).connect()
    closing.append(again)
    again.replica.tasks = dict(orphan.replica.tasks)
    again.replica.cursors = dict(orphan.replica.cursors)

    truth = await state_of(rest, a, scope)
    for task_id, version in acknowledged.items():  # durable: every ack is in the store
        assert task_id in truth and truth[task_id]["version"] >= version
    for tab in (watchers["a"], watchers["c"], again):
        await converged(tab, rest, a, scope)


@pytest.fixture
def trio_on_private_redis(tmp_path: Path) -> Iterator[tuple[list[Instance], RedisProcess]]:
    redis = RedisProcess()
    redis.start()
    try:
        with three_instances(tmp_path, f"sqlite:///{tmp_path}/shared.db",
                             redis.url + "?prefix=restart") as instances:
            yield instances, redis
    finally:
        redis.stop()


async def test_redis_restarted_mid_traffic_loses_nothing_on_three_instances(
        trio_on_private_redis: tuple[list[Instance], RedisProcess],
        http: aiohttp.ClientSession, closing: list[Any]) -> None:
    trio, redis = trio_on_private_redis
    a = trio[0]
    rest, scope = await register(http, a)
    rng = random.Random(11)
    watchers = [await Tab(inst.url, rest.token, cursors={scope: 0}).connect()
                for inst in trio]
    closing.extend(watchers)
    acknowledged: dict[str, int] = {}
    midway, restarted = asyncio.Event(), asyncio.Event()

    async def write(n: int) -> None:
        for i in range(25):
            if i == 12:
                await asyncio.wait_for(restarted.wait(), 60)  # half before, half after
            status, body = await rest.call(rng.choice(trio), "POST", "/api/tasks",
                                           {"title": f"w{n}-{i}"})
            assert status == 201, body  # the store is up: writes never depend on Redis
            acknowledged[body["task"]["id"]] = body["task"]["version"]
            if len(acknowledged) >= 30:
                midway.set()

    async def restart_redis() -> None:
        await asyncio.wait_for(midway.wait(), 60)
        redis.stop()
        loop = asyncio.get_running_loop()
        for instance in trio:  # every instance notices and says so
            await loop.run_in_executor(None, instance.wait_until, "/api/ready", 503)
        for n in range(5):  # writes made while no instance hears any other
            status, body = await rest.call(trio[n % 3], "POST", "/api/tasks",
                                           {"title": f"outage {n}"})
            assert status == 201
            acknowledged[body["task"]["id"]] = body["task"]["version"]
        redis.start()
        for instance in trio:  # all resubscribe by themselves
            await loop.run_in_executor(None, instance.wait_until, "/api/ready", 200)
        restarted.set()

    async with asyncio.TaskGroup() as group:  # one failing cancels the rest
        for n in range(6):
            group.create_task(write(n))
        group.create_task(restart_redis())
    for instance in trio:
        assert instance.proc is not None and instance.proc.poll() is None, instance.output()
    truth = await state_of(rest, a, scope)
    assert len(truth) == len(acknowledged) == 6 * 25 + 5
    for tab in watchers:
        await converged(tab, rest, a, scope)
