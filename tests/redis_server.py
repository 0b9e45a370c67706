"""Real Redis for the tests: the machine's server (127.0.0.1:6379, or $REDIS_URL) with a
unique channel prefix per test, or a private `redis-server` on a free port that a
test may stop and start again (fault tests)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import hiredis
import redis

from waiting import poll_until

CI = os.environ.get("CI", "").lower() == "true"
SHARED = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def shared_redis_url(**options: str) -> str:
    """The shared server, checked reachable, with a prefix no other test uses."""
    try:
        redis.Redis.from_url(SHARED, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise AssertionError(
            f"Redis at {SHARED} is required for these tests (CI starts it): {exc}") from exc
    query = "&".join(f"{k}={v}" for k, v in {"prefix": f"t{uuid.uuid4().hex[:10]}",
                                             **options}.items())
    return f"{SHARED}?{query}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A private redis-server that a test can stop and start again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required for the fault tests"
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        proc = self.proc

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        poll_until(answers, 10, "redis-server starting",
                   lambda: "it exited" if proc.poll() is not None else None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class FakeRedisServer:
    """A stand-in for Redis on a free port, for what a real server will not do on cue
    (hold its replies, split them, stay silent): each connection's commands are parsed
    with hiredis and handed to `on_command`; `after_read` runs after each read."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.on_connect(writer)
        parser = hiredis.Reader()
        while data := await reader.read(4096):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.on_command(command, writer)
            await self.after_read(writer)

    def on_connect(self, writer: asyncio.StreamWriter) -> None:
        pass

    def on_command(self, command: Any, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def after_read(self, writer: asyncio.StreamWriter) -> None:
        pass

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
