"""Real Redis for the tests: the machine's server (127.0.0.1:6379, or $REDIS_URL) with a
unique channel prefix per test, or a private `redis-server` on a free port that a
test may stop and start again (fault tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

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
