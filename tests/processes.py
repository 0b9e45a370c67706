"""Real `taskmaster serve` processes for tests: start, wait until ready, stop, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from realtime.loadtest.server_settings import LIMITS_FAR_ABOVE_LOAD

from redis_server import free_port
from waiting import poll_until

TASKMASTER = str(Path(sys.executable).parent / "taskmaster")
INHERITED_SETTINGS = {"PORT", "JWT_SECRET", "NODE_ENV", "MONGODB_URI", "REDIS_URL",
                      "JWT_EXPIRE", "FRONTEND_URL", "RATE_LIMIT_WINDOW_MS",
                      "RATE_LIMIT_MAX_REQUESTS"}


def clean_environment() -> dict[str, str]:
    """The test's environment without any TaskMaster setting of the developer's."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TASKMASTER_") and k not in INHERITED_SETTINGS}


class Instance:
    def __init__(self, cwd: Path, env: dict[str, str] | None = None,
                 name: str = "instance") -> None:
        self.cwd = cwd
        self.port = free_port()
        self.name = name
        self.env = {**clean_environment(), "TASKMASTER_AUTH_PASSWORD_TIME_COST": "1",
                    "TASKMASTER_AUTH_PASSWORD_MEMORY_KIB": "1024",
                    "TASKMASTER_SERVER_INSTANCE_ID": name,
                    # every limit runs, far above what a test does (the limits' own tests
                    # set theirs)
                    **LIMITS_FAR_ABOVE_LOAD,
                    # stop() sends SIGTERM: drain what sockets are left quickly
                    "TASKMASTER_DRAIN_SPREAD": "0.2s", **(env or {})}
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Instance:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [TASKMASTER, "serve", "--port", str(self.port)], cwd=self.cwd,
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_until("/api/ready", 200)
        return self

    def status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_until(self, path: str, status: int, timeout: float = 20) -> None:
        def exited() -> str | None:
            running = self.proc is not None and self.proc.poll() is None
            return None if running else f"it exited:\n{self.output()}"

        poll_until(lambda: self.status(path) == status, timeout,
                   f"{self.name}: {path} answering {status}", exited)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (what a platform sends), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
