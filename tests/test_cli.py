"""`taskmaster serve` as a real process: the README's first command, on the defaults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from waiting import poll_until

TASKMASTER = str(Path(sys.executable).parent / "taskmaster")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(port: int, method: str, path: str, body: Any = None,
         token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@contextmanager
def server(cwd: Path, env: dict[str, str] | None = None) -> Iterator[tuple[int, list[str]]]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("TASKMASTER_") and k not in {"PORT", "JWT_SECRET", "NODE_ENV",
                                                             "MONGODB_URI", "REDIS_URL"}}
    proc = subprocess.Popen(
        [TASKMASTER, "serve", "--port", str(port)], cwd=cwd,
        env={**clean, "TASKMASTER_AUTH_PASSWORD_TIME_COST": "1",
             "TASKMASTER_AUTH_PASSWORD_MEMORY_KIB": "1024", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    def healthy() -> bool:
        try:
            return call(port, "GET", "/api/health")[0] == 200
        except OSError:
            return False

    def exited() -> str | None:
        if proc.poll() is None:
            return None
        return proc.stdout.read() if proc.stdout else "exited"

    try:
        poll_until(healthy, 20, "the server becoming healthy", exited)
        yield port, output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        output.extend(out.splitlines())


def test_serve_on_the_defaults_keeps_its_secret_across_restarts(tmp_path: Path) -> None:
    with server(tmp_path) as (port, _):
        status, body = call(port, "POST", "/api/auth/register",
                            {"email": "cli@example.com", "password": "long enough",
                             "name": "Cli"})
        assert status == 201
        token = body["token"]
        status, body = call(port, "POST", "/api/tasks", {"title": "survives restarts"}, token)
        assert status == 201
        assert call(port, "GET", "/api/ready")[0] == 200
    assert (tmp_path / "data" / "taskmaster.db").is_file()
    assert (tmp_path / "data" / "jwt_secret").is_file()
    with server(tmp_path) as (port, output):
        status, body = call(port, "GET", "/api/tasks", token=token)
        assert status == 200
        assert [t["title"] for t in body["tasks"]] == ["survives restarts"]
    assert not any("generated a JWT secret" in line for line in output)


def test_the_first_start_says_it_generated_a_secret(tmp_path: Path) -> None:
    with server(tmp_path) as (_, output):
        pass
    assert any("generated a JWT secret" in line for line in output), output


def test_log_lines_are_json_with_the_instance_id(tmp_path: Path) -> None:
    with server(tmp_path, {"TASKMASTER_SERVER_INSTANCE_ID": "blue-7"}) as (port, output):
        call(port, "GET", "/api/health")
    lines = [json.loads(line) for line in output if line.startswith("{")]
    assert lines, output
    assert all(line["instance"] == "blue-7" for line in lines)
    assert any("starting instance blue-7" in line["msg"] for line in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


@pytest.mark.parametrize(("env", "key"), [
    ({"PORT": "abc"}, "PORT"),
    ({"NODE_ENV": "production"}, "JWT_SECRET"),
    ({"JWT_EXPIRE": "forever"}, "JWT_EXPIRE"),
])
def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path, env: dict[str, str],
                                                    key: str) -> None:
    result = subprocess.run([TASKMASTER, "serve"], cwd=tmp_path, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], result.stderr


def test_a_store_that_cannot_open_stops_start_up_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    result = subprocess.run(
        [TASKMASTER, "serve", "--port", str(free_port())], cwd=tmp_path,
        env={**os.environ, "TASKMASTER_STORE_URL": "sqlite:///data/tm.db"},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("taskmaster: cannot start:")
    assert "Traceback" not in result.stderr


def test_every_package_ships_in_a_normal_install() -> None:
    """A wheel (what a Procfile platform builds) must hold every sub-package: a listed
    `packages = [...]` once left realtime/broker out, hidden by editable installs."""
    import tomllib

    from setuptools import find_packages

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(where=str(root), include=include))
    on_disk = {str(p.parent.relative_to(root)).replace("/", ".")
               for top in ("realtime", "handlers", "store")
               for p in (root / top).rglob("__init__.py")}
    assert on_disk <= shipped, on_disk - shipped
    assert {"realtime.broker", "realtime.loadtest"} <= shipped
