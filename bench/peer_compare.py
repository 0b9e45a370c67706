#!/usr/bin/env python3
"""Issues 4 and 5: this server against Node.js Socket.IO and stock python-socketio, same run.

The method is the peer benchmark's (../shared/bench/peer, copied and adapted in bench/peer):
one load generator for every server (bench/peer/loadgen.js: raw `ws` sockets speaking
Engine.IO v4 / Socket.IO v5, JSON, no permessage-deflate), its own redis-server, fresh server
processes for every scenario, and in each round every scenario runs its variants back to
back (node, py, ours), so ratios come from neighbouring runs; medians of the rounds.

Variants:
  node  bench/peer/server.js: Socket.IO 4.8 + @socket.io/redis-adapter (the reference)
  py    bench/peer/server.py: aiohttp + python-socketio + AsyncRedisManager + uvloop + orjson
        (the stock baseline, in its own venv from bench/peer/requirements.txt, as the peer ran it)
  ours  `taskmaster serve` with REDIS_URL at the same Redis, a shared SQLite file store, one
        JWT_SECRET, and `bench.endpoints` on. Sockets authenticate with {token} (JWTs minted by
        the load generator with that secret). Events are real writes: the publisher calls
        POST /api/_bench/creates (handlers/bench.py: TaskService.create for each item, i.e.
        store commit with seq -> broker -> relay -> sockets); the peer servers get POST /emit.
        Scenario `relay` uses POST /api/_bench/publish instead: the same events, no store.

Scenarios (defaults = the issues' "numbers to reach"):
  idle     (a) 1 instance; 1,000 / 5,000 / 10,000 sockets, one user each; RSS per socket after
           3 s settle; connect rate with 100 handshakes in flight
  fanout   (b) 2 instances + Redis; 1,000 users with one socket on each instance; offered rate
           ladder 500, 1k, 2k, 5k, 10k, 20k, 40k ev/s (1 s warm, 5 s window, drain <= 8 s); the
           highest rate held with p99 <= 100 ms, and the delivered rate at the first saturated
           step (< 85 % delivered, not drained, or p99 > 1 s)
  bigroom  (c) 1 instance; one user, 5,000 sockets; a warm burst then 3 bursts of 10 events;
           deliveries/s = N*M / (last delivery - request sent), median of the bursts
  tenk     (d) 1 instance; 10,000 sockets (--tenk-shapes users x sockets per user: 10,000 x 1
           and 1,000 x 10); writes at 1,000/s then 2,000/s for 10 s each: p99 write->delivery
  onewriter  ours only, a diagnostic: (b) with every write sent to instance 0 (sockets still on
           both), so that one process writes the SQLite file: isolates the cost of two
           processes contending for one SQLite file's write lock
  relay    ours only: (b) again, but ours publishes through POST /api/_bench/publish: the same
           events, seqs from a per-user counter on the instance that takes the user's writes,
           and no store: the delivery engine alone, as the peers' /emit is (ratios against the
           same round's (b) Node run)
  rest     (e) ours only: (b) again, but every write is one POST /api/tasks with the user's
           Bearer token (the product's real REST write path); also the write's ack latency

    .venv/bin/python bench/peer_compare.py                       # 3 rounds, all scenarios
    .venv/bin/python bench/peer_compare.py --rounds 1 --scenarios bigroom,idle
    .venv/bin/python bench/peer_compare.py --quick --rounds 1    # smoke test, ~3 min
    .venv/bin/python bench/peer_compare.py --rounds 0 --profile  # py-spy profiles of ours only
    .venv/bin/python bench/peer_compare.py --summarize bench/results/peer-compare-<stamp>.json

Setup it does by itself when missing: `npm ci` in bench/peer (node_modules is git-ignored) and a
venv for the stock server in bench/peer/.venv. Everything listens on 127.0.0.1 only; every
process it starts (redis-server, servers, load generator, py-spy) is stopped by its pid; every
loop is bounded in count and time. The machine is shared: each run records the whole machine's
busy CPU from /proc/stat minus the processes it started ("background cores").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from realtime.loadtest.server_settings import LIMITS_FAR_ABOVE_LOAD

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "bench" / "peer"
RESULTS = ROOT / "bench" / "results"
STOCK_VENV = PEER / ".venv"
TASKMASTER = Path(sys.executable).with_name("taskmaster")
PYSPY = Path(sys.executable).with_name("py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
JWT_ISS, JWT_AUD = "taskmaster", "taskmaster-api"
VARIANTS = ("node", "py", "ours")
ALL_SCENARIOS = ("idle", "fanout", "onewriter", "bigroom", "tenk", "rest", "relay")
HELD_P99_MS = 100.0
SWITCH_INTERVAL = 0.0  # set by --ours-switch-interval
OURS_ENV: dict[str, str] = {}  # set by --ours-env (diagnostics: one setting changed)
LADDER = [500, 1000, 2000, 5000, 10000, 20000, 40000]


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


class LoadSampler:
    """Once a second: the machine's busy CPU and that of the processes we started; the
    difference is other people's work on the box (background)."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self.samples: list[tuple[float, float, float]] = []  # (t, machine, ours)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, pid: int) -> None:
        self.pids.add(pid)
        value = cpu_seconds(pid)
        if value is not None:
            self._last[pid] = value

    def _ours(self) -> float:
        for pid in list(self.pids):
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = value
        return sum(self._last.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), machine_busy(), self._ours()))
            self._stop.wait(1.0)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        self.samples.append((time.monotonic(), machine_busy(), self._ours()))
        s = self.samples
        if len(s) < 2:
            return {}
        per_second = []
        for (t0, m0, o0), (t1, m1, o1) in itertools.pairwise(s):
            if t1 - t0 > 0.2:
                per_second.append(max(0.0, ((m1 - m0) - (o1 - o0)) / (t1 - t0)))
        span = s[-1][0] - s[0][0]
        return {
            "seconds": round(span, 1),
            "machine_busy_cores": round((s[-1][1] - s[0][1]) / span, 2),
            "ours_cores": round((s[-1][2] - s[0][2]) / span, 2),
            "background_cores_mean": round(statistics.fmean(per_second), 2) if per_second else None,
            "background_cores_p90": round(sorted(per_second)[int(0.9 * (len(per_second) - 1))], 2)
            if per_second else None,
            "background_cores_max": round(max(per_second), 2) if per_second else None,
        }


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen[Any] | None, grace: float = 20) -> int | None:
    """SIGTERM by pid, then SIGKILL by pid if it does not exit in time."""
    if proc is None:
        return None
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def start_redis(logdir: Path) -> tuple[subprocess.Popen[Any], int]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server is required")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(logdir),
         "--client-output-buffer-limit", "pubsub 512mb 256mb 60"],
        stdout=(logdir / "redis.log").open("w"), stderr=subprocess.STDOUT)
    for _ in range(100):
        if port_open(port):
            return proc, port
        time.sleep(0.1)
    stop(proc)
    raise SystemExit("redis did not start")


def setup_dependencies() -> None:
    if not (PEER / "node_modules" / "socket.io").is_dir():
        print("npm ci in bench/peer ...", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEER,
                       check=True, timeout=600)
    if not (STOCK_VENV / "bin" / "python").exists():
        print("venv for the stock python-socketio server in bench/peer/.venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(STOCK_VENV)], check=True, timeout=300)
        subprocess.run([str(STOCK_VENV / "bin" / "pip"), "install", "-q", "-r",
                        str(PEER / "requirements.txt")], check=True, timeout=900)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 40000) if hard != resource.RLIM_INFINITY else 40000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Servers:
    """The instances of one variant for one run; stopped by pid."""

    def __init__(self, variant: str, count: int, redis_port: int, secret: str, workdir: Path,
                 tag: str) -> None:
        self.variant, self.count, self.workdir, self.tag = variant, count, workdir, tag
        self.redis_port, self.secret = redis_port, secret
        self.procs: list[subprocess.Popen[Any]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []
        self.db_dir: Path | None = None
        self.prefix = f"pc{secrets.token_hex(4)}"

    def command(self, port: int) -> tuple[list[str], Path, dict[str, str]]:
        redis_url = f"redis://127.0.0.1:{self.redis_port}"
        if self.variant == "node":
            return (["node", "server.js", "--port", str(port), "--redis", redis_url], PEER,
                    dict(os.environ))
        if self.variant == "py":
            return ([str(STOCK_VENV / "bin" / "python"), "server.py", "--port", str(port),
                     "--redis", redis_url], PEER, dict(os.environ))
        assert self.db_dir is not None
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TASKMASTER_", "JWT_")) and k not in
               {"MONGODB_URI", "REDIS_URL", "NODE_ENV", "PORT", "HOST"}}
        env.update({
            "TASKMASTER_CONFIG": str(ROOT / "config.toml"),
            "TASKMASTER_STORE_URL": f"sqlite:///{self.db_dir / 'shared.db'}",
            "REDIS_URL": f"{redis_url}/0?prefix={self.prefix}",  # one per run, shared
            "JWT_SECRET": self.secret,
            "TASKMASTER_BENCH_ENDPOINTS": "true",
            # Every limit on but far above the load (thousands of sockets from 127.0.0.1).
            **LIMITS_FAR_ABOVE_LOAD,
            "TASKMASTER_SERVER_LOG_LEVEL": "WARNING",
            "TASKMASTER_SERVER_INSTANCE_ID": f"{self.tag}-{port}",
            **OURS_ENV,
        })
        argv = [str(TASKMASTER)]
        if SWITCH_INTERVAL:  # diagnostic (--ours-switch-interval): the GIL's switch interval
            argv = [sys.executable, "-c", f"import sys; sys.setswitchinterval({SWITCH_INTERVAL})"
                    "; from realtime.cli import main; sys.exit(main(sys.argv[1:]))"]
        return ([*argv, "serve", "--host", "127.0.0.1", "--port", str(port)], self.db_dir, env)

    def ready_path(self) -> str:
        return "/api/ready" if self.variant == "ours" else "/stats"

    def start(self) -> Servers:
        if self.variant == "ours":
            self.db_dir = Path(tempfile.mkdtemp(prefix="pc-", dir=self.workdir))
        for k in range(self.count):
            for _attempt in range(4):
                port = free_port()
                argv, cwd, env = self.command(port)
                log = self.workdir / f"{self.tag}-srv{k}.log"
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT)
                if self._wait_ready(port, proc):
                    self.procs.append(proc)
                    self.ports.append(port)
                    self.logs.append(log)
                    break
                stop(proc)
                print(f"  {self.tag}: start on {port} failed, retrying: "
                      f"{log.read_text()[-300:]}", flush=True)
            else:
                raise RuntimeError(f"{self.tag}: could not start instance {k}")
        return self

    def _wait_ready(self, port: int, proc: subprocess.Popen[Any], within: float = 30) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{port}{self.ready_path()}"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            time.sleep(0.2)
        return False

    def stats(self) -> list[Any]:
        out = []
        for port in self.ports:
            path = "/api/_bench/stats" if self.variant == "ours" else "/stats"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    out.append(json.load(r))
            except (OSError, ValueError) as exc:
                out.append({"error": str(exc)})
        return out

    def stop(self) -> list[int | None]:
        codes = [stop(proc) for proc in self.procs]
        if self.db_dir is not None:
            shutil.rmtree(self.db_dir, ignore_errors=True)
        return codes

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]


# -- scenarios -------------------------------------------------------------------------------


def scenario_plan(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any], int,
                                                           tuple[str, ...]]]:
    """(name, loadgen scenario, loadgen config, instances, variants) in run order."""
    quick = args.quick
    plan: list[tuple[str, str, dict[str, Any], int, tuple[str, ...]]] = []
    fanout = dict(users=300 if quick else args.fanout_users,
                  rates=[500, 1000] if quick else args.rates,
                  warmupRate=300, warmupMs=2000, warmMs=1000,
                  windowMs=2000 if quick else 5000, drainMs=8000, satP99Ms=1000,
                  maxInflight=16, concurrency=100, maxSeconds=300)
    for name in args.scenarios:
        if name == "idle":
            levels = [200, 1000] if quick else args.idle_levels
            plan.append(("idle", "idle", dict(levels=levels, settleMs=3000,
                                              concurrency=args.idle_concurrency,
                                              maxSeconds=240), 1, VARIANTS))
        elif name == "fanout":
            plan.append(("fanout", "fanout", dict(fanout), 2, VARIANTS))
        elif name == "bigroom":
            plan.append(("bigroom", "bigroom",
                         dict(N=500 if quick else args.bigroom_sockets, M=10, warmM=10, reps=3,
                              burstTimeoutMs=60000, concurrency=100, maxSeconds=240),
                         1, VARIANTS))
        elif name == "tenk":
            for users, per_user in args.tenk_shapes:
                if quick:
                    users, per_user = max(1, users // 20), per_user
                plan.append((f"tenk-{users}x{per_user}", "fanout",
                             dict(users=users, socketsPerUser=per_user,
                                  rates=[500] if quick else args.tenk_rates,
                                  warmupRate=300, warmupMs=2000, warmMs=1000,
                                  windowMs=3000 if quick else 10000, drainMs=8000,
                                  satP99Ms=1000, maxInflight=16, concurrency=100,
                                  maxSeconds=360), 1, VARIANTS))
        elif name == "onewriter":  # diagnostic: (b) with every write sent to instance 0
            plan.append(("onewriter", "fanout", dict(fanout, writeTo=[0]), 2, ("ours",)))
        elif name == "relay":  # (b) without the store: ours publishes as the peers emit
            plan.append(("relay", "fanout", dict(fanout, publish="events"), 2, ("ours",)))
        elif name == "rest":
            plan.append(("rest", "fanout", dict(fanout, publish="rest", restMaxInflight=64,
                                                httpSockets=64), 2, ("ours",)))
        else:
            raise SystemExit(f"unknown scenario {name}")
    return plan


def run_one(variant: str, name: str, lg_scenario: str, cfg: dict[str, Any], instances: int,
            rnd: int, outdir: Path, redis: subprocess.Popen[Any], redis_port: int,
            secret: str, profile: dict[str, Any] | None = None) -> dict[str, Any] | None:
    tag = f"r{rnd}-{name}-{variant}" + ("-profile" if profile else "")
    servers = Servers(variant, instances, redis_port, secret, outdir, tag)
    sampler = LoadSampler()
    sampler.add(redis.pid)
    t0 = time.time()
    res: dict[str, Any] | None = None
    try:
        servers.start()
        for proc in servers.procs:
            sampler.add(proc.pid)
        sampler.start()
        res = drive(servers, sampler, variant, lg_scenario, cfg, outdir / f"{tag}.json",
                    redis, secret, profile, outdir / f"{tag}.folded")
    except Exception as exc:  # one failed run must not end the benchmark
        print(f"  {tag}: FAILED {exc!r}", flush=True)
    finally:
        codes = servers.stop()
        load = sampler.stop()
    if res is None:
        return None
    res.update(variant=variant, name=name, round=rnd, wall_s=round(time.time() - t0, 1),
               server_exit_codes=codes, machine=load)
    (outdir / f"{tag}.json").write_text(json.dumps(res) + "\n")
    print(f"  {tag}: {brief(res)}", flush=True)
    return res


def drive(servers: Servers, sampler: LoadSampler, variant: str, lg_scenario: str,
          cfg: dict[str, Any], out: Path, redis: subprocess.Popen[Any], secret: str,
          profile: dict[str, Any] | None, folded: Path) -> dict[str, Any] | None:
    """Run the load generator against started servers (and py-spy, for a profile)."""
    full = dict(cfg, scenario=lg_scenario, client="raw", proto="json",
                targets=servers.urls, serverPids=[p.pid for p in servers.procs],
                redisPid=redis.pid, out=str(out))
    if variant == "ours":
        full.update(server="ours", jwt={"secret": secret, "iss": JWT_ISS, "aud": JWT_AUD})
    # PEER_COMPARE_LOADGEN_NODE_ARGS: extra node flags for the load generator (diagnostics,
    # e.g. "--cpu-prof --cpu-prof-dir=/tmp/lgprof")
    node_args = os.environ.get("PEER_COMPARE_LOADGEN_NODE_ARGS", "").split()
    lg = subprocess.Popen(["node", *node_args, "loadgen.js", json.dumps(full)], cwd=PEER,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    spy: subprocess.Popen[Any] | None = None
    sampler.add(lg.pid)
    stderr_tail: list[str] = []
    phase = threading.Event()

    def read_stderr() -> None:
        assert lg.stderr is not None
        for line in lg.stderr:
            if "PHASE connected" in line:
                phase.set()
            stderr_tail.append(line)
            del stderr_tail[:-40]

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        pid0 = servers.procs[0].pid
        threads_cpu: list[tuple[float, dict[int, float]]] = []
        if profile and (profile.get("start") == "now" or phase.wait(timeout=cfg["maxSeconds"])):
            time.sleep(profile.get("delay", 3.0))
            threads_cpu.append((time.monotonic(), thread_cpu(pid0)))
            threading.Timer(profile["duration"], lambda: threads_cpu.append(
                (time.monotonic(), thread_cpu(pid0)))).start()
            spy = subprocess.Popen(
                [str(PYSPY), "record", "-p", str(servers.procs[0].pid), "-r", "200",
                 "-d", str(profile["duration"]), "--nonblocking", "--threads", "-f", "raw",
                 *(["--idle"] if profile.get("idle") else []),
                 "-o", str(folded)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lg.wait(timeout=cfg["maxSeconds"] + 60)
        except subprocess.TimeoutExpired:
            stop(lg, grace=5)
        reader.join(5)
        server_stats = servers.stats()
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=60)
    finally:
        if spy is not None and spy.poll() is None:
            stop(spy, grace=10)
        if lg.poll() is None:
            stop(lg, grace=5)
    if lg.returncode != 0 or not out.exists():
        print(f"  loadgen rc={lg.returncode} {''.join(stderr_tail)[-600:]}", flush=True)
        return None
    res: dict[str, Any] = json.loads(out.read_text())
    res["server_stats_after"] = server_stats
    if profile:
        res["profile_file"] = str(folded)
        if len(threads_cpu) == 2:
            (ta, a), (tb, b) = threads_cpu
            used = {tid: b[tid] - a.get(tid, 0.0) for tid in b}
            others = sorted((v for tid, v in used.items() if tid != pid0), reverse=True)
            res["instance0_thread_cores"] = {
                "window_s": round(tb - ta, 2),
                "main": round(used.get(pid0, 0.0) / (tb - ta), 3),
                "busiest_other (the SQLite writer)": round(others[0] / (tb - ta), 3)
                if others else 0.0,
                "rest": round(sum(others[1:]) / (tb - ta), 3)}
    return res


def brief(res: dict[str, Any]) -> str:
    scn = res["scenario"]
    bg = res.get("machine", {}).get("background_cores_mean")
    tail = f" [bg {bg} cores]"
    if res.get("variant") == "ours":
        tail += f" seq dup/gap {res.get('seq_dup')}/{res.get('seq_gap')}"
    if scn == "idle":
        return " ".join(f"{lv['level']}:{lv['server_rss_kb_per_conn']}kB/c,"
                        f"{lv['connect_rate_per_s']}c/s" for lv in res["levels"]) + tail
    if scn == "fanout":
        return " ".join(f"{x['target_events_per_s']}->{x['delivered_events_per_s']}ev/s "
                        f"p99={x['lat_ms']['p99']}{'*' if x['saturated'] else ''}"
                        for x in res["steps"]) + tail
    if scn == "bigroom":
        return (f"{res['median_deliveries_per_s']} deliv/s "
                + " ".join(str(b["deliveries_per_s"]) for b in res["bursts"]) + tail)
    return tail


# -- summary ---------------------------------------------------------------------------------


def med(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def held_rate(res: dict[str, Any]) -> float | None:
    ok = [s["target_events_per_s"] for s in res["steps"]
          if not s["saturated"] and s["lat_ms"]["p99"] is not None
          and s["lat_ms"]["p99"] <= HELD_P99_MS]
    return max(ok) if ok else 0


def sustained_rate(res: dict[str, Any]) -> float | None:
    ok = [s["target_events_per_s"] for s in res["steps"] if not s["saturated"]]
    return max(ok) if ok else 0


def overloaded_rate(res: dict[str, Any]) -> float | None:
    sat = [s for s in res["steps"] if s["saturated"]]
    return sat[0]["delivered_events_per_s"] if sat else None


def step_at(res: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((s for s in res["steps"] if s["target_events_per_s"] == rate), None)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["name"], r["variant"]), {})[r["round"]] = r
    rounds = sorted({r["round"] for r in runs})
    summary: dict[str, Any] = {"rounds": rounds}

    def per_round(name: str, variant: str, fn: Any) -> list[Any]:
        got = by.get((name, variant), {})
        return [fn(got[k]) if k in got else None for k in rounds]

    def ratios(name: str, fn: Any, a: str = "ours", b: str = "node",
               name_b: str | None = None) -> list[float | None]:
        va = per_round(name, a, fn)
        vb = per_round(name_b or name, b, fn)
        return [ratio(x, y) for x, y in zip(va, vb, strict=True)]

    names = sorted({r["name"] for r in runs})
    for name in names:
        scn = next(r["scenario"] for r in runs if r["name"] == name)
        block: dict[str, Any] = {"scenario": scn}
        variants = [v for v in VARIANTS if (name, v) in by]
        if scn == "idle":
            levels = sorted({lv["level"] for r in runs if r["name"] == name
                             for lv in r["levels"]})
            for level in levels:
                def kb(r: dict[str, Any], level: int = level) -> float | None:
                    return next((lv["server_rss_kb_per_conn"] for lv in r["levels"]
                                 if lv["level"] == level), None)

                def rate(r: dict[str, Any], level: int = level) -> float | None:
                    return next((lv["connect_rate_per_s"] for lv in r["levels"]
                                 if lv["level"] == level), None)

                def fails(r: dict[str, Any], level: int = level) -> float | None:
                    return next((lv["new_fail"] for lv in r["levels"]
                                 if lv["level"] == level), None)

                entry: dict[str, Any] = {}
                for v in variants:
                    entry[v] = {"kb_per_conn": per_round(name, v, kb),
                                "connect_rate": per_round(name, v, rate),
                                "connect_fail": per_round(name, v, fails)}
                    entry[v]["kb_per_conn_median"] = med(entry[v]["kb_per_conn"])
                    entry[v]["connect_rate_median"] = med(entry[v]["connect_rate"])
                for other in ("node", "py"):
                    if other in variants and "ours" in variants:
                        entry[f"memory_ours_over_{other}"] = med(ratios(name, kb, b=other))
                        entry[f"connect_ours_over_{other}"] = med(ratios(name, rate, b=other))
                block[str(level)] = entry
        elif scn == "fanout":
            for v in variants:
                block[v] = {
                    "held_p99_100ms": per_round(name, v, held_rate),
                    "sustained": per_round(name, v, sustained_rate),
                    "overloaded_delivered": per_round(name, v, overloaded_rate),
                    "connect_fail": per_round(name, v, lambda r: r["connect_fail"]),
                }
                for key in ("held_p99_100ms", "sustained", "overloaded_delivered"):
                    block[v][key + "_median"] = med(block[v][key])
                rates = sorted({s["target_events_per_s"] for r in by[(name, v)].values()
                                for s in r["steps"]})
                steps = {}
                for rate in rates:
                    def pick(r: dict[str, Any], key: str, rate: int = rate) -> Any:
                        s = step_at(r, rate)
                        if s is None:
                            return None
                        if key in ("p50", "p95", "p99", "max"):
                            return s["lat_ms"][key]
                        if key.startswith("ack_"):
                            return s.get("ack_ms", {}).get(key[4:])
                        if key == "cpu_us":
                            return s["cpu"]["server_cpu_us_per_delivery"]
                        if key == "server_cpu_pct":
                            return s["cpu"]["server_cpu_pct"]
                        if key == "background":
                            return s["cpu"].get("background_cores")
                        return s[key]
                    steps[str(rate)] = {
                        key: per_round(name, v, lambda r, key=key: pick(r, key))
                        for key in ("p50", "p95", "p99", "max", "ack_p50", "ack_p99",
                                    "delivered_events_per_s", "saturated", "cpu_us",
                                    "server_cpu_pct", "background", "missing_after_drain")}
                block[v]["steps"] = steps
            if "ours" in variants:
                for other in ("node", "py"):
                    if other in variants:
                        block[f"held_ours_over_{other}"] = med(
                            ratios(name, held_rate, b=other))
                        block[f"overloaded_ours_over_{other}"] = med(
                            ratios(name, overloaded_rate, b=other))
                if name in ("rest", "onewriter", "relay"):  # against the same round's (b)
                    for other in ("ours", "node"):
                        if ("fanout", other) in by:
                            block[f"held_rest_over_fanout_{other}"] = med(ratios(
                                name, held_rate, a="ours", b=other, name_b="fanout"))
        elif scn == "bigroom":
            for v in variants:
                block[v] = {
                    "deliveries_per_s": per_round(name, v, lambda r: r["median_deliveries_per_s"]),
                    "cpu_us_per_delivery": per_round(name, v, lambda r: med(
                        [b["cpu"]["server_cpu_us_per_delivery"] for b in r["bursts"]])),
                    "complete": per_round(name, v, lambda r: all(b["complete"]
                                                                  for b in r["bursts"])),
                }
                block[v]["deliveries_per_s_median"] = med(block[v]["deliveries_per_s"])
                block[v]["cpu_us_per_delivery_median"] = med(block[v]["cpu_us_per_delivery"])
            for other in ("node", "py"):
                if other in variants and "ours" in variants:
                    block[f"deliveries_ours_over_{other}"] = med(ratios(
                        name, lambda r: r["median_deliveries_per_s"], b=other))
        summary[name] = block
    background = [r.get("machine", {}).get("background_cores_mean") for r in runs]
    summary["background_cores"] = {
        "median_of_runs": med(background),
        "max_of_runs": max((b for b in background if b is not None), default=None),
        "max_1s": max((r.get("machine", {}).get("background_cores_max") or 0 for r in runs),
                      default=None),
    }
    summary["correctness"] = {
        "ours_seq_dup": sum(r.get("seq_dup", 0) for r in runs if r["variant"] == "ours"),
        "ours_seq_gap": sum(r.get("seq_gap", 0) for r in runs if r["variant"] == "ours"),
        "ours_other_events": dict(sum((Counter(r.get("other_events", {})) for r in runs
                                       if r["variant"] == "ours"), Counter())),
        "bad_packets": sum(r.get("bad_packets", 0) for r in runs),
        "closed_after_open": {v: sum(r.get("closed_after_open", 0) for r in runs
                                     if r["variant"] == v) for v in VARIANTS},
    }
    return summary


# -- markdown --------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int):
        if digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def rounds_text(values: list[Any], digits: int = 0) -> str:
    return " / ".join(fmt(v, digits) for v in values)


def title(name: str) -> str:
    if name.startswith("tenk-"):
        users, per_user = name[5:].split("x")
        return (f"(d) {int(users) * int(per_user):,} sockets on one instance "
                f"({int(users):,} users x {per_user}), writes flowing")
    return {
        "fanout": "(b) Fan-out: 2 instances + Redis, 1,000 users with a socket on each",
        "onewriter": "(b') Diagnostic: (b) with every write sent to instance 0 (ours only)",
        "relay": "(b'') (b) without the store: ours publishes each event as the peers emit "
                 "(ours only; ratios against the round's (b))",
        "rest": "(e) (b) through the real REST write path: one POST /api/tasks per write "
                "(ours only)",
    }.get(name, name)


def markdown(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    idle = summary.get("idle")
    if idle:
        lines += ["### (a) Idle sockets: RSS per socket and connect rate (1 instance)", "",
                  "| sockets | Node kB/socket | stock py | ours | ours/Node | ours/stock | "
                  "Node connects/s | stock py | ours | ours/Node | ours/stock |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for level, e in idle.items():
            if not level.isdigit():
                continue
            lines.append(
                f"| {int(level):,} | " + " | ".join(
                    fmt(e.get(v, {}).get("kb_per_conn_median"), 1) for v in VARIANTS)
                + f" | **{fmt(e.get('memory_ours_over_node'), 2)}** | "
                f"{fmt(e.get('memory_ours_over_py'), 2)} | " + " | ".join(
                    fmt(e.get(v, {}).get("connect_rate_median")) for v in VARIANTS)
                + f" | **{fmt(e.get('connect_ours_over_node'), 2)}** | "
                f"{fmt(e.get('connect_ours_over_py'), 2)} |")
        lines += ["", "Per round (kB/socket; connects/s):", ""]
        for level, e in idle.items():
            if level.isdigit():
                lines.append(f"- {int(level):,}: " + "; ".join(
                    f"{v} {rounds_text(e[v]['kb_per_conn'], 1)} kB, "
                    f"{rounds_text(e[v]['connect_rate'])}/s" for v in VARIANTS if v in e))
        lines.append("")
    for name in [n for n in summary if isinstance(summary[n], dict)
                 and summary[n].get("scenario") == "fanout"]:
        block = summary[name]
        variants = [v for v in VARIANTS if v in block]
        lines += [f"### {title(name)}", "",
                  "| variant | held at p99 ≤ 100 ms, ev/s (per round) | median | "
                  "first saturated step: delivered ev/s (per round) | median |",
                  "|---|---|---|---|---|"]
        for v in variants:
            b = block[v]
            lines.append(f"| {v} | {rounds_text(b['held_p99_100ms'])} | "
                         f"**{fmt(b['held_p99_100ms_median'])}** | "
                         f"{rounds_text(b['overloaded_delivered'])} | "
                         f"**{fmt(b['overloaded_delivered_median'])}** |")
        ratio_keys = [k for k in block if "_over_" in k]
        if ratio_keys:
            lines += ["", "Ratios (median of per-round ratios): " + "; ".join(
                f"{k} = **{fmt(block[k], 2)}**" for k in ratio_keys)]
        lines += ["", "Latency p50 / p99 ms (median of rounds), delivered ev/s, server CPU "
                      "µs per delivery, saturated rounds:", "",
                  "| offered ev/s | " + " | ".join(variants) + " |",
                  "|---|" + "---|" * len(variants)]
        rates = sorted({int(r) for v in variants for r in block[v]["steps"]})
        for rate in rates:
            cells = []
            for v in variants:
                st = block[v]["steps"].get(str(rate))
                if not st:
                    cells.append("-")
                    continue
                sat = sum(1 for x in st["saturated"] if x)
                ran = sum(1 for x in st["saturated"] if x is not None)
                cell = (f"{fmt(med(st['p50']), 1)} / {fmt(med(st['p99']), 1)}; "
                        f"{fmt(med(st['delivered_events_per_s']))} ev/s; "
                        f"{fmt(med(st['cpu_us']))} µs")
                if any(a is not None for a in st["ack_p50"]) and v == "ours":
                    cell += (f"; ack {fmt(med(st['ack_p50']), 1)} / "
                             f"{fmt(med(st['ack_p99']), 1)}")
                if sat:
                    cell += f" (sat {sat}/{ran})"
                elif ran < len(st["saturated"]):
                    cell += f" ({ran} rounds)"
                cells.append(cell)
            lines.append(f"| {rate:,} | " + " | ".join(cells) + " |")
        lines.append("")
    big = summary.get("bigroom")
    if big:
        lines += ["### (c) One big room: 5,000 sockets, one instance", "",
                  "| variant | deliveries/s (per round) | median | server CPU µs/delivery |",
                  "|---|---|---|---|"]
        for v in VARIANTS:
            if v in big:
                lines.append(f"| {v} | {rounds_text(big[v]['deliveries_per_s'])} | "
                             f"**{fmt(big[v]['deliveries_per_s_median'])}** | "
                             f"{fmt(big[v]['cpu_us_per_delivery_median'], 1)} |")
        lines += ["", "Ratios: " + "; ".join(f"{k} = **{fmt(big[k], 2)}**"
                                             for k in big if "_over_" in k), ""]
    bg = summary.get("background_cores", {})
    c = summary.get("correctness", {})
    lines += [f"Background load (other work on the 2 cores, /proc/stat minus our processes): "
              f"median of runs {fmt(bg.get('median_of_runs'), 2)} cores, worst run mean "
              f"{fmt(bg.get('max_of_runs'), 2)}, worst second {fmt(bg.get('max_1s'), 2)}.",
              "",
              f"Correctness (ours): seq duplicates {c.get('ours_seq_dup')}, gaps "
              f"{c.get('ours_seq_gap')}, other events {c.get('ours_other_events')}; "
              f"bad packets {c.get('bad_packets')}; sockets closed by a server "
              f"{c.get('closed_after_open')}.", ""]
    return "\n".join(lines)


# -- profiles --------------------------------------------------------------------------------

STAGES = (  # (stage, substrings of a frame's file), matched from the leaf upwards
    ("auth (JWT decode, revocation check)", ("realtime/auth.py", "jwt/")),
    ("store (SQLite, its threads and hand-offs)", ("store/",)),
    ("broker (Redis publish/receive, orjson)", ("realtime/broker/", "redis/")),
    ("relay + delivery (feeds, frame writes)", ("realtime/sockets.py", "realtime/delivery.py",
                                                 "realtime/feeds.py")),
    ("socket.io / engine.io (handshakes, pings)", ("socketio/", "engineio/")),
    ("write service + validation", ("realtime/tasks.py", "realtime/validation.py")),
    ("REST handlers + bench route", ("handlers/",)),
)


IDLE_LEAVES = (  # leaf frames of a thread waiting for work (py-spy may still count them)
    "GroupCommitWriter._run (store/sqlite_writer.py",  # blocked in SimpleQueue.get
    "_worker (concurrent/futures/thread.py",
)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process (the main thread's tid is the pid)."""
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as h:
                fields = h.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        location = frame.rsplit("(", 1)[-1]
        for stage, needles in STAGES:
            if any(n in location for n in needles):
                return stage
    return "aiohttp / uvloop / asyncio (HTTP parsing, loop, other)"


def analyse_profile(path: Path, top: int = 25, wallclock: bool = False) -> dict[str, Any] | None:
    """Stage shares of the sampled stacks. wallclock (py-spy --idle): keep waiting frames
    too, and report each thread's top leaf frames (where its wall-clock time goes)."""
    if not path.exists():
        return None
    stages: Counter[str] = Counter()
    main_stages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    per_thread: dict[str, Counter[str]] = {}
    idle = 0
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith("thread") else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES) and not wallclock:
            idle += count
            continue
        per_thread.setdefault(thread.split(": ")[-1], Counter())[frames[-1]] += count
        total += count
        threads[thread] += count
        stage = stage_of(frames)
        stages[stage] += count
        if "MainThread" in thread:
            main_stages[stage] += count
        leaf[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count

    def pct(counter: Counter[str], n: int | None = None) -> list[tuple[float, str]]:
        return [(round(100 * c / total, 1), k) for k, c in counter.most_common(n)]

    main_total = sum(main_stages.values()) or 1
    return {"file": str(path), "samples": total, "idle_samples_dropped": idle,
            "stages_pct": pct(stages),
            "main_thread_stages_pct": [(round(100 * c / main_total, 1), k)
                                       for k, c in main_stages.most_common()],
            "threads_pct": pct(threads), "self_pct": pct(leaf, top),
            "thread_top_leaves_pct": {
                name: [(round(100 * c / sum(leaves.values()), 1), k)
                       for k, c in leaves.most_common(8)]
                for name, leaves in per_thread.items() if sum(leaves.values()) >= 20},
            "inclusive_pct": pct(inclusive, top + 15)} if total else None


def markdown_profiles(profiles: list[dict[str, Any]]) -> str:
    lines = ["### Profiles of ours (py-spy 200 Hz on instance 0, 10 s; not used for figures)", "",
             "| load | delivered ev/s, p99 ms | instance 0 CPU cores: main thread / SQLite "
             "writer / other threads | main thread, share of samples by stage |",
             "|---|---|---|---|"]
    for r in profiles:
        p = r.get("profile") or {}
        cores = r.get("instance0_thread_cores") or {}
        if r["scenario"] == "bigroom":
            load = f"{r['median_deliveries_per_s']:,} deliveries/s"
        elif r["scenario"] == "idle":
            load = f"connecting at {r['levels'][0]['connect_rate_per_s']}/s"
        else:
            st = r["steps"][-1] if r.get("steps") else {}
            load = (f"{st.get('delivered_events_per_s')} ev/s, p99 "
                    f"{st.get('lat_ms', {}).get('p99')}")
        stages = "; ".join(f"{pct}% {k}" for pct, k in p.get("main_thread_stages_pct", [])
                           if pct >= 1)
        lines.append(f"| {r['name']} | {load} | {cores.get('main')} / "
                     f"{cores.get('busiest_other (the SQLite writer)')} / {cores.get('rest')} "
                     f"| {stages} |")
    for r in profiles:
        p = r.get("profile") or {}
        for thread, leaves in (p.get("thread_top_leaves_pct") or {}).items():
            lines.append(f"- {r['name']}, thread {thread}, top leaf frames: " + "; ".join(
                f"{pct}% {k}" for pct, k in leaves[:6]))
    return "\n".join(lines) + "\n"


def run_profiles(args: argparse.Namespace, outdir: Path, redis: subprocess.Popen[Any],
                 redis_port: int, secret: str) -> list[dict[str, Any]]:
    """py-spy on ours (instance 0) for fixed loads; the sampler costs CPU, so these
    runs are not used for any figure."""
    one_step = dict(warmupRate=300, warmupMs=2000, warmMs=1000, windowMs=12000, drainMs=8000,
                    satP99Ms=100000, maxInflight=16, concurrency=100, maxSeconds=200)
    after_phase = {"duration": 10, "delay": 3.5}
    jobs: list[tuple[str, str, dict[str, Any], int, dict[str, Any]]] = [
        ("fanout-bench-1000", "fanout", dict(one_step, users=1000, rates=[1000]), 2,
         after_phase),
        ("fanout-rest-1000", "fanout", dict(one_step, users=1000, rates=[1000],
                                            publish="rest", restMaxInflight=64,
                                            httpSockets=64), 2, after_phase),
        ("fanout-bench-5000", "fanout", dict(one_step, users=1000, rates=[5000]), 2,
         after_phase),
        ("fanout-relay-15000", "fanout", dict(one_step, users=1000, rates=[15000],
                                              publish="events"), 2, after_phase),
        # the same, wall-clock (--idle): where the SQLite writer thread waits
        ("fanout-bench-5000-wallclock", "fanout", dict(one_step, users=1000, rates=[5000]), 2,
         dict(after_phase, idle=True)),
        ("bigroom", "bigroom", dict(N=5000, M=10, warmM=10, reps=20, burstTimeoutMs=60000,
                                    concurrency=100, maxSeconds=200), 1, after_phase),
        ("tenk-10000x1-1000", "fanout", dict(one_step, users=10000, rates=[1000]), 1,
         after_phase),
        # handshakes: 10,000 sockets connecting, 100 in flight
        ("connect-10000", "idle", dict(levels=[10000], settleMs=3000, concurrency=100,
                                       maxSeconds=240), 1,
         {"duration": 6, "delay": 1.5, "start": "now"}),
    ]
    out = []
    for name, lg_scenario, cfg, instances, how in jobs:
        if args.profile_jobs and name not in args.profile_jobs:
            continue
        res = run_one("ours", name, lg_scenario, cfg, instances, 0, outdir, redis, redis_port,
                      secret, profile=how)
        if res is None:
            continue
        res["profile"] = analyse_profile(Path(res["profile_file"]),
                                         wallclock=bool(how.get("idle")))
        out.append(res)
        p = res["profile"]
        if p:
            print(f"  profile {name}: {p['samples']} samples; threads (cores) "
                  f"{res.get('instance0_thread_cores')}; main-thread stages: " + "; ".join(
                      f"{s}% {k}" for s, k in p["main_thread_stages_pct"]), flush=True)
    return out


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help=f"comma list of {', '.join(ALL_SCENARIOS)}")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list of node, py, ours (run order within a scenario)")
    ap.add_argument("--idle-levels", default="1000,5000,10000")
    ap.add_argument("--idle-concurrency", type=int, default=100,
                    help="handshakes in flight in (a) (the peer's method: 100)")
    ap.add_argument("--fanout-users", type=int, default=1000)
    ap.add_argument("--rates", default=",".join(map(str, LADDER)),
                    help="the offered-rate ladder of (b) and (e), events/s")
    ap.add_argument("--bigroom-sockets", type=int, default=5000)
    ap.add_argument("--tenk-shapes", default="10000x1,1000x10",
                    help="users x sockets per user for (d)")
    ap.add_argument("--tenk-rates", default="1000,2000")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, py-spy profiles of ours (not used for figures)")
    ap.add_argument("--profile-jobs", default="",
                    help="comma list: only these profile jobs (default all)")
    ap.add_argument("--ours-switch-interval", type=float, default=0.0, metavar="SECONDS",
                    help="diagnostic: start ours with sys.setswitchinterval(SECONDS)")
    ap.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                    help="diagnostic: one more environment setting for ours (repeatable)")
    ap.add_argument("--max-minutes", type=float, default=120)
    ap.add_argument("--quiet-wait", type=float, default=5, metavar="MINUTES",
                    help="before each round wait up to this long for the machine's busy CPU "
                         "to fall below --quiet-threshold (0: do not wait)")
    ap.add_argument("--quiet-threshold", type=float, default=0.5, metavar="CORES")
    ap.add_argument("--out", help="results JSON (default bench/results/peer-compare-<stamp>.json)")
    ap.add_argument("--summarize", metavar="JSON", help="print the tables of an earlier run")
    args = ap.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.profile_jobs = [s for s in args.profile_jobs.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    args.idle_levels = [int(x) for x in args.idle_levels.split(",")]
    args.rates = [int(x) for x in args.rates.split(",")]
    args.tenk_rates = [int(x) for x in args.tenk_rates.split(",")]
    args.tenk_shapes = [tuple(int(n) for n in s.split("x")) for s in args.tenk_shapes.split(",")]
    return args


def wait_quiet(max_wait_s: float, threshold: float, window: float = 5.0) -> dict[str, Any]:
    """Before a round: wait (bounded) until other work leaves the box mostly idle."""
    t0 = time.monotonic()
    samples = []
    while True:
        before = machine_busy()
        time.sleep(window)
        load = (machine_busy() - before) / window
        samples.append(round(load, 2))
        if load < threshold or time.monotonic() - t0 > max_wait_s:
            break
    return {"waited_s": round(time.monotonic() - t0, 1), "busy_cores_samples": samples[-20:]}


def git_facts() -> dict[str, Any]:
    def git(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_server_files": git("status", "--porcelain", "--", "realtime", "handlers",
                                      "store").splitlines()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global SWITCH_INTERVAL
    SWITCH_INTERVAL = args.ours_switch_interval
    meta_extra: dict[str, Any] = {}
    if SWITCH_INTERVAL:
        meta_extra["ours_switch_interval"] = SWITCH_INTERVAL
    for item in args.ours_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--ours-env: expected KEY=VALUE, got {item!r}")
        OURS_ENV[key] = value
    if OURS_ENV:
        meta_extra["ours_env"] = dict(OURS_ENV)
    if args.summarize:
        data = json.loads(Path(args.summarize).read_text())
        if data.get("runs"):
            print(markdown(summarize(data["runs"])))
        if data.get("profiles"):
            print(markdown_profiles(data["profiles"]))
        return 0
    setup_dependencies()
    raise_nofile()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_json = Path(args.out) if args.out else RESULTS / f"peer-compare-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="peer-compare-"))
    secret = secrets.token_urlsafe(48)
    redis, redis_port = start_redis(workdir)
    print(f"redis pid {redis.pid} on 127.0.0.1:{redis_port}; work dir {workdir}; "
          f"results -> {out_json}", flush=True)
    deadline = time.time() + args.max_minutes * 60
    plan = scenario_plan(args)
    runs: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"started": stamp, "argv": sys.argv[1:], "git": git_facts(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "node": subprocess.run(["node", "--version"], capture_output=True,
                                   text=True).stdout.strip(),
            "python": sys.version.split()[0],
            # an A/B run's other code, put first on the servers' path
            "pythonpath": os.environ.get("PYTHONPATH", ""), **meta_extra}
    whole = LoadSampler().start()
    try:
        for rnd in range(1, args.rounds + 1):
            if args.quiet_wait > 0:
                quiet = wait_quiet(args.quiet_wait * 60, args.quiet_threshold)
                meta.setdefault("quiet_wait", {})[str(rnd)] = quiet
                print(f"round {rnd}: waited {quiet['waited_s']} s for a quieter box "
                      f"(busy cores {quiet['busy_cores_samples'][-3:]})", flush=True)
            for name, lg_scenario, cfg, instances, variants in plan:
                for v in [v for v in args.variants if v in variants]:
                    if time.time() > deadline:
                        print("max-minutes reached, stopping", flush=True)
                        raise StopIteration
                    res = run_one(v, name, lg_scenario, cfg, instances, rnd, workdir, redis,
                                  redis_port, secret)
                    if res is not None:
                        runs.append(res)
                    time.sleep(1)
        if args.profile:
            profiles = run_profiles(args, workdir, redis, redis_port, secret)
    except (StopIteration, KeyboardInterrupt):
        pass
    finally:
        stop(redis)
        meta["machine_whole_run"] = whole.stop()
        summary = summarize(runs) if runs else {}
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs,
                                        "profiles": profiles}, indent=1) + "\n")
        print(f"done: {len(runs)} runs -> {out_json} (logs in {workdir})", flush=True)
    if runs:
        print(markdown(summary))
    if profiles:
        print(markdown_profiles(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
