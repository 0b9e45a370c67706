#!/usr/bin/env python3
"""Issue 5: the product's real write path, end to end, on each store.

REST `POST /api/tasks` / `PATCH` -> validate -> store commit (seq) -> broker -> relay ->
Socket.IO frame -> client, driven by the product's own load harness (`taskmaster loadtest
--via rest`), on three deployments, each started fresh on 127.0.0.1 and stopped by pid:

  embedded       one instance, SQLite file, in-process broker
  sqlite-redis   two instances sharing one SQLite file, our own redis-server
  mongodb-redis  two instances on one MongoDB database (SecantusDB, the Python MongoDB
                 wire-protocol server of the test suite; MONGODB_URI for a real mongod),
                 our own redis-server

For each: a short warm-up that registers the users (their tokens are reused, so the
measured runs' store writes are task writes only), then a ladder of write rates. Per rate:
achieved rate, REST ack and write -> delivery percentiles, the loadtest's split of one
delivery in 8 at the envelope's `ts` (send -> ts, ts -> delivery), the servers' own means
from /metrics (store write call, ts -> relay), and the CPU per write of every process:
each instance, Redis, SecantusDB. Every loadtest run holds /tmp/bench.lock.

  .venv/bin/python bench/write_path.py                 # ~6-8 min
  .venv/bin/python bench/write_path.py --quick         # two short steps per layout
  .venv/bin/python bench/write_path.py --summarize bench/results/write-path-<stamp>.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from peer_compare import git_facts, wait_quiet  # noqa: E402

from mongo_server import MongoServer, database_url, drop_database, ping  # noqa: E402
from processes import TASKMASTER, Instance  # noqa: E402
from redis_server import RedisProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LAYOUTS = ("embedded", "sqlite-redis", "mongodb-redis")
LOCK = "/tmp/bench.lock"
HALF_MS = 0.5
# Server-side means read from /metrics before and after each run (histogram sum / count).
SERIES = {
    "store_write": re.compile(r'^taskmaster_store_seconds_(sum|count)\{kind="write"\} (\S+)$'),
    "ts_to_relay": re.compile(r"^taskmaster_delivery_lag_seconds_(sum|count) (\S+)$"),
}


@dataclass
class Deployment:
    layout: str
    instances: list[Instance]
    others: dict[str, int] = field(default_factory=dict)  # label -> pid (redis, database)
    store: str = ""


def scrape(instance: Instance) -> dict[str, float]:
    with urllib.request.urlopen(instance.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name, pattern in SERIES.items():
            found = pattern.match(line)
            if found:
                out[f"{name}_{found.group(1)}"] = float(found.group(2))
    return out


def server_means(before: list[dict[str, float]], after: list[dict[str, float]]
                 ) -> dict[str, float | None]:
    """Mean (ms) of each series over the run, all instances together."""
    out: dict[str, float | None] = {}
    for name in SERIES:
        total = sum(a.get(f"{name}_sum", 0) - b.get(f"{name}_sum", 0)
                    for b, a in zip(before, after, strict=True))
        count = sum(a.get(f"{name}_count", 0) - b.get(f"{name}_count", 0)
                    for b, a in zip(before, after, strict=True))
        mean = total / count * 1000 if count else None
        if mean is not None and name == "ts_to_relay":
            mean -= HALF_MS  # the server reads `ts`, truncated to the ms, as its start
        out[f"{name}_mean_ms"] = round(mean, 2) if mean is not None else None
        out[f"{name}_count"] = count
    return out


@contextlib.contextmanager
def deploy(layout: str, workdir: Path, secret: str) -> Iterator[Deployment]:
    """Start one layout's processes; stop every one of them by pid on the way out."""
    stack = contextlib.ExitStack()
    with stack:
        env: dict[str, str] = {"JWT_SECRET": secret}
        others: dict[str, int] = {}
        count = 1 if layout == "embedded" else 2
        store = f"sqlite:///{workdir}/{layout}.db"
        if layout != "embedded":
            redis = RedisProcess()
            redis.start()
            stack.callback(redis.stop)
            assert redis.proc is not None
            others["redis"] = redis.proc.pid
            env["REDIS_URL"] = redis.url + "?prefix=wp" + secrets.token_hex(4)
        if layout == "mongodb-redis":
            given = os.environ.get("MONGODB_URI", "").strip()
            if given:
                ping(given)
                uri = given
            else:
                server = MongoServer()
                uri = server.start()
                stack.callback(server.stop)
                assert server.process is not None
                others["secantusdb"] = server.process.pid
            database = "tm_bench_" + secrets.token_hex(6)
            stack.callback(drop_database, uri, database)
            store = database_url(uri, database)
        env["TASKMASTER_STORE_URL"] = store
        instances = [Instance(workdir, env, name=f"{layout}-{i}") for i in range(count)]
        for instance in instances:
            stack.callback(instance.stop)
            instance.start(wait=False)
        for instance in instances:
            instance.wait_until("/api/ready", 200, timeout=60)
        yield Deployment(layout, instances, others, store.split("://")[0])


def loadtest(dep: Deployment, args: argparse.Namespace, rate: float, duration: float,
             users_arg: list[str], out: Path) -> dict[str, Any]:
    pids = [str(i.proc.pid) for i in dep.instances if i.proc is not None]
    pids += [str(pid) for pid in dep.others.values()]
    command = ["flock", LOCK, TASKMASTER, "loadtest", "--via", "rest", "--quiet",
               "--url", *[i.url for i in dep.instances],
               "--sockets", str(args.sockets), "--users", str(args.users),
               "--rate", str(rate), "--duration", str(duration), *users_arg,
               "--json", str(out), "--seed", "5"]
    for pid in pids:
        command += ["--server-pid", pid]
    # bounded: the harness stops itself; this is the backstop (plus time spent on the lock)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=duration + 900)
    if not out.exists():
        raise RuntimeError(f"loadtest wrote no report ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(out.read_text())
    report["table"] = done.stdout[-4000:]
    return report


def step_of(dep: Deployment, report: dict[str, Any], means: dict[str, float | None]
            ) -> dict[str, Any]:
    w, lat, stages = report["writes"], report["latency_ms"], report["stages_ms"]
    servers = report["servers"]
    n = len(dep.instances)
    labels = [f"instance {i}" for i in range(n)] + list(dep.others)
    cpu = {label: {"cpu_us_per_write": s.get("cpu_us_per_write"),
                   "cpu_cores_writes": s.get("cpu_cores_writes"),
                   "rss_max_mib": s.get("rss_max_mib")}
           for label, s in zip(labels, servers, strict=True)}
    machine = report["machine"]
    return {
        "offered": w["offered_rate"], "achieved": w["achieved_rate"], "acked": w["acked"],
        "duration": report["options"]["duration"],
        "errors": w["errors"], "unanswered": w["unanswered"],
        "ack_ms": w["ack_latency_ms"], "delivery_ms": lat,
        "send_to_ts_ms": stages["send_to_ts"], "ts_to_delivery_ms": stages["ts_to_delivery"],
        "sample_every": stages["sample_every"], "server_means": means,
        "deliveries": report["deliveries"], "drain": report["drain"], "cpu": cpu,
        "client": {"cpu_cores_writes": report["client"].get("cpu_cores_writes"),
                   "loop_lag_ms": report["client"].get("event_loop_lag_ms")},
        "machine": {k: machine.get(k) for k in ("busy_cores_writes",
                                                 "other_processes_cores_writes",
                                                 "cpu_stall_share_writes", "loadavg_start")},
        "ok": report["ok"], "correctness_failures": {
            k: v for k, v in ((report.get("correctness") or {}).get("failures") or {}).items()
            if v},
        "run_id": report["run_id"],
    }


def run_layout(layout: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    quiet = wait_quiet(args.max_wait, 0.5)
    secret = secrets.token_hex(16)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    steps: list[dict[str, Any]] = []
    with deploy(layout, workdir, secret) as dep:
        tokens = workdir / f"{layout}-tokens.jsonl"
        # Warm-up: registers the users (tokens reused below), warms every process.
        warm = loadtest(dep, args, 20, 3, ["--register", "--save-tokens", str(tokens)],
                        workdir / f"{layout}-warm.json")
        print(f"{layout}: warm-up {'ok' if warm['ok'] else 'FAILED'}", flush=True)
        for rate in args.rates:
            before = [scrape(i) for i in dep.instances]
            report = loadtest(dep, args, rate, args.duration, ["--tokens-file", str(tokens)],
                              workdir / f"{layout}-{rate}.json")
            after = [scrape(i) for i in dep.instances]
            step = step_of(dep, report, server_means(before, after))
            steps.append(step)
            print(f"{layout} {rate}/s: {brief(step)}", flush=True)
            if saturated(step):  # the next rates would only queue up more
                print(f"{layout}: saturated at {rate}/s; the ladder stops here", flush=True)
                break
        pids = {"instances": [i.proc.pid for i in dep.instances if i.proc], **dep.others}
    return {"layout": layout, "store": dep.store, "instances": len(dep.instances),
            "pids": pids, "started": started, "quiet_wait": quiet, "steps": steps}


# -- summary ---------------------------------------------------------------------------------


def saturated(step: dict[str, Any]) -> bool:
    """Past what the deployment sustains: behind the offered rate, failing, or ack p99
    above a second (writes queue)."""
    return (step["acked"] < 0.9 * step["offered"] * (step.get("duration") or 0)
            or bool(step["errors"]) or (step["ack_ms"]["p99"] or 0) > 1000)


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def brief(step: dict[str, Any]) -> str:
    return (f"{_f(step['achieved'], 0)}/s, ack p50/p99 {_f(step['ack_ms']['p50'])}/"
            f"{_f(step['ack_ms']['p99'])} ms, delivery {_f(step['delivery_ms']['p50'])}/"
            f"{_f(step['delivery_ms']['p99'])} ms, {'ok' if step['ok'] else 'FAILED'}")


def shares(step: dict[str, Any]) -> dict[str, float | None]:
    """The mean write -> delivery cut into stages (ms): client-measured send -> ts and
    ts -> delivery, the latter cut again with the servers' means: the store write call
    (queue + commit), then commit -> relay (publish, broker), then relay -> client."""
    to_ts = step["send_to_ts_ms"].get("mean")
    after_ts = step["ts_to_delivery_ms"].get("mean")
    means = step["server_means"]
    store, relay = means.get("store_write_mean_ms"), means.get("ts_to_relay_mean_ms")
    if to_ts is None or after_ts is None:
        return {}
    total = to_ts + after_ts
    out: dict[str, float | None] = {"total": total, "send_to_ts": to_ts,
                                    "ts_to_delivery": after_ts}
    if store is not None and relay is not None:
        out["store_write"] = store
        out["commit_to_relay"] = relay - store
        out["relay_to_client"] = after_ts - relay
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| layout | offered /s | achieved /s | ack p50 / p99 | write -> delivery p50 / p99 "
             "| send -> ts p50 / p99 | ts -> delivery p50 / p99 | correct |",
             "|---|---|---|---|---|---|---|---|"]
    for run in result["layouts"]:
        for s in run["steps"]:
            lines.append(
                f"| {run['layout']} | {_f(s['offered'], 0)} | {_f(s['achieved'], 0)} | "
                f"{_f(s['ack_ms']['p50'])} / {_f(s['ack_ms']['p99'])} | "
                f"{_f(s['delivery_ms']['p50'])} / {_f(s['delivery_ms']['p99'])} | "
                f"{_f(s['send_to_ts_ms']['p50'])} / {_f(s['send_to_ts_ms']['p99'])} | "
                f"{_f(s['ts_to_delivery_ms']['p50'])} / {_f(s['ts_to_delivery_ms']['p99'])} | "
                f"{'yes' if s['ok'] else 'NO'} |")
    lines += ["", "Mean write -> delivery, by stage (ms, and share of the mean):", "",
              "| layout | offered /s | mean | send -> ts | ts -> store answered | "
              "commit -> relay | relay -> client | ack mean |",
              "|---|---|---|---|---|---|---|---|"]
    for run in result["layouts"]:
        for s in run["steps"]:
            sh = shares(s)
            total = sh.get("total")

            def cell(key: str, sh: dict[str, float | None] = sh,
                     total: float | None = total) -> str:
                value = sh.get(key)
                if value is None or not total:
                    return "-"
                return f"{value:.2f} ({value / total:.0%})"

            lines.append(f"| {run['layout']} | {_f(s['offered'], 0)} | {_f(total, 2)} | "
                         f"{cell('send_to_ts')} | {cell('store_write')} | "
                         f"{cell('commit_to_relay')} | {cell('relay_to_client')} | "
                         f"{_f(s['ack_ms']['mean'], 2)} |")
    lines += ["", "CPU per write in µs (all CPU from the first write until every delivery "
              "arrived, over the writes acked; in brackets the marginal cost from the previous "
              "rate: extra cores over extra writes/s), and the background:", "",
              "| layout | offered /s | instance 0 | instance 1 | redis | secantusdb | "
              "load generator cores | other processes (cores) |",
              "|---|---|---|---|---|---|---|---|"]
    for run in result["layouts"]:
        previous: dict[str, Any] | None = None
        for s in run["steps"]:
            def us(label: str, s: dict[str, Any] = s,
                   previous: dict[str, Any] | None = previous) -> str:
                now = s["cpu"].get(label) or {}
                text = _f(now.get("cpu_us_per_write"), 0)
                if previous is not None and label in previous["cpu"]:
                    # cores = CPU per write x writes/s (finer than the rounded core figures)
                    before = previous["cpu"][label].get("cpu_us_per_write")
                    extra = s["achieved"] - previous["achieved"]
                    if before is not None and now.get("cpu_us_per_write") is not None \
                            and extra > 0:
                        more = (now["cpu_us_per_write"] * s["achieved"]
                                - before * previous["achieved"])
                        text += f" ({more / extra:,.0f})"
                return text

            lines.append(f"| {run['layout']} | {_f(s['offered'], 0)} | {us('instance 0')} | "
                         f"{us('instance 1')} | {us('redis')} | {us('secantusdb')} | "
                         f"{_f(s['client']['cpu_cores_writes'], 2)} | "
                         f"{_f(s['machine']['other_processes_cores_writes'], 2)} |")
            previous = s
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--rates", default="50,100,150,200,400")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-wait", type=float, default=120.0,
                        help="longest wait for a quiet machine before each layout (s)")
    parser.add_argument("--quick", action="store_true",
                        help="rates 50,200, 5 s each, 200 sockets as 20 users")
    parser.add_argument("--summarize", type=Path, help="print the tables of a result file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.duration, args.sockets, args.users = "50,200", 5.0, 200, 20
    args.layouts = [name for name in args.layouts.split(",") if name]
    args.rates = [float(r) for r in args.rates.split(",") if r]
    unknown = set(args.layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts: {', '.join(sorted(unknown))}")
    if not (0 < args.duration <= 120 and all(0 < r <= 5000 for r in args.rates)):
        parser.error("--duration must be 0-120 s and rates 0-5000/s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        print(markdown(json.loads(args.summarize.read_text())))
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"write-path-{stamp}.json"
    result: dict[str, Any] = {
        "tool": "bench/write_path.py", "argv": sys.argv[1:], "started": stamp,
        "git": git_facts(), "cpus": os.cpu_count(),
        "mongodb": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "SecantusDB",
        "options": {"rates": args.rates, "duration": args.duration, "sockets": args.sockets,
                    "users": args.users}, "layouts": []}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="write-path-") as tmp:
        for layout in args.layouts:
            result["layouts"].append(run_layout(layout, args, Path(tmp)))
            path.write_text(json.dumps(result, indent=1))  # a partial result survives
    result["seconds"] = round(time.monotonic() - began)
    path.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\nJSON: {path.relative_to(ROOT)}")
    return 0 if all(s["ok"] for run in result["layouts"] for s in run["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
