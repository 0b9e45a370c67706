"""deploy/nginx.conf, for real: three instances behind nginx, sockets and REST through it."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import TEST_SECRET
from processes import Instance
from redis_server import free_port, shared_redis_url
from socket_clients import Tab
from waiting import poll_until

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[str]:
    """Three instances on one store and Redis, and nginx in front: yields nginx's URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is required (scripts/test installs it)"
    env = {"TASKMASTER_STORE_URL": f"sqlite:///{tmp_path}/shared.db",
           "REDIS_URL": shared_redis_url(), "JWT_SECRET": TEST_SECRET}
    instances = [Instance(tmp_path, env, name=f"n{i}") for i in range(3)]
    listen = free_port()
    conf = DEPLOY.read_text()
    for old, instance in zip((8001, 8002, 8003), instances, strict=True):
        conf = conf.replace(f"127.0.0.1:{old}", f"127.0.0.1:{instance.port}")
    conf = re.sub(r"listen 8080;", f"listen 127.0.0.1:{listen};", conf)
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    conf = conf.replace("http {", f"http {{\n    access_log off;\n"
                                  f"    client_body_temp_path {tmp_path}/body;\n"
                                  f"    proxy_temp_path {tmp_path}/proxy;", 1)
    (tmp_path / "nginx.conf").write_text(conf)
    proc = None
    try:
        for instance in instances:
            instance.start(wait=False)
        for instance in instances:
            instance.wait_until("/api/ready", 200)
        proc = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
             "-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{listen}"
        nginx_proc = proc

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/api/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        poll_until(ready, 10, "nginx coming up", lambda: None if nginx_proc.poll() is None
                   else (tmp_path / "error.log").read_text())
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for instance in instances:
            instance.stop()


async def test_sockets_and_rest_through_nginx_stay_in_step(balanced: str,
                                                           closing: list[Any]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{balanced}/api/auth/register", json={
                "email": "nginx@example.com", "password": "correct horse",
                "name": "N"}) as response:
            assert response.status == 201
            body = await response.json()
        token, scope = body["token"], f"user:{body['user']['id']}"
        tabs = [await Tab(balanced + "/", token).connect() for _ in range(3)]
        closing.extend(tabs)
        headers = {"Authorization": f"Bearer {token}"}
        for n in range(9):
            async with http.post(f"{balanced}/api/tasks", json={"title": f"t{n}"},
                                 headers=headers) as response:
                assert response.status == 201
        served_by = set()
        for _ in range(9):  # the balancer really spreads requests over the instances
            async with http.get(f"{balanced}/api/health") as response:
                served_by.add((await response.json())["instance"])
        ack = await tabs[0].call("task:create", {"title": "via a socket"})
        assert ack["ok"]
        for tab in tabs:
            await tab.wait_for(lambda events, t=tab: t.replica.cursors.get(scope) == 10,
                               timeout=10)
            assert tab.replica.violations == []
            assert len(tab.replica.live_tasks()) == 10
        assert len(served_by) >= 2, served_by
