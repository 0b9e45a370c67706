#!/usr/bin/env python3
"""REST benchmark for issue 2 ("Numbers to reach") against one instance on the embedded store.

What it does, with the defaults reproducing the issue's setup:

1. starts a fresh `taskmaster serve` on a free 127.0.0.1 port with a temporary data
   directory, the shipped config.toml and the default (production-like) argon2id
   parameters, unless --url points at a server that is already running;
2. seeds --users users with --tasks-per-user tasks each, either through the REST API
   (register, then POST /api/tasks with --seed-concurrency requests in flight) or, much
   faster, by opening the SQLite file through `store.sqlite.SQLiteStore`'s public
   methods before the server starts (--seed store; the default when it starts the server);
3. runs --clients concurrent client coroutines (one aiohttp ClientSession on uvloop, in
   this process, separate from the server's) in phases: a warm-up, a realistic mix for
   --duration seconds, then one phase per operation (login, list, search, create,
   update) for --phase-duration seconds each, with every client driving only that
   operation, so the p95 of each operation under full concurrency is known too;
4. prints one table per phase (count, rps, p50/p95/p99/max, errors, target, PASS/FAIL
   on p95) and writes a JSON report to bench/results/rest-<timestamp>.json;
5. reads the server's CPU time and RSS from /proc/<pid> (and the whole machine's CPU
   from /proc/stat, to show how much other load shared the cores);
6. stops the server it started, by its pid.

Latency is measured in the client from sending the request to reading the whole body
(closed loop: a client sends its next request when the previous one is answered, so
the numbers are latencies at the throughput reached, not at a fixed offered rate).
Every loop is bounded by time and by count; all traffic goes to 127.0.0.1.

    .venv/bin/python bench/rest_bench.py                 # the issue's setup, one run
    .venv/bin/python bench/rest_bench.py --repeat 3      # median of 3 runs
    .venv/bin/python bench/rest_bench.py --users 2 --tasks-per-user 500 --duration 5 \
        --phase-duration 3                              # a quick smoke run
    .venv/bin/python bench/rest_bench.py --data-dir /tmp/tm-bench   # seed once, keep it;
    .venv/bin/python bench/rest_bench.py --data-dir /tmp/tm-bench   # ... then reuse it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from realtime.loadtest.server_settings import LIMITS_FAR_ABOVE_LOAD

try:
    import uvloop
except ImportError:  # pragma: no cover - the project depends on it off Windows
    uvloop = None

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The guide's targets for p95, in milliseconds.
TARGETS_MS = {"login": 200.0, "list": 100.0, "search": 200.0, "create": 150.0,
              "update": 150.0}
OPERATIONS = ("login", "list", "search", "create", "update")
# The mixed phase: how often each operation is chosen (weights, any scale).
MIX = {"list": 45, "search": 15, "create": 15, "update": 23, "login": 2}
PASSWORD = "bench-password-1234"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = resource.getpagesize()
MAX_LATENCIES = 2_000_000  # per phase and operation; a run never nears it

# A small vocabulary: search terms hit realistic fractions of a user's tasks.
WORDS_TEXT = (
    "report invoice budget review design deploy release meeting client server database "
    "backup migrate refactor test bug fix feature sprint planning roadmap customer "
    "support ticket email call draft proposal contract legal audit security patch "
    "update upgrade install configure monitor alert dashboard metrics analytics "
    "marketing campaign launch website mobile android ios payment billing refund "
    "onboarding training hiring interview feedback survey research prototype sketch "
    "wireframe copy translate localize document spec api endpoint schema index cache "
    "queue worker cron script cleanup archive export import sync notify schedule "
    "calendar travel expense receipt vendor order shipping inventory warehouse "
    "quarterly annual weekly daily urgent minor follow prepare send check verify "
    "approve sign renew cancel organize plan write read discuss present share team "
    "office garden kitchen car doctor dentist groceries gym birthday gift family"
)
WORDS = WORDS_TEXT.split()
STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high")
LIST_SORTS = ("-created", "created", "-updated", "due", "-due", "-priority", "priority")


# -- machine and process facts ---------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def memory_kib(pid: int | str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in {"VmRSS", "VmHWM", "Threads"}:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def shown_path(path: Path) -> str:
    """A path relative to the repository when it is inside it (e.g. .venv/bin/python)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def code_version() -> dict[str, Any]:
    """The commit the server code comes from, and whether the work tree differs from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "tracked_files_changed": bool(changed)}


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem_total = int(line.split()[1]) // 1024
    return {
        "cpu_model": model, "cpus": os.cpu_count(), "mem_total_mib": mem_total,
        "kernel": platform.release(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "aiohttp": aiohttp.__version__,
        "uvloop": getattr(uvloop, "__version__", None),
        "load_avg_at_start": os.getloadavg(),
    }


# -- the server under test ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("taskmaster")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "realtime.cli", "serve"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path | None
    env: dict[str, str]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def server_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMASTER_", "JWT_"))}
    for name in ("MONGODB_URI", "REDIS_URL", "NODE_ENV", "PORT", "HOST"):
        env.pop(name, None)
    env.update({
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "TASKMASTER_CONFIG": str(ROOT / "config.toml"),
        "TASKMASTER_STORE_URL": f"sqlite:///{data_dir / 'taskmaster.db'}",
        "JWT_SECRET": secrets.token_urlsafe(48),
        # Every limit on (its cost is part of what is measured) but far above the load:
        # the defaults allow 1000 requests per 15 min and 30 logins per address.
        **LIMITS_FAR_ABOVE_LOAD,
    })
    return env


def start_server(env: dict[str, str], data_dir: Path) -> Server:
    log_path = data_dir / "server.log"
    port = int(env["PORT"])
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*server_command(), "--port", str(port), "--host", "127.0.0.1"],
            env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path, env)


def stop_server(server: Server) -> int | None:
    process = server.process
    if process is None or process.poll() is not None:
        return process.returncode if process else None
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(timeout=5)


async def wait_ready(session: aiohttp.ClientSession, server: Server, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            break
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(server.url + "/api/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    tail = server.log_path.read_text()[-2000:] if server.log_path else ""
    raise SystemExit(f"the server did not become ready in {within:.0f} s\n{tail}")


# -- synthetic data ----------------------------------------------------------------------


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def task_fields(rng: random.Random) -> dict[str, Any]:
    due = None
    if rng.random() < 0.7:
        due = (datetime.now(UTC) + timedelta(days=rng.uniform(-60, 120))).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "title": words(rng, 2, 6).capitalize(),
        "description": words(rng, 5, 30),
        "status": rng.choice(STATUSES),
        "priority": rng.choice(PRIORITIES),
        "due_date": due,
    }


def emails(count: int) -> list[str]:
    # Fixed addresses, so a kept --data-dir can be benchmarked again without seeding.
    return [f"bench-user-{i}@example.com" for i in range(count)]


async def seed_store(db_url: str, env: dict[str, str], users: list[str], per_user: int,
                     rng: random.Random) -> dict[str, Any]:
    """Seed through SQLiteStore's public methods, with the server not yet running."""
    import argon2

    from realtime.config import load_config
    from realtime.scopes import personal_scope
    from realtime.validation import iso
    from store.sqlite import SQLiteStore

    config = load_config(env=env)
    hasher = argon2.PasswordHasher(time_cost=config.password_time_cost,
                                   memory_cost=config.password_memory_kib,
                                   parallelism=config.password_parallelism)
    store = SQLiteStore(db_url, timeout=60)
    await store.open()
    started = time.perf_counter()
    now = datetime.now(UTC)
    try:
        for email in users:
            user_id = uuid.uuid4().hex
            await store.create_user({
                "id": user_id, "email": email, "name": email.split("@")[0],
                "password_hash": hasher.hash(PASSWORD), "created_at": iso(now),
            })
            # Spread creation over the past year; ids are v4 uuids as the service makes.
            stamps = sorted(now - timedelta(seconds=rng.uniform(0, 365 * 86400))
                            for _ in range(per_user))
            batch: list[Any] = []
            for stamp in stamps:
                at = iso(stamp)
                task = {"id": str(uuid.uuid4()), "owner": user_id,
                        "scope": personal_scope(user_id), **task_fields(rng),
                        "created_at": at, "updated_at": at}
                batch.append(store.create_task(task))
                if len(batch) >= 256:
                    await asyncio.gather(*batch)
                    batch = []
            if batch:
                await asyncio.gather(*batch)
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    return {"method": "store", "seconds": round(elapsed, 2),
            "tasks_per_second": round(len(users) * per_user / elapsed, 1)}


async def seed_api(session: aiohttp.ClientSession, url: str, users: list[str], per_user: int,
                   concurrency: int, rng: random.Random) -> dict[str, Any]:
    """Seed through the REST API: register each user, then POST their tasks."""
    started = time.perf_counter()
    tokens = await asyncio.gather(*(register(session, url, email) for email in users))
    jobs = [(token, i) for token in tokens for i in range(per_user)]
    rng.shuffle(jobs)
    queue = iter(jobs)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for token, _ in queue:
            for _attempt in range(3):
                async with session.post(url + "/api/tasks", json=task_fields(rng),
                                        headers=auth(token)) as response:
                    await response.read()
                    if response.status in (200, 201):
                        break
            else:
                failures += 1
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"seeding through the API failed for {failures} tasks")
    return {"method": "api", "seconds": round(elapsed, 2),
            "tasks_per_second": round(len(users) * per_user / elapsed, 1)}


async def register(session: aiohttp.ClientSession, url: str, email: str) -> str:
    body = {"email": email, "password": PASSWORD, "name": email.split("@")[0]}
    async with session.post(url + "/api/auth/register", json=body) as response:
        data = await response.json(loads=orjson.loads)
        if response.status != 201:
            raise SystemExit(f"register {email}: {response.status} {data}")
        return str(data["token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the clients -------------------------------------------------------------------------


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)

    def ok(self, op: str, seconds: float) -> None:
        bucket = self.latencies.setdefault(op, [])
        if len(bucket) < MAX_LATENCIES:
            bucket.append(seconds)

    def fail(self, op: str, seconds: float, status: int | str) -> None:
        self.ok(op, seconds)  # a failed request still took that long
        self.errors[op] = self.errors.get(op, 0) + 1
        codes = self.statuses.setdefault(op, {})
        codes[str(status)] = codes.get(str(status), 0) + 1


class Client:
    """One simulated user session: a token, a pool of known tasks and their versions."""

    def __init__(self, index: int, session: aiohttp.ClientSession, url: str, email: str,
                 rng: random.Random) -> None:
        self.index = index
        self.session = session
        self.url = url
        self.email = email
        self.rng = rng
        self.token = ""
        self.known: dict[str, int] = {}  # task id -> last seen version
        self.cursor: tuple[str, str] | None = None  # (sort, cursor) to follow next
        self.recorder = Recorder()

    async def call(self, op: str, method: str, path: str, *, body: Any = None,
                   headers: dict[str, str] | None = None, params: Any = None,
                   ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        hdrs = {**auth(self.token), **(headers or {})} if self.token else (headers or {})
        data = orjson.dumps(body) if body is not None else None
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            async with self.session.request(method, self.url + path, data=data,
                                            headers=hdrs, params=params) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.recorder.fail(op, time.perf_counter() - started, type(exc).__name__)
            return 0, None
        elapsed = time.perf_counter() - started
        payload = orjson.loads(raw) if raw else None
        if status in ok:
            self.recorder.ok(op, elapsed)
        elif status == 409 and op == "update":
            self.recorder.ok(op, elapsed)  # someone else changed it: an answer, not an error
            self.recorder.conflicts[op] = self.recorder.conflicts.get(op, 0) + 1
        else:
            self.recorder.fail(op, elapsed, status)
        return status, payload

    def _learn(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            self.known[task["id"]] = task["version"]
        if len(self.known) > 5000:  # bounded memory: forget the oldest half
            for key in list(self.known)[:2500]:
                del self.known[key]

    async def login(self) -> None:
        status, payload = await self.call("login", "POST", "/api/auth/login",
                                          body={"email": self.email, "password": PASSWORD})
        if status == 200:
            self.token = payload["token"]

    async def list(self) -> None:
        roll = self.rng.random()
        params: dict[str, str] = {}
        if roll < 0.25 and self.cursor is not None:
            params = {"sort": self.cursor[0], "cursor": self.cursor[1]}
            self.recorder.kinds["list:next_page"] = self.recorder.kinds.get(
                "list:next_page", 0) + 1
        elif roll < 0.6:
            params = {}
            self.recorder.kinds["list:default"] = self.recorder.kinds.get("list:default", 0) + 1
        else:
            params = {"sort": self.rng.choice(LIST_SORTS)}
            pick = self.rng.random()
            if pick < 0.4:
                params["status"] = self.rng.choice(STATUSES)
            elif pick < 0.7:
                params["priority"] = self.rng.choice(PRIORITIES)
            elif pick < 0.85:
                params["due_before"] = (datetime.now(UTC) + timedelta(days=7)).strftime(
                    "%Y-%m-%d")
            else:
                params["status"] = self.rng.choice(STATUSES)
                params["priority"] = self.rng.choice(PRIORITIES)
            if self.rng.random() < 0.3:
                params["limit"] = "100"
            self.recorder.kinds["list:filtered"] = self.recorder.kinds.get(
                "list:filtered", 0) + 1
        status, payload = await self.call("list", "GET", "/api/tasks", params=params)
        if status == 200:
            self._learn(payload["tasks"])
            nxt = payload.get("next_cursor")
            self.cursor = (params.get("sort", "-created"), nxt) if nxt else None

    async def search(self) -> None:
        q = " ".join(self.rng.sample(WORDS, self.rng.choice((1, 1, 2))))
        params = {"q": q}
        if self.rng.random() < 0.3:
            params["status"] = self.rng.choice(STATUSES)
        status, payload = await self.call("search", "GET", "/api/tasks", params=params)
        if status == 200:
            self._learn(payload["tasks"])

    async def create(self) -> None:
        status, payload = await self.call("create", "POST", "/api/tasks",
                                          body=task_fields(self.rng), ok=(201,))
        if status == 201:
            self._learn([payload["task"]])

    async def update(self) -> None:
        if not self.known:
            await self.list()
            return
        task_id = self.rng.choice(tuple(self.known))
        change: dict[str, Any] = self.rng.choice((
            {"status": self.rng.choice(STATUSES)},
            {"priority": self.rng.choice(PRIORITIES)},
            {"title": words(self.rng, 2, 6).capitalize()},
            {"status": self.rng.choice(STATUSES), "description": words(self.rng, 5, 30)},
        ))
        status, payload = await self.call(
            "update", "PATCH", f"/api/tasks/{task_id}", body=change,
            headers={"If-Match": f'"{self.known[task_id]}"'})
        if status == 200:
            self.known[task_id] = payload["task"]["version"]
        elif status == 409:
            self.known[task_id] = payload["error"]["details"]["version"]
        elif status == 404:
            self.known.pop(task_id, None)

    async def run(self, ops: tuple[str, ...], weights: tuple[float, ...], deadline: float,
                  max_requests: int) -> None:
        done = 0
        while time.monotonic() < deadline and done < max_requests:
            op = ops[0] if len(ops) == 1 else self.rng.choices(ops, weights)[0]
            await getattr(self, op)()
            done += 1


# -- phases and reports ------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-pct * len(sorted_values) // 100)))  # nearest rank
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(recorders: list[Recorder], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in OPERATIONS:
        values = sorted(v for r in recorders for v in r.latencies.get(op, ()))
        if not values:
            continue
        errors = sum(r.errors.get(op, 0) for r in recorders)
        statuses: dict[str, int] = {}
        for r in recorders:
            for code, n in r.statuses.get(op, {}).items():
                statuses[code] = statuses.get(code, 0) + n
        p95 = percentile(values, 95) * 1000
        out[op] = {
            "count": len(values), "rps": round(len(values) / seconds, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 2),
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p95_ms": round(p95, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2),
            "max_ms": round(values[-1] * 1000, 2),
            "errors": errors, "error_statuses": statuses,
            "conflicts": sum(r.conflicts.get(op, 0) for r in recorders),
            "target_p95_ms": TARGETS_MS[op],
            "pass": p95 < TARGETS_MS[op] and errors == 0,
        }
    kinds: dict[str, int] = {}
    for r in recorders:
        for kind, n in r.kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    if kinds:
        out["_list_kinds"] = kinds
    return out


async def run_phase(name: str, clients: list[Client], ops: dict[str, float], seconds: float,
                    max_requests: int, server_pid: int | None) -> dict[str, Any]:
    for client in clients:
        client.recorder = Recorder()
    op_names = tuple(ops)
    weights = tuple(ops.values())
    cpu_before = cpu_seconds(server_pid) if server_pid else None
    me_before = cpu_seconds()
    busy_before, total_before = machine_busy()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(c.run(op_names, weights, deadline, max_requests) for c in clients))
    elapsed = time.monotonic() - started
    busy_after, total_after = machine_busy()
    result: dict[str, Any] = {"phase": name, "seconds": round(elapsed, 2),
                              "ops": summarise([c.recorder for c in clients], elapsed)}
    cpu_after = cpu_seconds(server_pid) if server_pid else None
    me_after = cpu_seconds()
    machine = {"busy_cores": round((busy_after - busy_before) / elapsed, 2),
               "cpus": round((total_after - total_before) / elapsed, 2)}
    if me_before is not None and me_after is not None:
        result["client_cpu_cores"] = round((me_after - me_before) / elapsed, 2)
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_cores"] = round((cpu_after - cpu_before) / elapsed, 2)
        result["server_memory_kib"] = memory_kib(server_pid)  # type: ignore[arg-type]
        machine["other_cores"] = max(0.0, round(
            machine["busy_cores"] - result["server_cpu_cores"]
            - result.get("client_cpu_cores", 0), 2))
    result["machine"] = machine
    return result


def print_phase(result: dict[str, Any], title: str | None = None) -> None:
    print(f"\n== {title or result['phase']} ({result['seconds']:.1f} s) ==")
    header = (f"{'op':<8}{'count':>8}{'rps':>8}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}"
              f"{'errors':>8}{'target':>9}  p95")
    print(header)
    for op in OPERATIONS:
        s = result["ops"].get(op)
        if not s:
            continue
        verdict = "PASS" if s["pass"] else "FAIL"
        print(f"{op:<8}{s['count']:>8}{s['rps']:>8.1f}{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}"
              f"{s['p99_ms']:>9.1f}{s['max_ms']:>9.1f}{s['errors']:>8}"
              f"{'<' + format(s['target_p95_ms'], '.0f'):>9}  {verdict}")
    notes = []
    if "server_cpu_cores" in result:
        mem = result.get("server_memory_kib", {})
        notes.append(f"server CPU {result['server_cpu_cores']:.2f} cores, "
                     f"RSS {mem.get('VmRSS', 0) / 1024:.0f} MiB")
    if "client_cpu_cores" in result:
        notes.append(f"client CPU {result['client_cpu_cores']:.2f} cores")
    machine = result["machine"]
    notes.append(f"machine busy {machine['busy_cores']:.2f}/{machine['cpus']:.0f} cores"
                 + (f" (other processes {machine['other_cores']:.2f})"
                    if "other_cores" in machine else ""))
    print("   " + "; ".join(notes))
    errs = {op: s["error_statuses"] for op, s in result["ops"].items()
            if not op.startswith("_") and s["errors"]}
    if errs:
        print(f"   errors by status: {errs}")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase and operation, the median of each figure across repeated runs."""
    merged: dict[str, Any] = {"phase": runs[0]["phase"],
                              "seconds": statistics.median(r["seconds"] for r in runs),
                              "ops": {}}
    for op in OPERATIONS:
        present = [r["ops"][op] for r in runs if op in r["ops"]]
        if not present:
            continue
        stats: dict[str, Any] = {}
        for key in ("count", "rps", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            stats[key] = round(statistics.median(s[key] for s in present), 2)
        stats["count"] = int(stats["count"])
        stats["errors"] = sum(s["errors"] for s in present)
        stats["error_statuses"] = {}
        for s in present:
            for code, n in s["error_statuses"].items():
                stats["error_statuses"][code] = stats["error_statuses"].get(code, 0) + n
        stats["target_p95_ms"] = TARGETS_MS[op]
        stats["pass"] = stats["p95_ms"] < TARGETS_MS[op] and stats["errors"] == 0
        stats["p95_ms_each_run"] = [s["p95_ms"] for s in present]
        merged["ops"][op] = stats
    for key in ("server_cpu_cores", "client_cpu_cores"):
        if all(key in r for r in runs):
            merged[key] = round(statistics.median(r[key] for r in runs), 2)
    if all("server_memory_kib" in r for r in runs):
        merged["server_memory_kib"] = runs[-1]["server_memory_kib"]
    merged["machine"] = {
        key: round(statistics.median(r["machine"][key] for r in runs), 2)
        for key in runs[0]["machine"] if all(key in r["machine"] for r in runs)
    }
    return merged


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--url", help="benchmark a running server at this 127.0.0.1 URL "
                        "instead of starting one (seeding then goes through the API)")
    parser.add_argument("--server-pid", type=int,
                        help="with --url: the server's pid, to read its CPU and RSS")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--users", type=int, default=None,
                        help="distinct users (default: one per client); clients share "
                             "users round-robin when fewer")
    parser.add_argument("--tasks-per-user", type=int, default=10_000)
    parser.add_argument("--seed", choices=("store", "api", "none"), default=None,
                        help="how to seed (default: store when this script starts the "
                             "server, api with --url, none when --data-dir already holds "
                             "a database seeded by this script)")
    parser.add_argument("--seed-concurrency", type=int, default=50,
                        help="requests in flight while seeding through the API")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of the mixed phase")
    parser.add_argument("--phase-duration", type=float, default=15.0,
                        help="seconds of each single-operation phase (0 skips them)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up mix")
    parser.add_argument("--mix", default=",".join(f"{op}={w}" for op, w in MIX.items()),
                        help="weights of the mixed phase, op=weight comma-separated "
                             "(an op left out is not sent)")
    parser.add_argument("--phases", default=",".join(OPERATIONS),
                        help="single-operation phases to run, comma-separated")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the measured phases this many times on the same seeded "
                             "server and report the median of each figure")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="cap on requests per client per phase")
    parser.add_argument("--rng-seed", type=int, default=2)
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data directory (it is printed)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="use (and keep) this data directory instead of a temporary "
                             "one; a database already there is reused without seeding")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON report path (default bench/results/rest-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.url:
        host = urlsplit(args.url).hostname
        if host not in {"127.0.0.1", "localhost", "::1"}:
            parser.error("--url must point at 127.0.0.1 (this benchmark sends load locally)")
        if args.seed == "store":
            parser.error("--seed store needs the script to start the server (no --url)")
    if args.clients < 1 or args.tasks_per_user < 0 or args.duration <= 0:
        parser.error("--clients must be >= 1, --tasks-per-user >= 0, --duration > 0")
    args.users = args.users or args.clients
    if args.seed is None:
        if args.url:
            args.seed = "api"
        elif args.data_dir and (args.data_dir / "taskmaster.db").exists():
            args.seed = "none"
        else:
            args.seed = "store"
    try:
        args.mix = {op.strip(): float(w) for op, w in
                    (part.split("=") for part in args.mix.split(",") if part.strip())}
    except ValueError:
        parser.error("--mix must look like list=45,search=15,create=15,update=23,login=2")
    if set(args.mix) - set(OPERATIONS) or not args.mix or min(args.mix.values()) <= 0:
        parser.error(f"--mix takes positive weights for: {', '.join(OPERATIONS)}")
    unknown = set(filter(None, args.phases.split(","))) - set(OPERATIONS)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


async def benchmark(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.rng_seed)
    users = emails(args.users)
    report: dict[str, Any] = {
        "benchmark": "rest", "issue": 2,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([shown_path(Path(sys.executable)), *sys.argv]),
        "machine": machine_facts(),
        "code": code_version(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mix": args.mix, "targets_p95_ms": TARGETS_MS,
    }
    server: Server | None = None
    if args.url:
        server = Server(args.url.rstrip("/"), None, None, {})
    else:
        env = server_env(data_dir, free_port())
        if args.seed == "store":
            print(f"seeding {args.users} users x {args.tasks_per_user} tasks directly into "
                  f"the SQLite file through SQLiteStore (server not yet running) ...",
                  flush=True)
            report["seed"] = await seed_store(env["TASKMASTER_STORE_URL"], env, users,
                                              args.tasks_per_user, rng)
        server = start_server(env, data_dir)
        report["server"] = {"pid": server.pid, "url": server.url,
                            "command": server_command(),
                            "store_url": env["TASKMASTER_STORE_URL"]}
    pid = server.pid or args.server_pid
    connector = aiohttp.TCPConnector(limit=max(args.clients, args.seed_concurrency) + 8,
                                     force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         json_serialize=lambda o: orjson.dumps(o).decode(),
                                         ) as session:
            await wait_ready(session, server, 60)
            if pid:
                report["server_memory_after_start_kib"] = memory_kib(pid)
            if args.seed == "none":
                report["seed"] = {"method": "none (reused an existing database)",
                                  "seconds": 0, "tasks_per_second": 0}
            elif args.seed == "api":
                print(f"seeding {args.users} users x {args.tasks_per_user} tasks through "
                      f"the REST API ({args.seed_concurrency} in flight) ...", flush=True)
                report["seed"] = await seed_api(session, server.url, users,
                                                args.tasks_per_user, args.seed_concurrency,
                                                rng)
            print(f"seeded by {report['seed']['method']} in {report['seed']['seconds']} s "
                  f"({report['seed']['tasks_per_second']} tasks/s)", flush=True)
            if pid:
                report["server_memory_after_seed_kib"] = memory_kib(pid)

            clients = [Client(i, session, server.url, users[i % len(users)],
                              random.Random(args.rng_seed * 1000 + i))
                       for i in range(args.clients)]
            # Every client logs in once (not measured) and learns a page of its tasks.
            await asyncio.gather(*(c.login() for c in clients))
            if not all(c.token for c in clients):
                raise SystemExit("some clients could not log in")
            await asyncio.gather(*(c.call("list", "GET", "/api/tasks",
                                          params={"limit": "200"}) for c in clients))
            await asyncio.gather(*(c.list() for c in clients))
            print(f"warm-up {args.warmup:.0f} s ...", flush=True)
            await run_phase("warmup", clients, args.mix, args.warmup, args.max_requests, pid)

            phases = [p for p in args.phases.split(",") if p] if args.phase_duration else []
            runs: list[list[dict[str, Any]]] = []
            for round_no in range(args.repeat):
                label = f" (run {round_no + 1}/{args.repeat})" if args.repeat > 1 else ""
                this_run = []
                print(f"mixed phase, {args.clients} clients, {args.duration:.0f} s{label}",
                      flush=True)
                result = await run_phase("mixed", clients, args.mix, args.duration,
                                         args.max_requests, pid)
                print_phase(result, f"mixed{label}")
                this_run.append(result)
                for op in phases:
                    result = await run_phase(f"{op} only", clients, {op: 1.0},
                                             args.phase_duration, args.max_requests, pid)
                    print_phase(result, f"{op} only, {args.clients} clients{label}")
                    this_run.append(result)
                runs.append(this_run)
            report["runs"] = runs
            if args.repeat > 1:
                report["median"] = [median_of([run[i] for run in runs])
                                    for i in range(len(runs[0]))]
                print(f"\n######## median of {args.repeat} runs ########")
                for result in report["median"]:
                    print_phase(result)
            if pid:
                report["server_cpu_seconds_total"] = cpu_seconds(pid)
                report["server_memory_end_kib"] = memory_kib(pid)
    finally:
        if server.process is not None:
            report["server_exit_code"] = stop_server(server)
            if server.log_path and server.log_path.exists():
                log_text = server.log_path.read_text(errors="replace")
                report["server_log_tail"] = log_text[-4000:]
    report["load_avg_at_end"] = os.getloadavg()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data_dir:
        data_dir = args.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        args.keep_data = True
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="taskmaster-bench-"))
    try:
        if uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        report = asyncio.run(benchmark(args, data_dir))
        report["db_bytes"] = sum(p.stat().st_size for p in data_dir.glob("taskmaster.db*"))
    finally:
        if args.keep_data:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    output = args.output or RESULTS / (
        "rest-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nreport: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    failed = [f"{r['phase']}:{op}" for r in (report.get("median") or report["runs"][-1])
              for op, s in r["ops"].items() if not op.startswith("_") and not s["pass"]]
    if failed:
        print("p95 targets missed: " + ", ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
