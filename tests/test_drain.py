"""Graceful drain on SIGTERM (issue 7), with real processes sharing one SQLite file and
Redis: readiness fails at once, sockets are told to reconnect elsewhere, in-flight writes
finish, nothing acknowledged is lost, and the process exits in time."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_instances import converged, register, state_of

from conftest import TEST_SECRET
from processes import Instance
from redis_server import shared_redis_url
from socket_clients import Tab
from waiting import poll_until

DRAIN_TIMEOUT = 12.0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    env = {"TASKMASTER_STORE_URL": f"sqlite:///{tmp_path}/shared.db",
           "REDIS_URL": shared_redis_url(), "JWT_SECRET": TEST_SECRET,
           "TASKMASTER_DRAIN_TIMEOUT": f"{DRAIN_TIMEOUT}s", "TASKMASTER_DRAIN_SPREAD": "2s"}
    a, b = Instance(tmp_path, env, name="a"), Instance(tmp_path, env, name="b")
    try:
        a.start(wait=False)
        b.start()
        a.wait_until("/api/ready", 200)
        yield a, b
    finally:
        a.stop()
        b.stop()


async def test_sigterm_drains_without_losing_a_write_or_showing_an_error(
        pair: tuple[Instance, Instance], http: aiohttp.ClientSession,
        closing: list[Any]) -> None:
    a, b = pair
    rest, scope = await register(http, a)
    leaving = [await Tab(b.url, rest.token, cursors={scope: 0}).connect() for _ in range(6)]
    staying = await Tab(a.url, rest.token, cursors={scope: 0}).connect()
    closing.extend([*leaving, staying])
    acknowledged: dict[str, int] = {}
    to_b_during_drain: list[int] = []
    rng = random.Random(7)
    drain_sent = asyncio.Event()
    midway = asyncio.Event()

    async def write(n: int) -> None:
        for i in range(30):
            # A balancer stops routing to b once its readiness fails; requests already
            # on their way to b (sent before that) must still be answered.
            instance = a if drain_sent.is_set() and b.status("/api/ready") != 200 else \
                rng.choice([a, b])
            status, body = await rest.call(instance, "POST", "/api/tasks",
                                           {"title": f"w{n}-{i}"})
            assert status == 201, (instance.name, status, body)
            if instance is b and drain_sent.is_set():
                to_b_during_drain.append(status)
            acknowledged[body["task"]["id"]] = body["task"]["version"]
            if len(acknowledged) >= 40:
                midway.set()

    async def terminate_b() -> float:
        await asyncio.wait_for(midway.wait(), 30)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        drain_sent.set()
        return sent

    *_, sent = await asyncio.gather(*(write(n) for n in range(5)), terminate_b())
    # Readiness fails as soon as the drain starts (the sockets leave over 2 s).
    poll_until(lambda: b.status("/api/ready") in (503, None), 2, "b's readiness fails")

    for tab in leaving:
        notice = await tab.wait_event("session:ended", timeout=DRAIN_TIMEOUT)
        assert notice["reason"] == "server_draining" and notice["reconnect"] is True
        await tab.wait_event("disconnect", timeout=5)
        assert [e for e, _ in tab.events if e in ("connect_error", "error")] == []
    # Each one reconnects (what a client does on a transport close) to the other
    # instance, with its cursor, and converges.
    moved = []
    for tab in leaving:
        again = await Tab(a.url, rest.token,
                          cursors={scope: tab.replica.cursors.get(scope, 0)}).connect()
        again.replica.tasks = dict(tab.replica.tasks)
        again.replica.cursors = dict(tab.replica.cursors)
        closing.append(again)
        moved.append(again)

    assert b.proc is not None
    code = await asyncio.get_running_loop().run_in_executor(None, b.proc.wait, DRAIN_TIMEOUT)
    took = time.monotonic() - sent
    assert code == 0, b.output()
    assert took < DRAIN_TIMEOUT, took

    truth = await state_of(rest, a, scope)
    for task_id, version in acknowledged.items():
        assert task_id in truth and truth[task_id]["version"] >= version
    for tab in (staying, *moved):
        await converged(tab, rest, a, scope)


async def test_a_draining_instance_refuses_new_sockets_saying_why(
        pair: tuple[Instance, Instance], http: aiohttp.ClientSession,
        closing: list[Any]) -> None:
    a, b = pair
    rest, _ = await register(http, a)
    # Six sockets keep b draining (and listening) for most of the 2 s spread.
    closing.extend([await Tab(b.url, rest.token).connect() for _ in range(6)])
    assert b.proc is not None
    b.proc.send_signal(signal.SIGTERM)
    poll_until(lambda: b.status("/api/ready") == 503, 1, "b's readiness fails")
    late = Tab(b.url, rest.token)
    closing.append(late)
    with pytest.raises(Exception, match="failed to connect"):
        await late.connect()
    assert "shutting down" in str(late.connect_error)
    code = await asyncio.get_running_loop().run_in_executor(None, b.proc.wait, DRAIN_TIMEOUT)
    assert code == 0
