"""Soak (issue 7): two instances sharing one SQLite file and a private Redis, thousands of
sockets, steady writes, Redis restarted on a schedule; `taskmaster loadtest` checks every
delivery, this script samples both servers' RSS and reports the growth after warm-up.

    .venv/bin/python bench/soak.py                      # 30 min, 5,000 sockets, 200 writes/s
    .venv/bin/python bench/soak.py --minutes 3 --sockets 500 --redis-every 60   # a quick look

Traffic goes to 127.0.0.1 only; everything started here is stopped by pid at the end.
Writes a JSON report (bench/results/soak-<time>.json) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready within {timeout} s")


class Redis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is required")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--redis-every", type=float, default=300, help="seconds")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    redis = Redis(free_port(), work)
    redis.start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TASKMASTER_") and k not in {"MONGODB_URI", "REDIS_URL", "PORT"}}
    env.update({
        "TASKMASTER_STORE_URL": f"sqlite:///{work}/soak.db",
        "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0?prefix=soak",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "TASKMASTER_AUTH_PASSWORD_TIME_COST": "1", "TASKMASTER_AUTH_PASSWORD_MEMORY_KIB": "1024",
        # one address opens every socket and registers every user: no limits in the way
        "TASKMASTER_RATE_LIMIT_ENABLED": "false", "TASKMASTER_SOCKETS_MAX_PER_USER": "0",
        "TASKMASTER_SERVER_LOG_LEVEL": "WARNING",
    })
    servers: list[subprocess.Popen[bytes]] = []
    urls = []
    samples: list[dict[str, Any]] = []
    restarts: list[dict[str, float]] = []
    stop = threading.Event()
    started = time.monotonic()
    try:
        for name in ("a", "b"):
            port = free_port()
            log = (work / f"{name}.log").open("wb")
            servers.append(subprocess.Popen(
                [str(BIN / "taskmaster"), "serve", "--port", str(port)], cwd=work,
                env={**env, "TASKMASTER_SERVER_INSTANCE_ID": name},
                stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_ready(url)

        def sample() -> None:
            while not stop.wait(10):
                samples.append({"t": round(time.monotonic() - started, 1),
                                "rss_kib": [rss_kib(p.pid) for p in servers]})

        def restart_redis() -> None:
            while not stop.wait(args.redis_every):
                down = time.monotonic()
                redis.stop()
                time.sleep(1.0)  # a real outage, not a blip
                redis.start()
                restarts.append({"t": round(down - started, 1),
                                 "down_s": round(time.monotonic() - down, 2)})
                print(f"soak: Redis restarted at {down - started:.0f} s", flush=True)

        threads = [threading.Thread(target=sample, daemon=True),
                   threading.Thread(target=restart_redis, daemon=True)]
        for thread in threads:
            thread.start()
        report_path = work / "loadtest.json"
        command = [str(BIN / "taskmaster"), "loadtest", "--url", *urls, "--register",
                   "--sockets", str(args.sockets), "--users", str(args.users),
                   "--rate", str(args.rate), "--duration", str(args.minutes * 60),
                   "--via", "both", "--json", str(report_path), "--quiet",
                   *[arg for p in servers for arg in ("--server-pid", str(p.pid))]]
        print("soak:", " ".join(command), flush=True)
        code = subprocess.call(command, env=env)
        stop.set()
        for thread in threads:
            thread.join(15)
        loadtest = json.loads(report_path.read_text()) if report_path.exists() else {}
    finally:
        stop.set()
        for proc in servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in servers:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.stop()

    # Growth over the write phase only (the final check reads every scope's whole state,
    # which raises the servers' high-water mark and says nothing about leaks).
    writing = [t for t in loadtest.get("timeline", []) if t.get("phase") == "writes"]
    if writing:
        begin = writing[0]["t"] + args.warmup_minutes * 60
        warm = [t for t in writing if t["t"] >= begin]
    else:
        warm = []
    growth = []
    if len(warm) >= 2:
        for index in range(len(servers)):
            first = warm[0]["servers"][index]["rss_mib"]
            last = warm[-1]["servers"][index]["rss_mib"]
            peak = max(t["servers"][index]["rss_mib"] for t in warm)
            growth.append({"after_warmup_mib": first, "end_of_writes_mib": last,
                           "peak_mib": peak,
                           "growth": round(last / first - 1, 4) if first else None})
    summary = {
        "command": " ".join(sys.argv), "minutes": args.minutes, "sockets": args.sockets,
        "users": args.users, "rate": args.rate, "redis_restarts": restarts,
        "loadtest_exit": code, "correctness": loadtest.get("correctness"),
        "latency_ms": loadtest.get("latency_ms"), "writes": loadtest.get("writes"),
        "deliveries": loadtest.get("deliveries"), "servers": loadtest.get("servers"),
        "rss_growth_after_warmup": growth, "rss_samples": samples,
    }
    out = args.output or ROOT / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_samples"}, indent=1)[:4000])
    print(f"soak: report {out}; server logs in {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
