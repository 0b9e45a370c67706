#!/usr/bin/env python3
"""Mass disconnect: what N sockets leaving one instance at once cost it (issue 5, bottleneck 6).

One fresh `taskmaster serve` per round (temporary SQLite store, bench routes on for
`/api/_bench/stats`), one user, --sockets (5,000) websockets of that user opened by a
child process (realtime.loadtest's client, 100 handshakes in flight). Once every session
is up and --settle seconds have passed, the child exits with `os._exit`: the kernel closes
all its sockets at once, as when a client machine, a proxy or a network path goes away.
The server then runs every disconnect (engine.io, python-socketio, the gateway).

Measured from the moment the child is told to exit until the server reports no session
and no engine.io socket left (polled every 20 ms through `/api/_bench/stats`):
  - wall seconds, and the server's CPU seconds (utime+stime, /proc/<pid>/stat);
  - background: the whole machine's busy cores minus the server's, over the same window.
A disconnect that visits every room of the namespace (python-socketio's stock
`basic_disconnect`) makes this quadratic in N; realtime/rooms.py makes it linear.

    .venv/bin/python bench/mass_disconnect.py                        # 5,000 sockets, 3 rounds
    .venv/bin/python bench/mass_disconnect.py --sockets 1000,5000 --rounds 1

Results: a line per round on stdout and JSON in bench/results/mass-disconnect-<stamp>.json.
Every process this starts (server, client) is stopped by its pid; all traffic is on
127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from socket_bench import (
    RESULTS,
    git_facts,
    machine_busy,
    raise_nofile,
    register_users,
    server_env,
    start_server,
    stop_server,
    wait_ready,
)

from realtime.loadtest.client import SioClient, connect_many, ws_url_of
from realtime.loadtest.procstat import cpu_seconds

POLL = 0.02  # seconds between two looks at the server's session count


async def child(url: str, token: str, sockets: int) -> None:
    """Open `sockets` websockets, say so, then die at once when told (stdin)."""
    raise_nofile(sockets + 100)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [SioClient(token) for _ in range(sockets)]
        report = await connect_many(session, ws_url_of(url), clients, 100, 60.0)
        print(json.dumps({"connected": report["connected"],
                          "connects_per_s": report["connects_per_s"]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        os._exit(0)  # every socket closes in the kernel at once, no goodbye


async def stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/api/_bench/stats") as response:
        return await response.json()  # type: ignore[no-any-return]


async def wait_until(http: aiohttp.ClientSession, url: str, done: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if done(await stats(http, url)):
            return True
        await asyncio.sleep(POLL)
    return False


async def one_round(args: argparse.Namespace, sockets: int, data_dir: Path) -> dict[str, Any]:
    env = server_env(data_dir, os.urandom(24).hex())
    env["TASKMASTER_BENCH_ENDPOINTS"] = "true"
    server = start_server(env, data_dir)
    child_proc: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, server, 30)
            assert server.pid is not None
            user = (await register_users(http, server.url, f"md{time.time_ns()}", 1, 1))[0]
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            children_before = usage.ru_utime + usage.ru_stime  # children reaped so far
            child_proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--child", server.url, user.token, str(sockets),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert child_proc.stdout is not None and child_proc.stdin is not None
            line = await asyncio.wait_for(child_proc.stdout.readline(), args.connect_timeout)
            connected = json.loads(line)
            if not await wait_until(http, server.url,
                                    lambda s: s["sessions"] >= connected["connected"], 30):
                raise SystemExit("the server never saw every socket connected")
            await asyncio.sleep(args.settle)
            before = await stats(http, server.url)
            child0 = cpu_seconds(child_proc.pid) or 0.0
            mine0 = cpu_seconds() or 0.0
            cpu0, machine0, t0 = cpu_seconds(server.pid), machine_busy()[0], time.perf_counter()
            child_proc.stdin.write(b"go\n")
            gone = await wait_until(
                http, server.url, lambda s: s["sessions"] == 0 and s["sockets"] == 0,
                args.drain_timeout)
            elapsed = time.perf_counter() - t0
            cpu1, machine1 = cpu_seconds(server.pid), machine_busy()[0]
            assert cpu0 is not None and cpu1 is not None
            server_cpu = cpu1 - cpu0
            after = await stats(http, server.url)
            await asyncio.wait_for(child_proc.wait(), 30)
            # The child's exit (the kernel closing its sockets) and this process's polling
            # are ours too, not background: the child's total CPU comes from its rusage.
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = usage.ru_utime + usage.ru_stime - children_before - child0
            ours = server_cpu + max(0.0, child_cpu) + (cpu_seconds() or 0.0) - mine0
        return {
            "sockets": sockets, "connected": connected["connected"],
            "connects_per_s": connected["connects_per_s"],
            "sessions_before": before["sessions"], "all_gone": gone,
            "sessions_left": after["sessions"], "engineio_sockets_left": after["sockets"],
            "wall_s": round(elapsed, 3), "server_cpu_s": round(server_cpu, 3),
            "server_cpu_us_per_socket": round(server_cpu / sockets * 1e6, 1),
            "client_exit_cpu_s": round(child_cpu, 3),
            "background_cores": round(max(0.0, (machine1 - machine0 - ours) / elapsed), 2),
        }
    finally:
        if child_proc is not None and child_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child_proc.kill()
            await asyncio.wait_for(child_proc.wait(), 10)
        code = stop_server(server)
        if code not in (0, -signal.SIGTERM, None):
            print(f"  note: server pid {server.pid} exited with {code}", flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for sockets in args.sockets:
        for index in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="mass-disconnect-") as tmp:
                result = await one_round(args, sockets, Path(tmp))
            result["round"] = index + 1
            rounds.append(result)
            print(f"  {sockets} sockets, round {index + 1}: gone in {result['wall_s']} s, "
                  f"server CPU {result['server_cpu_s']} s "
                  f"({result['server_cpu_us_per_socket']} us/socket), all gone "
                  f"{result['all_gone']} [bg {result['background_cores']} cores]", flush=True)
    summary = {}
    for sockets in args.sockets:
        mine = [r for r in rounds if r["sockets"] == sockets]
        summary[str(sockets)] = {
            "median_wall_s": statistics.median(r["wall_s"] for r in mine),
            "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in mine)}
    return {"meta": {"label": args.label, "pythonpath": os.environ.get("PYTHONPATH", ""),
                     "loadavg_at_start": os.getloadavg(), **git_facts()},
            "rounds": rounds, "summary": summary}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        uvloop.run(child(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=lambda v: [int(x) for x in v.split(",")],
                        default=[5000], help="socket counts, comma-separated (5000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--label", default="", help="a note kept in the JSON (before/after)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    raise_nofile(max(args.sockets) + 100)
    report = uvloop.run(run(args))
    out = args.out or RESULTS / f"mass-disconnect-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"summary {json.dumps(report['summary'])} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
