"""The benchmark-only routes (handlers/bench.py): off by default, real writes when on,
never in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from realtime import keys
from realtime.app import create_app
from realtime.config import ConfigError, load_config

from conftest import TEST_SECRET, Api, OpenAPIChecker, make_config
from socket_clients import Tab


async def test_off_by_default(aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.bench_endpoints is False
    client = await aiohttp_client(create_app(config))
    response = await client.post("/api/_bench/creates", json=[["u1", "a title"]])
    assert response.status == 404
    assert (await client.get("/api/_bench/stats")).status == 404


async def test_creates_real_tasks_with_seq(aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"bench.endpoints": True})
    app = create_app(config)
    client = await aiohttp_client(app)
    items = [["alice", f"task {i}"] for i in range(5)] + [["bob", "only one", "m-1"]]
    response = await client.post("/api/_bench/creates", json=items)
    assert response.status == 200, await response.text()
    assert await response.json() == {"created": 6}

    # Written through the store: the scope's seq counts every create, with no gap,
    # and sync (the public read path) returns them.
    store = app[keys.STORE]
    assert await store.head("user:alice") == 5
    assert await store.head("user:bob") == 1
    answer = await store.sync("user:alice", 0, 100)
    assert sorted(task["seq"] for task in answer.changes) == [1, 2, 3, 4, 5]
    assert {task["title"] for task in answer.changes} == {f"task {i}" for i in range(5)}
    assert all(task["owner"] == "alice" and task["version"] == 1 for task in answer.changes)

    stats = await (await client.get("/api/_bench/stats")).json()
    assert stats["bench"]["creates"] == 6 and stats["bench"]["batches"] == 1
    assert stats["sockets"] == 0 and stats["rss"] > 0
    assert stats["connects"] == {"head_reads": 0, "limiter_round_trips": 0}  # none yet


async def test_stats_count_how_connects_were_served(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = Api(await aiohttp_client(create_app(make_config(
        tmp_path, **{"bench.endpoints": True}))), openapi_checker)
    user = await api.as_new_user()
    tabs = [await Tab(str(api.client.make_url("/")), user.token).connect() for _ in range(3)]
    try:
        stats = await (await api.client.get("/api/_bench/stats")).json()
        assert 1 <= stats["connects"]["head_reads"] <= 3  # one per batch of connects
        assert stats["connects"]["limiter_round_trips"] == 0  # in memory: no Redis
    finally:
        for tab in tabs:
            await tab.close()


@pytest.mark.parametrize("body", [
    [], {}, [["alice"]], [["alice", ""]], [["no spaces allowed", "t"]], [["alice", 5]],
    [["alice", "t", "bad mutation id"]],
])
async def test_bad_input_is_a_clean_400(aiohttp_client: Any, tmp_path: Path,
                                        body: Any) -> None:
    config = make_config(tmp_path, **{"bench.endpoints": True})
    client = await aiohttp_client(create_app(config))
    response = await client.post("/api/_bench/creates", json=body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid"


def test_refused_in_production() -> None:
    with pytest.raises(ConfigError, match=r"bench\.endpoints"):
        load_config(env={"NODE_ENV": "production", "JWT_SECRET": TEST_SECRET,
                         "TASKMASTER_BENCH_ENDPOINTS": "true"}, path=None)
    # ... and on from the environment outside production
    config = load_config(env={"JWT_SECRET": TEST_SECRET, "TASKMASTER_BENCH_ENDPOINTS": "1"},
                         path=None)
    assert config.bench_endpoints


async def test_publish_delivers_what_a_create_would_without_the_store(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, **{"bench.endpoints": True}))
    api = Api(await aiohttp_client(app), openapi_checker)
    alice, bob, carol = [await api.as_new_user() for _ in range(3)]
    url = str(api.client.make_url("/"))
    tabs = [await Tab(url, user.token).connect() for user in (alice, bob, carol)]
    try:
        a, b = alice.user["id"], bob.user["id"]  # type: ignore[attr-defined]
        response = await api.client.post("/api/_bench/publish", json=[
            [a, "one"], [b, "for bob", "m-7"], [a, "two"], [a, "three"]])
        assert response.status == 200, await response.text()
        assert await response.json() == {"published": 4}
        published = await tabs[0].wait_for(
            lambda events: len(got := tabs[0].task_events()) == 3 and got)
        assert [e["seq"] for e in published] == [1, 2, 3]  # the scope's own counter
        assert [e["task"]["title"] for e in published] == ["one", "two", "three"]
        to_bob = await tabs[1].wait_for(lambda events: tabs[1].task_events())
        assert len(to_bob) == 1 and to_bob[0]["origin"] == "m-7" and to_bob[0]["seq"] == 1

        # Nothing was written, and each event has the shape a real create's event has
        # (carol's: bob's scope would drop a real seq 1 as a duplicate of the published one).
        store = app[keys.STORE]
        assert await store.head(f"user:{a}") == 0 and await store.head(f"user:{b}") == 0
        c = carol.user["id"]  # type: ignore[attr-defined]
        created = await api.client.post("/api/_bench/creates", json=[[c, "real"]])
        assert created.status == 200
        real = (await tabs[2].wait_for(lambda events: tabs[2].task_events()))[0]
        assert list(real) == list(to_bob[0]) and list(real["task"]) == list(to_bob[0]["task"])
        assert real["type"] == to_bob[0]["type"] == "task:created"
        stats = await (await api.client.get("/api/_bench/stats")).json()
        assert stats["bench"]["published"] == 4 and stats["bench"]["creates"] == 1
    finally:
        for tab in tabs:
            await tab.close()


async def test_publish_refuses_bad_input_and_is_off_by_default(
        aiohttp_client: Any, tmp_path: Path) -> None:
    off = await aiohttp_client(create_app(make_config(tmp_path / "off")))
    assert (await off.post("/api/_bench/publish", json=[["u1", "t"]])).status == 404
    on = await aiohttp_client(create_app(make_config(tmp_path, **{"bench.endpoints": True})))
    for body in ([], [["alice", ""]], [["no spaces", "t"]]):
        response = await on.post("/api/_bench/publish", json=body)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid"
