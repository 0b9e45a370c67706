"""A reconnect storm (issue 7): an instance dies under load and all its sockets come back
at once on the survivor, with their cursors. Driven by `taskmaster loadtest`, which
checks every delivery (exactly once, in order, final state equal to the server's)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from conftest import TEST_SECRET
from processes import Instance, clean_environment
from redis_server import shared_redis_url
from waiting import eventually

SOCKETS, USERS = 1000, 100


async def gauge(http: aiohttp.ClientSession, instance: Instance, name: str) -> float:
    async with http.get(instance.url + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_the_survivor_absorbs_every_socket_of_a_killed_instance(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    env = {"TASKMASTER_STORE_URL": f"sqlite:///{tmp_path}/shared.db",
           "REDIS_URL": shared_redis_url(), "JWT_SECRET": TEST_SECRET}
    a, b = Instance(tmp_path, env, name="a"), Instance(tmp_path, env, name="b")
    report = tmp_path / "storm.json"
    try:
        a.start(wait=False)
        b.start()
        a.wait_until("/api/ready", 200)
        loadtest = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "taskmaster"), "loadtest",
            "--url", a.url, b.url, "--register", "--sockets", str(SOCKETS),
            "--users", str(USERS), "--rate", "100", "--duration", "14", "--via", "socket",
            "--reconnects", "8", "--json", str(report), "--quiet",
            env=clean_environment(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)

        async def connected(instance: Instance) -> float:
            return await gauge(http, instance, "taskmaster_sockets_connected")

        def running(check: Any) -> Any:
            async def still_running() -> bool:
                assert loadtest.returncode is None, "the load test ended early"
                return bool(await check())
            return still_running

        async def half_on_b() -> bool:
            return await connected(b) >= SOCKETS / 2

        async def writes_reach_b() -> bool:  # events flowing to b's sockets
            return await gauge(http, b, "taskmaster_events_delivered_total") >= 300

        await eventually(running(half_on_b), 90, "b holding half the sockets")
        await eventually(running(writes_reach_b), 60, "writes reaching b's sockets")
        assert b.proc is not None
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)

        async def all_on_a() -> bool:
            # The survivor keeps answering while it takes them all.
            async with http.get(a.url + "/api/health",
                                timeout=aiohttp.ClientTimeout(total=5)) as response:
                assert response.status == 200
            return await connected(a) >= SOCKETS

        await eventually(running(all_on_a), 60, "every socket reconnected to a")
        output, _ = await asyncio.wait_for(loadtest.communicate(), 120)
        result = json.loads(report.read_text())
        assert loadtest.returncode == 0, output.decode()[-3000:]
        assert result["correctness"]["ok"], result["correctness"]
        assert result["reconnects"] >= SOCKETS / 2
        assert result["correctness"]["failures"]["lost_connection"] == 0
    finally:
        a.stop()
        b.stop()
