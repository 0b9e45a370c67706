#!/usr/bin/env python3
"""Socket.IO live-delivery benchmark for issue 3 ("Numbers to reach"), one instance, embedded store.

What it measures (the defaults reproduce the issue):

(a) idle: server RSS before any socket, then after --idle-sockets (1000, then 5000) sockets
    have connected (each socket its own user, so its own room) and --settle seconds have
    passed; kB per socket = (RSS - RSS before any socket) / N; also the marginal kB/socket
    between the two steps, and the connect rate with --connect-concurrency (100)
    handshakes in flight.
(b) bigroom: one user, --bigroom-sockets (1000 as in the issue, then 5000 as in the peer
    benchmark; a fresh server for each) sockets in its scope; a warm burst, then
    --bursts (3) bursts of --burst-writes (20) creates sent through REST all at once;
    deliveries/s = deliveries / (last delivery - first write sent); the median of the
    bursts; server CPU seconds (utime+stime from /proc/<pid>/stat) per delivery; and
    the slowest answer to an unrelated HTTP request (a 404, no store) sent every 10 ms
    during the burst: how long fan-out keeps the server's event loop from anything else.
(c) latency: --latency-users (1000) users x --latency-sockets-per-user (1) sockets; writes
    offered open-loop at --rate (500/s) for --duration (10 s) after --warmup (2 s) through
    REST over --http-connections (16) keep-alive connections, a random user each, creates
    and (--update-ratio) updates of tasks created earlier; latency = receive time at the
    socket - the time taken right before the write was sent (`time.perf_counter()` in this
    process, so one clock; the write carries an X-Mutation-Id that comes back as `origin`).

Correctness is checked in every scenario: each socket must receive exactly the seqs that
the REST answers reported for its scope, each once, in increasing order (reported as
missing / duplicate / out-of-order / unexpected per scenario; expected all zero).

The client side is this process (uvloop): a minimal Engine.IO v4 / Socket.IO v5 client over
aiohttp's WebSocket (open `0{...}` -> `40{"token":...}` -> `40{"sid":...}`; answers pings `2`
with `3`; decodes `42[...]` events), no permessage-deflate. The server is a separate
process: unless --url is given, a fresh `taskmaster serve` per scenario and round on a free
127.0.0.1 port, with a temporary data directory (users are registered once, through REST,
and their tokens reused across the restarts). Bench set-up makes registration cheap:
TASKMASTER_AUTH_PASSWORD_TIME_COST=1 and TASKMASTER_AUTH_PASSWORD_MEMORY_KIB=1024 (argon2id
is not what is measured here). Every server this starts is stopped by its pid. All traffic
goes to 127.0.0.1; every loop is bounded in count and time.

    .venv/bin/python bench/socket_bench.py                   # the issue's setup, 1 round
    .venv/bin/python bench/socket_bench.py --rounds 3        # medians of 3 rounds
    .venv/bin/python bench/socket_bench.py --idle-sockets 200 --bigroom-sockets 200 \
        --latency-users 100 --duration 3 --rounds 1          # a quick smoke run
    .venv/bin/python bench/socket_bench.py --scenarios bigroom --bigroom-sockets 1000,5000

Results: a table on stdout and JSON in bench/results/sockets-<timestamp>.json.
Experiments (not defaults): --profile DIR records the server with py-spy during (b) and (c);
--server-gc-threshold N and --server-switch-interval S start the same server with the
interpreter tuned from outside (gc.set_threshold + gc.freeze; sys.setswitchinterval).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from realtime.loadtest.client import SioClient as LoadClient
from realtime.loadtest.client import close_all, connect_many, ws_url_of
from realtime.loadtest.procstat import CLK_TCK, cpu_seconds, rss_kib
from realtime.loadtest.server_settings import LIMITS_FAR_ABOVE_LOAD
from realtime.loadtest.stats import latency_summary, percentile

try:
    import uvloop
except ImportError:  # pragma: no cover - the project depends on it off Windows
    uvloop = None

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("idle", "bigroom", "latency")
PASSWORD = "bench-password-123"


# -- /proc readings ----------------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


class Usage:
    """CPU used by the server, by this process and by the whole machine over a window."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.t0 = time.perf_counter()
        self.server0 = cpu_seconds(server_pid) if server_pid else None
        self.client0 = cpu_seconds()
        self.machine0 = machine_busy()[0]

    def stop(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t0
        out: dict[str, Any] = {"elapsed_s": round(elapsed, 3)}
        if self.pid and self.server0 is not None:
            server1 = cpu_seconds(self.pid)
            if server1 is not None:
                out["server_cpu_s"] = round(server1 - self.server0, 3)
        client1 = cpu_seconds()
        if client1 is not None and self.client0 is not None:
            out["client_cpu_s"] = round(client1 - self.client0, 3)
        machine = machine_busy()[0] - self.machine0
        out["machine_busy_cores"] = round(machine / elapsed, 2) if elapsed > 0 else None
        return out


def git_facts() -> dict[str, Any]:
    def git(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        return ""

    return {"git_commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_server_files": git("status", "--porcelain", "--", "realtime",
                                            "handlers", "store").splitlines()}


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as handle:
        loadavg = handle.read().split()[:3]
    return {"cpu_model": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "uvloop": getattr(uvloop, "__version__", None), "loadavg_at_start": loadavg,
            **git_facts()}


# -- statistics --------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class LoopLag:
    """How late this process's event loop wakes a 5 ms sleep (the client's own saturation)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for _ in range(100_000):  # bounded: ~10 minutes at most
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.samples.append(time.perf_counter() - before - 0.005)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lag = sorted(s * 1000 for s in self.samples)
        return {"p99_ms": round(percentile(lag, 99) or 0.0, 2),
                "max_ms": round(lag[-1], 2) if lag else None}


# -- optional profile of the server (py-spy) ---------------------------------------------


class Profiler:
    """`py-spy record` on the server for one phase; collapsed stacks + a self-time table."""

    def __init__(self, out_dir: Path | None, name: str, pid: int | None) -> None:
        self.path = out_dir / f"{name}.folded" if out_dir and pid else None
        self.pid = pid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.path is None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [spy, "record", "-p", str(self.pid), "-r", "250", "--nonblocking", "-f", "raw",
             "-o", str(self.path), "-d", "600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach

    def stop(self) -> dict[str, Any] | None:
        if self.process is None or self.path is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return summarize_profile(self.path)


def summarize_profile(path: Path, top: int = 20) -> dict[str, Any] | None:
    if not path.exists():
        return None
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack.split(";")]
        total += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def table(counter: Counter[str]) -> list[tuple[float, str]]:
        return [(round(100 * n / total, 1), name) for name, n in counter.most_common(top)]

    return {"file": str(path), "samples": total, "self_pct": table(leaf),
            "inclusive_pct": table(inclusive)} if total else None


# -- the server under test ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(gc_threshold: int = 0, switch_interval: float = 0.0) -> list[str]:
    if gc_threshold or switch_interval:
        # Experiments only (--server-gc-threshold, --server-switch-interval): the same
        # server, with the interpreter tuned from outside before the app is imported (the
        # GC one is the peer benchmark's `py-gc` variant).
        lines = ["import gc, sys"]
        if gc_threshold:
            lines += [f"gc.set_threshold({gc_threshold}, 50, 100)", "gc.freeze()"]
        if switch_interval:
            lines.append(f"sys.setswitchinterval({switch_interval!r})")
        lines += ["from realtime.cli import main", "sys.exit(main(sys.argv[1:]))"]
        return [sys.executable, "-c", "\n".join(lines), "serve"]
    script = Path(sys.executable).with_name("taskmaster")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "realtime.cli", "serve"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path | None
    pid: int | None


def server_env(data_dir: Path, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMASTER_", "JWT_"))}
    for name in ("MONGODB_URI", "REDIS_URL", "NODE_ENV", "PORT", "HOST"):
        env.pop(name, None)
    env.update({
        "TASKMASTER_CONFIG": str(ROOT / "config.toml"),
        "TASKMASTER_STORE_URL": f"sqlite:///{data_dir / 'taskmaster.db'}",
        "JWT_SECRET": secret,
        # Cheap argon2id so that registering thousands of bench users takes seconds;
        # password hashing is not what this benchmark measures.
        "TASKMASTER_AUTH_PASSWORD_TIME_COST": "1",
        "TASKMASTER_AUTH_PASSWORD_MEMORY_KIB": "1024",
        # Every limit on but far above the load (thousands of sockets from 127.0.0.1).
        **LIMITS_FAR_ABOVE_LOAD,
        "TASKMASTER_SERVER_LOG_LEVEL": "WARNING",
    })
    return env


def start_server(env: dict[str, str], data_dir: Path, gc_threshold: int = 0,
                 switch_interval: float = 0.0) -> Server:
    port = free_port()
    log_path = data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*server_command(gc_threshold, switch_interval), "--port", str(port),
             "--host", "127.0.0.1"],
            env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path, process.pid)


def stop_server(server: Server) -> int | None:
    process = server.process
    if process is None or process.poll() is not None:
        return process.returncode if process else None
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(timeout=5)


async def wait_ready(http: aiohttp.ClientSession, server: Server, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            break
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(server.url + "/api/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    tail = server.log_path.read_text()[-2000:] if server.log_path else ""
    raise SystemExit(f"the server did not become ready in {within:.0f} s\n{tail}")


# -- users -------------------------------------------------------------------------------


@dataclass
class User:
    email: str
    token: str
    user_id: str

    @property
    def scope(self) -> str:
        return f"user:{self.user_id}"


async def register_users(http: aiohttp.ClientSession, url: str, prefix: str, count: int,
                         concurrency: int) -> list[User]:
    users: list[User | None] = [None] * count
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            email = f"{prefix}-{index}@example.com"
            body = {"email": email, "password": PASSWORD, "name": f"Bench {index}"}
            answer: Any = None
            for _attempt in range(3):
                async with http.post(url + "/api/auth/register", json=body) as response:
                    if response.status == 409:  # already there (a kept server): log in
                        async with http.post(url + "/api/auth/login", json={
                                "email": email, "password": PASSWORD}) as login:
                            answer = await login.json(loads=orjson.loads)
                            if login.status == 200:
                                break
                    answer = await response.json(loads=orjson.loads)
                    if response.status == 201:
                        break
            else:
                raise SystemExit(f"could not register {email}: {answer}")
            users[index] = User(email, answer["token"], answer["user"]["id"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [user for user in users if user is not None]


# -- the Socket.IO client ----------------------------------------------------------------


class Recorder:
    """Where every socket reports what it receives."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}  # mutation id -> perf_counter at send
        self.latencies: list[float] = []
        self.delivered = 0  # in the current window
        self.total = 0  # since the scenario began
        self.first_delivery: float | None = None
        self.last_delivery: float | None = None
        self.other_events: Counter[str] = Counter()
        self.measure_prefix: str | None = None  # only origins with this prefix give latencies
        self.target = 0  # `reached` is set once `total` gets there
        self.reached = asyncio.Event()

    def reset_window(self) -> None:
        self.latencies = []
        self.delivered = 0
        self.first_delivery = None
        self.last_delivery = None

    def event(self, client: SioClient, name: str, envelope: Any, now: float) -> None:
        if name not in ("task:created", "task:updated", "task:deleted") or not isinstance(
                envelope, dict):
            self.other_events[name] += 1
            return
        seq = envelope.get("seq")
        if envelope.get("scope") != client.scope or envelope.get("type") != name:
            client.wrong += 1
        if isinstance(seq, int):
            client.seqs.append(seq)
        self.delivered += 1
        self.total += 1
        if self.total >= self.target:
            self.reached.set()
        if self.first_delivery is None:
            self.first_delivery = now
        self.last_delivery = now
        origin = envelope.get("origin")
        sent = self.sent_at.get(origin) if isinstance(origin, str) else None
        if sent is not None and (self.measure_prefix is None
                                 or origin.startswith(self.measure_prefix)):
            self.latencies.append(now - sent)


class SioClient(LoadClient):
    """One bench socket: realtime.loadtest's client, reporting to a Recorder."""

    __slots__ = ("index", "recorder", "scope", "seqs", "wrong")

    def __init__(self, index: int, user: User, recorder: Recorder) -> None:
        super().__init__(user.token)
        self.index = index
        self.scope = user.scope
        self.recorder = recorder
        self.seqs: list[int] = []
        self.wrong = 0

    def on_event(self, name: str, data: Any, now: float) -> None:
        self.recorder.event(self, name, data, now)

    def on_malformed(self, raw: str) -> None:
        self.wrong += 1


# -- correctness -------------------------------------------------------------------------


def check_delivery(clients: list[SioClient], expected: dict[str, list[int]],
                   unacked: int) -> dict[str, Any]:
    """Every socket got exactly its scope's committed seqs, once each, in increasing order."""
    totals = Counter()
    bad_sockets = 0
    examples: list[str] = []
    for client in clients:
        got = client.seqs
        want = sorted(expected.get(client.scope, ()))
        if got == want and client.wrong == 0:
            continue
        bad_sockets += 1
        got_set, want_set = set(got), set(want)
        counts = {
            "missing": len(want_set - got_set),
            "duplicate": len(got) - len(got_set),
            "out_of_order": sum(1 for a, b in itertools.pairwise(got) if b <= a),
            "unexpected": len(got_set - want_set),
            "malformed_or_wrong_scope": client.wrong,
        }
        totals.update(counts)
        if len(examples) < 5:
            examples.append(f"socket {client.index} ({client.scope}): "
                            + ", ".join(f"{k}={v}" for k, v in counts.items() if v))
    gaps = 0
    for seqs in expected.values():
        ordered = sorted(seqs)
        gaps += sum(1 for a, b in itertools.pairwise(ordered) if b != a + 1)
    return {
        "sockets_checked": len(clients),
        "deliveries_checked": sum(len(client.seqs) for client in clients),
        "sockets_with_violations": bad_sockets,
        "violations": {k: totals.get(k, 0) for k in (
            "missing", "duplicate", "out_of_order", "unexpected", "malformed_or_wrong_scope")},
        "seq_gaps_in_write_answers": gaps,
        "writes_without_answer": unacked,
        "disconnected_early": sum(1 for c in clients if c.closed not in (None, "bench")),
        "examples": examples,
        "ok": bad_sockets == 0 and unacked == 0,
    }


# -- writes through REST -----------------------------------------------------------------


@dataclass
class Writer:
    http: aiohttp.ClientSession
    url: str
    recorder: Recorder
    expected: dict[str, list[int]] = field(default_factory=dict)
    tasks_of: dict[str, list[str]] = field(default_factory=dict)
    ack_latency: list[float] = field(default_factory=list)  # measured writes only
    measure_prefix: str | None = None
    acked_measured: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    unacked: int = 0
    last_ack: float = 0.0

    async def write(self, user: User, mutation_id: str, update_of: str | None,
                    within: float) -> None:
        headers = {"Authorization": f"Bearer {user.token}", "X-Mutation-Id": mutation_id,
                   "Content-Type": "application/json"}
        body = orjson.dumps({"title": f"bench {mutation_id}"})
        if update_of is None:
            method, path = "POST", "/api/tasks"
        else:
            method, path = "PATCH", f"/api/tasks/{update_of}"
        sent = time.perf_counter()
        self.recorder.sent_at[mutation_id] = sent
        try:
            async with asyncio.timeout(within), self.http.request(
                    method, self.url + path, data=body, headers=headers) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            self.errors[type(exc).__name__] += 1
            self.unacked += 1
            return
        now = time.perf_counter()
        if status not in (200, 201):
            self.errors[f"http {status}"] += 1
            return
        task = orjson.loads(raw)["task"]
        self.ok += 1
        self.last_ack = max(self.last_ack, now)
        if self.measure_prefix is None or mutation_id.startswith(self.measure_prefix):
            self.ack_latency.append(now - sent)
            self.acked_measured += 1
        self.expected.setdefault(task["scope"], []).append(task["seq"])
        if update_of is None:
            self.tasks_of.setdefault(user.user_id, []).append(task["id"])


async def wait_for_deliveries(recorder: Recorder, target: int, within: float,
                              quiet: float = 0.3) -> bool:
    """Wait until `target` deliveries arrived in the scenario (then `quiet` more seconds)."""
    recorder.target = target
    recorder.reached.clear()
    if recorder.total >= target:
        recorder.reached.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.reached.wait(), within)
    reached = recorder.total >= target
    await asyncio.sleep(quiet)
    return reached


class Probe:
    """Times a request that touches no store (an unknown path: the 404 comes straight from
    the event loop) every 10 ms: how long the server's loop keeps HTTP waiting."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url + "/api/__socket_bench_probe"
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for _ in range(6000):  # bounded: stopped long before this
            before = time.perf_counter()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self.session.get(self.url) as response:
                    await response.read()
            self.samples.append(time.perf_counter() - before)
            await asyncio.sleep(0.01)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        summary = latency_summary(self.samples)
        return {k: summary[k] for k in ("count", "p50", "max")}


# -- scenarios ---------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    url: str
    server_pid: int | None
    ws_session: aiohttp.ClientSession
    http: aiohttp.ClientSession


async def scenario_idle(ctx: Context, users: list[User]) -> dict[str, Any]:
    args = ctx.args
    recorder = Recorder()
    clients: list[SioClient] = []
    steps: list[dict[str, Any]] = []
    await asyncio.sleep(args.settle)
    base = rss_kib(ctx.server_pid) if ctx.server_pid else None
    client_base = rss_kib("self")
    previous_n, previous_rss = 0, base
    try:
        for n in args.idle_sockets:
            new = [SioClient(i, users[i % len(users)], recorder)
                   for i in range(len(clients), n)]
            clients.extend(new)
            usage = Usage(ctx.server_pid)
            connect = await connect_many(ctx.ws_session, ws_url_of(ctx.url), new,
                                         args.connect_concurrency, args.connect_timeout)
            connect["usage"] = usage.stop()
            await asyncio.sleep(args.settle)
            rss = rss_kib(ctx.server_pid) if ctx.server_pid else None
            connected = sum(1 for c in clients if c.reader is not None and c.closed is None)
            step: dict[str, Any] = {"sockets": n, "connected": connected, "connect": connect,
                                    "server_rss_kib": rss, "server_rss_before_kib": base}
            if rss is not None and base is not None and connected:
                step["kib_per_socket"] = round((rss - base) / connected, 2)
                if previous_n and previous_rss is not None and n > previous_n:
                    step["marginal_kib_per_socket"] = round(
                        (rss - previous_rss) / (n - previous_n), 2)
            client_rss = rss_kib("self")
            if client_rss is not None and client_base is not None and connected:
                step["client_kib_per_socket"] = round((client_rss - client_base) / connected, 2)
            if connect["usage"].get("server_cpu_s") is not None and connect["connected"]:
                step["server_cpu_ms_per_connect"] = round(
                    connect["usage"]["server_cpu_s"] * 1000 / connect["connected"], 3)
            steps.append(step)
            print(f"  idle {n}: {connected} connected, {connect['connects_per_s']}/s, "
                  f"{step.get('kib_per_socket')} kB/socket", flush=True)
            previous_n, previous_rss = n, rss
            if connect["failed"]:
                print(f"  stopping the idle ladder: {connect['failed']} sockets failed "
                      f"({connect['errors']})", flush=True)
                break
    finally:
        await close_all(clients)
    return {"steps": steps, "server_rss_before_kib": base,
            "other_events": dict(recorder.other_events)}


async def scenario_bigroom(ctx: Context, user: User, sockets: int) -> dict[str, Any]:
    args = ctx.args
    recorder = Recorder()
    writer = Writer(ctx.http, ctx.url, recorder)
    clients = [SioClient(i, user, recorder) for i in range(sockets)]
    bursts: list[dict[str, Any]] = []
    try:
        connect = await connect_many(ctx.ws_session, ws_url_of(ctx.url), clients,
                                     args.connect_concurrency, args.connect_timeout)
        live = [c for c in clients if c.reader is not None]
        print(f"  bigroom {sockets}: {len(live)} connected ({connect['connects_per_s']}/s)",
              flush=True)
        gc.collect()
        gc.freeze()  # the load generator's own objects stop costing it GC passes
        await asyncio.sleep(args.settle)
        profiler = Profiler(args.profile, f"bigroom-{sockets}-{int(time.time())}",
                            ctx.server_pid)
        profiler.start()
        for index in range(args.bursts + 1):  # burst 0 warms up, not counted
            recorder.reset_window()
            target = recorder.total + args.burst_writes * len(live)
            lag = LoopLag()
            lag.start()
            probe = Probe(ctx.ws_session, ctx.url)
            probe.start()
            usage = Usage(ctx.server_pid)
            first_sent = time.perf_counter()
            await asyncio.gather(*(
                writer.write(user, f"b{sockets}-{index}-{i}", None, args.write_timeout)
                for i in range(args.burst_writes)))
            acked = time.perf_counter()
            complete = await wait_for_deliveries(recorder, target, args.drain_timeout,
                                                 quiet=0.0)
            used = usage.stop()
            probed = await probe.stop()
            await asyncio.sleep(0.3)  # stragglers (duplicates) would land here
            last = recorder.last_delivery or time.perf_counter()
            span = last - first_sent
            burst = {
                "burst": index, "warmup": index == 0, "writes": args.burst_writes,
                "deliveries": recorder.delivered, "expected": args.burst_writes * len(live),
                "complete": complete, "seconds": round(span, 4),
                "deliveries_per_s": round(recorder.delivered / span, 1) if span > 0 else None,
                "writes_acked_s": round(acked - first_sent, 4),
                "delivery_latency_ms": latency_summary(recorder.latencies),
                "client_loop_lag": await lag.stop(), "usage": used,
                "server_http_probe_ms": probed,
            }
            if used.get("server_cpu_s") is not None and recorder.delivered:
                burst["server_cpu_us_per_delivery"] = round(
                    used["server_cpu_s"] * 1e6 / recorder.delivered, 1)
            if used.get("client_cpu_s") is not None and recorder.delivered:
                burst["client_cpu_us_per_delivery"] = round(
                    used["client_cpu_s"] * 1e6 / recorder.delivered, 1)
            bursts.append(burst)
            print(f"    burst {index}{' (warm-up)' if index == 0 else ''}: "
                  f"{recorder.delivered}/{burst['expected']} in {span:.3f} s = "
                  f"{burst['deliveries_per_s']}/s, server "
                  f"{burst.get('server_cpu_us_per_delivery')} us CPU/delivery, HTTP probe max "
                  f"{probed['max']} ms", flush=True)
            await asyncio.sleep(args.pause)
        profile = profiler.stop()
        correctness = check_delivery(live, writer.expected, writer.unacked)
    finally:
        await close_all(clients)
        gc.unfreeze()
    measured = [b for b in bursts if not b["warmup"]]
    return {
        "sockets": sockets, "connect": connect, "bursts": bursts,
        "median_deliveries_per_s": median([b["deliveries_per_s"] for b in measured]),
        "median_server_cpu_us_per_delivery": median(
            [b.get("server_cpu_us_per_delivery") for b in measured]),
        "median_client_cpu_us_per_delivery": median(
            [b.get("client_cpu_us_per_delivery") for b in measured]),
        "median_http_probe_max_ms": median(
            [b["server_http_probe_ms"]["max"] for b in measured]),
        "write_errors": dict(writer.errors), "correctness": correctness,
        "other_events": dict(recorder.other_events), "profile": profile,
    }


async def scenario_latency(ctx: Context, users: list[User]) -> dict[str, Any]:
    args = ctx.args
    recorder = Recorder()
    writer = Writer(ctx.http, ctx.url, recorder)
    per_user = args.latency_sockets_per_user
    clients = [SioClient(i, users[i // per_user], recorder)
               for i in range(len(users) * per_user)]
    rng = random.Random(args.seed)
    try:
        connect = await connect_many(ctx.ws_session, ws_url_of(ctx.url), clients,
                                     args.connect_concurrency, args.connect_timeout)
        live = [c for c in clients if c.reader is not None]
        print(f"  latency: {len(live)} sockets connected ({len(users)} users x {per_user}), "
              f"{connect['connects_per_s']}/s", flush=True)
        gc.collect()
        gc.freeze()
        await asyncio.sleep(args.settle)
        warm_n = round(args.rate * args.warmup)
        total = warm_n + round(args.rate * args.duration)
        recorder.measure_prefix = writer.measure_prefix = "m"
        inflight: set[asyncio.Task[None]] = set()
        lag = LoopLag()
        usage: Usage | None = None
        first_measured = 0.0
        behind = 0
        profiler = Profiler(args.profile, f"latency-{int(time.time())}", ctx.server_pid)
        profiler.start()  # before the clock starts: it blocks for 0.5 s while attaching
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                behind += 1
            if i == warm_n:
                recorder.reset_window()
                lag.start()
                usage = Usage(ctx.server_pid)
                first_measured = time.perf_counter()
            user = rng.choice(users)
            own = writer.tasks_of.get(user.user_id)
            update_of = rng.choice(own) if own and rng.random() < args.update_ratio else None
            prefix = "w" if i < warm_n else "m"
            task = asyncio.create_task(writer.write(user, f"{prefix}{i}", update_of,
                                                    args.write_timeout))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            if len(inflight) > args.max_inflight:
                writer.errors["client gave up: too many writes in flight"] += 1
                break
        last_sent = time.perf_counter()
        if inflight:
            await asyncio.wait(set(inflight), timeout=args.write_timeout + 1)
        expected_total = sum(len(v) for v in writer.expected.values()) * per_user
        complete = await wait_for_deliveries(recorder, expected_total, args.drain_timeout)
        used = usage.stop() if usage else {}
        profile = profiler.stop()
        loop_lag = await lag.stop()
        measured_writes = total - warm_n
        correctness = check_delivery(live, writer.expected, writer.unacked)
    finally:
        await close_all(clients)
        gc.unfreeze()
    window = (writer.last_ack or last_sent) - first_measured
    result: dict[str, Any] = {
        "sockets": len(live), "users": len(users), "sockets_per_user": per_user,
        "connect": connect, "offered_rate": args.rate, "duration_s": args.duration,
        "writes_sent": measured_writes,
        "achieved_write_rate": round(measured_writes / (last_sent - first_measured), 1)
        if last_sent > first_measured else None,
        "writes_acked": writer.acked_measured,
        "acked_write_rate": round(writer.acked_measured / window, 1) if window > 0 else None,
        "scheduler_behind_50ms": behind,
        "write_errors": dict(writer.errors),
        "write_ack_latency_ms": latency_summary(writer.ack_latency),
        "delivery_latency_ms": latency_summary(recorder.latencies),
        "deliveries": recorder.delivered, "drained": complete,
        "client_loop_lag": loop_lag, "usage": used,
        "correctness": correctness, "other_events": dict(recorder.other_events),
        "profile": profile,
    }
    if used.get("server_cpu_s") is not None:
        result["server_cpu_cores"] = round(used["server_cpu_s"] / used["elapsed_s"], 2)
        if recorder.delivered:
            result["server_cpu_us_per_delivery"] = round(
                used["server_cpu_s"] * 1e6 / recorder.delivered, 1)
    return result


# -- orchestration -----------------------------------------------------------------------


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < need:
        print(f"warning: open-file limit {wanted} < {need}; large socket counts may fail",
              file=sys.stderr)


class Fleet:
    """Starts a fresh server per scenario (or uses --url), always stops what it started."""

    def __init__(self, args: argparse.Namespace, data_dir: Path | None) -> None:
        self.args = args
        self.data_dir = data_dir
        self.env = server_env(data_dir, secrets.token_urlsafe(40)) if data_dir else {}
        self.current: Server | None = None

    @contextlib.asynccontextmanager
    async def server(self, http: aiohttp.ClientSession) -> Any:
        if self.args.url:
            yield Server(self.args.url.rstrip("/"), None, None, self.args.server_pid)
            return
        assert self.data_dir is not None
        server = start_server(self.env, self.data_dir, self.args.server_gc_threshold,
                              self.args.server_switch_interval)
        self.current = server
        try:
            await wait_ready(http, server, self.args.start_timeout)
            yield server
        finally:
            code = stop_server(server)
            self.current = None
            if code not in (0, -signal.SIGTERM, None):
                print(f"  note: server pid {server.pid} exited with {code}", flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        host = urlsplit(args.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit("--url must point at 127.0.0.1")
    max_sockets = max([*args.idle_sockets, *args.bigroom_sockets,
                       args.latency_users * args.latency_sockets_per_user])
    raise_nofile(2 * max_sockets + 1000)
    tmp = None if args.url else Path(tempfile.mkdtemp(prefix="socket-bench-"))
    fleet = Fleet(args, tmp)
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
    out: dict[str, Any] = {"rounds": []}
    ws_connector = aiohttp.TCPConnector(limit=0, force_close=False)
    http_connector = aiohttp.TCPConnector(limit=args.http_connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=args.connect_timeout)
    try:
        async with aiohttp.ClientSession(connector=ws_connector, timeout=timeout) as ws_session, \
                aiohttp.ClientSession(connector=http_connector, timeout=timeout) as http:
            # Users, once: the tokens stay valid across server restarts (same data dir/secret).
            idle_users_n = max(args.idle_sockets) if "idle" in args.scenarios else 0
            need = max(idle_users_n, args.latency_users if "latency" in args.scenarios else 0)
            started = time.perf_counter()
            async with fleet.server(http) as server:
                users = await register_users(http, server.url, f"sb{run_id}", need,
                                             args.register_concurrency)
                room = (await register_users(http, server.url, f"sb{run_id}-room", 1, 1))[0]
            out["setup"] = {"users_registered": len(users) + 1,
                            "seconds": round(time.perf_counter() - started, 1)}
            print(f"registered {len(users) + 1} users in {out['setup']['seconds']} s",
                  flush=True)
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}/{args.rounds}", flush=True)
                result: dict[str, Any] = {"round": round_no}
                if "idle" in args.scenarios:
                    async with fleet.server(http) as server:
                        ctx = Context(args, server.url, server.pid, ws_session, http)
                        result["idle"] = await scenario_idle(ctx, users[:idle_users_n])
                if "bigroom" in args.scenarios:
                    result["bigroom"] = []
                    for size in args.bigroom_sockets:
                        async with fleet.server(http) as server:
                            ctx = Context(args, server.url, server.pid, ws_session, http)
                            result["bigroom"].append(await scenario_bigroom(ctx, room, size))
                if "latency" in args.scenarios:
                    async with fleet.server(http) as server:
                        ctx = Context(args, server.url, server.pid, ws_session, http)
                        lat = await scenario_latency(ctx, users[:args.latency_users])
                    result["latency"] = lat
                    d = lat["delivery_latency_ms"]
                    print(f"    {lat['achieved_write_rate']} writes/s sent, delivery p50 "
                          f"{d['p50']} p95 {d['p95']} p99 {d['p99']} max {d['max']} ms, "
                          f"errors {lat['write_errors'] or 0}, correct "
                          f"{lat['correctness']['ok']}", flush=True)
                out["rounds"].append(result)
    finally:
        if fleet.current is not None:
            stop_server(fleet.current)
        if tmp is not None and not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
    out["summary"] = summarize(out["rounds"], args)
    return out


def summarize(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if any("idle" in r for r in rounds):
        idle: dict[str, Any] = {}
        for n in args.idle_sockets:
            steps = [s for r in rounds if "idle" in r for s in r["idle"]["steps"]
                     if s["sockets"] == n]
            if not steps:
                continue
            idle[str(n)] = {
                "kib_per_socket": median([s.get("kib_per_socket") for s in steps]),
                "marginal_kib_per_socket": median(
                    [s.get("marginal_kib_per_socket") for s in steps]),
                "connects_per_s": median([s["connect"]["connects_per_s"] for s in steps]),
                "server_cpu_ms_per_connect": median(
                    [s.get("server_cpu_ms_per_connect") for s in steps]),
                "server_rss_mib": median([(s["server_rss_kib"] or 0) / 1024 for s in steps]),
                "client_kib_per_socket": median(
                    [s.get("client_kib_per_socket") for s in steps]),
                "failed": sum(s["connect"]["failed"] for s in steps),
                "per_round_kib": [s.get("kib_per_socket") for s in steps],
            }
        summary["idle"] = idle
    if any("bigroom" in r for r in rounds):
        big: dict[str, Any] = {}
        for size in args.bigroom_sockets:
            runs = [b for r in rounds for b in r.get("bigroom", []) if b["sockets"] == size]
            big[str(size)] = {
                "deliveries_per_s": median([b["median_deliveries_per_s"] for b in runs]),
                "per_round": [b["median_deliveries_per_s"] for b in runs],
                "server_cpu_us_per_delivery": median(
                    [b["median_server_cpu_us_per_delivery"] for b in runs]),
                "client_cpu_us_per_delivery": median(
                    [b["median_client_cpu_us_per_delivery"] for b in runs]),
                "http_probe_max_ms": median([b["median_http_probe_max_ms"] for b in runs]),
                "correct": all(b["correctness"]["ok"] for b in runs),
            }
        summary["bigroom"] = big
    lats = [r["latency"] for r in rounds if "latency" in r]
    if lats:
        summary["latency"] = {
            key: median([lat["delivery_latency_ms"][key] for lat in lats])
            for key in ("p50", "p95", "p99", "max")
        }
        summary["latency"].update({
            "per_round_p50_p99": [(lat["delivery_latency_ms"]["p50"],
                                   lat["delivery_latency_ms"]["p99"]) for lat in lats],
            "achieved_write_rate": median([lat["achieved_write_rate"] for lat in lats]),
            "write_ack_p50_ms": median([lat["write_ack_latency_ms"]["p50"] for lat in lats]),
            "write_ack_p99_ms": median([lat["write_ack_latency_ms"]["p99"] for lat in lats]),
            "server_cpu_cores": median([lat.get("server_cpu_cores") for lat in lats]),
            "write_errors": sum(sum(lat["write_errors"].values()) for lat in lats),
            "correct": all(lat["correctness"]["ok"] for lat in lats),
        })
    violations = Counter()
    for r in rounds:
        for scenario in [*r.get("bigroom", []), r.get("latency")]:
            if scenario:
                violations.update(scenario["correctness"]["violations"])
    summary["violations"] = dict(violations)
    return summary


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []
    for n, step in summary.get("idle", {}).items():
        rows.append((f"(a) idle {n} sockets: server kB/socket (marginal)",
                     f"{fmt(step['kib_per_socket'])} ({fmt(step['marginal_kib_per_socket'])})"))
        rows.append((f"(a) idle {n} sockets: connects/s, server ms CPU/connect",
                     f"{fmt(step['connects_per_s'], 0)}, "
                     f"{fmt(step['server_cpu_ms_per_connect'], 2)}"))
        rows.append((f"(a) idle {n} sockets: server RSS MiB, failed",
                     f"{fmt(step['server_rss_mib'])}, {step['failed']}"))
    for size, big in summary.get("bigroom", {}).items():
        rows.append((f"(b) one scope, {size} sockets, {args.burst_writes} writes: deliveries/s",
                     f"{fmt(big['deliveries_per_s'], 0)}  (rounds: "
                     f"{', '.join(fmt(v, 0) for v in big['per_round'])})"))
        rows.append((f"(b) {size} sockets: server / client CPU us per delivery",
                     f"{fmt(big['server_cpu_us_per_delivery'])} / "
                     f"{fmt(big['client_cpu_us_per_delivery'])}"))
        rows.append((f"(b) {size} sockets: slowest HTTP answer during a burst, ms",
                     fmt(big["http_probe_max_ms"])))
    lat = summary.get("latency")
    if lat:
        who = (f"{args.latency_users} users x {args.latency_sockets_per_user}, "
               f"{args.rate:g} writes/s offered")
        rows.append((f"(c) write->delivery ms p50/p95/p99/max ({who})",
                     " / ".join(fmt(lat[k], 1) for k in ("p50", "p95", "p99", "max"))))
        rows.append(("(c) achieved write rate; write ack p50/p99 ms",
                     f"{fmt(lat['achieved_write_rate'])}/s; {fmt(lat['write_ack_p50_ms'])} / "
                     f"{fmt(lat['write_ack_p99_ms'])}"))
        rows.append(("(c) server CPU cores; write errors",
                     f"{fmt(lat['server_cpu_cores'], 2)}; {lat['write_errors']}"))
    rows.append(("correctness violations (all scenarios, all rounds)",
                 ", ".join(f"{k}={v}" for k, v in summary["violations"].items()) or "none"))
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'metric'.ljust(width)} | value (median of {args.rounds} round(s))")
    print(f"{'-' * width}-+-{'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


def counts(text: str) -> list[int]:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1 or values[-1] > 20_000:
        raise argparse.ArgumentTypeError("a comma-separated list of counts from 1 to 20000")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--url", help="benchmark a running server at this 127.0.0.1 URL "
                                      "instead of starting one per scenario")
    parser.add_argument("--server-pid", type=int, help="with --url: its pid, for CPU and RSS")
    parser.add_argument("--scenarios", default="idle,bigroom,latency",
                        type=lambda s: [x for x in s.split(",") if x],
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every scenario")
    parser.add_argument("--idle-sockets", type=counts, default=[1000, 5000],
                        help="(a) socket counts, cumulative, one user per socket")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after connecting before reading RSS / writing")
    parser.add_argument("--connect-concurrency", type=int, default=100,
                        help="handshakes in flight")
    parser.add_argument("--bigroom-sockets", type=counts, default=[1000, 5000],
                        help="(b) sockets of one user (one scope); several sizes run apart")
    parser.add_argument("--burst-writes", type=int, default=20, help="(b) creates per burst")
    parser.add_argument("--bursts", type=int, default=3,
                        help="(b) measured bursts (after one warm-up burst)")
    parser.add_argument("--pause", type=float, default=1.0, help="(b) seconds between bursts")
    parser.add_argument("--latency-users", type=int, default=1000, help="(c) users")
    parser.add_argument("--latency-sockets-per-user", type=int, default=1,
                        help="(c) sockets per user")
    parser.add_argument("--rate", type=float, default=500.0, help="(c) writes/s offered")
    parser.add_argument("--duration", type=float, default=10.0, help="(c) measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="(c) seconds of writes before the measured window")
    parser.add_argument("--update-ratio", type=float, default=0.3,
                        help="(c) share of writes that update an earlier task of the user")
    parser.add_argument("--http-connections", type=int, default=16,
                        help="keep-alive HTTP connections for the writes")
    parser.add_argument("--max-inflight", type=int, default=5000,
                        help="(c) stop offering writes if this many are unanswered")
    parser.add_argument("--write-timeout", type=float, default=30.0)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to wait for outstanding deliveries")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--register-concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the server with py-spy (250 Hz) during (b) and (c) into "
                             "DIR/*.folded; adds a self-time table to the JSON")
    parser.add_argument("--server-gc-threshold", type=int, default=0, metavar="N",
                        help="experiment: start the server with gc.set_threshold(N, 50, 100) "
                             "and gc.freeze() before it imports the app (0: stock settings)")
    parser.add_argument("--server-switch-interval", type=float, default=0.0, metavar="S",
                        help="experiment: start the server with sys.setswitchinterval(S) "
                             "(0: stock 5 ms)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data dir (server.log is in it)")
    parser.add_argument("--out", type=Path, help="JSON path (default "
                        "bench/results/sockets-<timestamp>.json)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    if not 1 <= args.rounds <= 20 or not 1 <= args.bursts <= 100:
        parser.error("--rounds must be 1..20 and --bursts 1..100")
    if not 1 <= args.burst_writes <= 1000 or not 0 < args.rate <= 20_000:
        parser.error("--burst-writes must be 1..1000 and --rate 0..20000")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("--duration must be 0..600 s and --warmup 0..60 s")
    if not 1 <= args.latency_users <= 20_000 or not 1 <= args.latency_sockets_per_user <= 100:
        parser.error("--latency-users must be 1..20000, --latency-sockets-per-user 1..100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gc.set_threshold(50_000, 20, 20)  # the load generator's GC, not the server's
    started = datetime.now(UTC)
    facts = machine_facts()
    report = asyncio.run(run(args))
    report = {
        "benchmark": "socket_bench", "issue": 3,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": facts, "git_at_end": git_facts(),
        "notes": ["bench set-up uses TASKMASTER_AUTH_PASSWORD_TIME_COST=1 and "
                  "TASKMASTER_AUTH_PASSWORD_MEMORY_KIB=1024 to make registration cheap",
                  "client: this process, uvloop, aiohttp WebSocket, no permessage-deflate",
                  "the machine is shared with other work: see machine_busy_cores"],
        **report,
    }
    print_table(report["summary"], args)
    path = args.out or RESULTS / f"sockets-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
