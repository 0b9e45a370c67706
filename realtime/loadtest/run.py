"""One load-test run: users -> sockets -> writes at a rate -> drain -> correctness check.

Everything here is a client of the public protocol (docs/protocol.md): REST for users,
writes and the final state; Socket.IO for live events and socket writes. Traffic goes
only to the URLs given; every loop is bounded in count and time, and the run stops by
itself after `duration` plus bounded drain and check phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .check import ScopeTrack, Verdict
from .client import AckTimeout, close_all, connect_many, ws_url_of
from .procstat import MachineWatch, ProcessWatch, loadavg
from .stats import LoopLag, latency_summary, percentile
from .tabs import STAGE_SAMPLE_EVERY, TITLE_TAG, LoadSocket, Tracker
from .users import (
    ScopeState,
    SetupError,
    User,
    auth_headers,
    fetch_state,
    read_tokens_file,
    register_users,
    run_prefix,
    users_from_tokens,
    write_tokens_file,
)
from .verify import judge

STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high")


@dataclass
class Options:
    urls: list[str]
    sockets: int = 1000
    users: int | None = None  # default: one user per 10 sockets
    rate: float = 100.0  # writes per second, all users together
    via: str = "rest"  # rest | socket | both
    duration: float = 10.0
    connect_concurrency: int = 100
    json_path: Path | None = None
    png_dir: Path | None = None
    register: bool = False
    tokens_file: Path | None = None
    save_tokens: Path | None = None
    quiet: bool = False
    server_pids: list[int] = field(default_factory=list)
    update_ratio: float = 0.5
    http_connections: int = 64
    register_concurrency: int = 16
    connect_timeout: float = 30.0
    write_timeout: float = 30.0
    drain_timeout: float = 30.0
    settle: float = 0.5
    max_inflight: int = 5000
    reconnects: int = 3
    seed: int | None = None
    progress_interval: float = 1.0

    @property
    def user_count(self) -> int:
        return self.users if self.users is not None else max(1, self.sockets // 10)


# -- the run ------------------------------------------------------------------------------


class Printer:
    def __init__(self, quiet: bool, out: Callable[[str], None]) -> None:
        self.quiet = quiet
        self.out = out

    def progress(self, line: str) -> None:
        if not self.quiet:
            self.out(line)

    def always(self, line: str) -> None:
        self.out(line)


@dataclass
class Write:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    skipped: int = 0
    unanswered: int = 0
    behind: int = 0  # writes sent more than 50 ms after their due time
    ack_latency: array[float] = field(default_factory=lambda: array("d"))
    by_via: Counter[str] = field(default_factory=Counter)


class LoadTest:
    def __init__(self, options: Options, out: Callable[[str], None] = print,
                 tune_gc: bool = False) -> None:
        self.o = options
        self.tune_gc = tune_gc  # freeze the generator's objects after connecting
        self.stop = asyncio.Event()  # set: stop sending writes now (Ctrl-C)
        self.p = Printer(options.quiet, out)
        self.urls = [url.rstrip("/") for url in options.urls]
        self.rng = random.Random(options.seed)
        self.tracker = Tracker()
        self.tracker.connect_timeout = options.connect_timeout
        self.users: list[User] = []
        self.sockets: list[LoadSocket] = []
        self.sockets_of: dict[int, list[LoadSocket]] = {}
        self.base: dict[int, ScopeState] = {}
        self.final: dict[int, ScopeState] = {}
        self.created: dict[int, list[str]] = {}
        self.acked_top: dict[str, int] = {}  # scope -> highest seq a write answer reported
        self.acked: list[tuple[int, str, int]] = []  # (user index, task id, seq)
        self.writes = Write()
        self.phase = "setup"
        self.watches = [ProcessWatch(pid, f"server pid {pid}") for pid in options.server_pids]
        self.client_watch = ProcessWatch("self", "load generator")
        self.machine = MachineWatch()
        self.loop_lag = LoopLag()
        self.loadavg_start = loadavg()
        self.timeline: list[dict[str, Any]] = []
        self.run_id = run_prefix()
        self.times: dict[str, float] = {}
        self.connect_result: dict[str, Any] = {}
        self.connected_count = 0
        self.drained = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._tick_state = (0, 0, 0)  # deliveries, latency samples, writes at the last tick

    def mark(self, name: str) -> None:
        self.times[name] = time.perf_counter()
        for watch in (*self.watches, self.client_watch):
            watch.mark(name)
        self.machine.mark(name)

    def elapsed(self) -> float:
        return time.perf_counter() - self.tracker.t0

    def write_offset(self) -> float:
        """Seconds from the tracker's start to the first write (latency_at's origin)."""
        return self.times.get("writes_start", self.tracker.t0) - self.tracker.t0

    # -- phases ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        o = self.o
        started = datetime.now(UTC)
        ws_connector = aiohttp.TCPConnector(limit=0, force_close=False)
        http_connector = aiohttp.TCPConnector(limit=o.http_connections, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=o.connect_timeout)
        error: str | None = None
        ticker: asyncio.Task[None] | None = None
        async with aiohttp.ClientSession(connector=ws_connector, timeout=timeout) as ws, \
                aiohttp.ClientSession(connector=http_connector, timeout=timeout) as http:
            self.tracker.ws_session = ws
            try:
                await self.setup_users(http)
                ticker = asyncio.create_task(self.ticker())
                await self.connect(ws)
                if self.connected_count:
                    await self.drive_writes(http)
                    await self.drain(http)
                else:
                    error = "no socket could connect"
            except SetupError as exc:
                error = str(exc)
            finally:
                self.tracker.running = False
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                for task in list(self._inflight):
                    task.cancel()
                await close_all(self.sockets)
                reconnecting = [s.reconnecting for s in self.sockets if s.reconnecting]
                for task in reconnecting:
                    task.cancel()
                await asyncio.gather(*reconnecting, return_exceptions=True)
                self.tracker.ws_session = None
        verdict = self.verdict() if error is None else None
        return self.report(started, verdict, error)

    async def setup_users(self, http: aiohttp.ClientSession) -> None:
        o = self.o
        count = o.user_count
        began = time.perf_counter()
        if o.tokens_file is not None:
            entries = read_tokens_file(o.tokens_file)
            self.users = await users_from_tokens(http, self.urls[0], entries, count,
                                                 o.register_concurrency, o.write_timeout)
        else:
            last = [time.perf_counter()]

            def progress(done: int) -> None:
                now = time.perf_counter()
                if now - last[0] >= o.progress_interval and done < count:
                    last[0] = now
                    self.p.progress(f"[{self.elapsed():6.1f}s] registered {done:,}/{count:,} "
                                    "users")

            self.users = await register_users(http, self.urls[0], self.run_id, count,
                                              o.register_concurrency, o.write_timeout,
                                              progress)
            if o.save_tokens is not None:
                write_tokens_file(o.save_tokens, self.users)
        self.times["users_s"] = time.perf_counter() - began
        # Where each user's scope stands before the run: every socket connects with this
        # cursor, so it must receive exactly every seq after it.
        gate = asyncio.Semaphore(max(1, o.register_concurrency))

        async def state_of(user: User) -> None:
            async with gate:
                self.base[user.index] = await fetch_state(
                    http, self.urls[user.index % len(self.urls)], user.token, user.scope,
                    o.write_timeout)

        try:
            await asyncio.gather(*(state_of(user) for user in self.users))
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise SetupError(f"reading the users' state: {type(exc).__name__}: {exc}") from None
        self.p.progress(f"[{self.elapsed():6.1f}s] {len(self.users):,} users ready "
                        f"({'tokens file' if o.tokens_file else 'registered'}, "
                        f"{self.times['users_s']:.1f} s)")

    async def connect(self, ws: aiohttp.ClientSession) -> None:
        o = self.o
        n_users, n_urls = len(self.users), len(self.urls)
        ws_urls = [ws_url_of(url) for url in self.urls]
        self.tracker.ws_urls = ws_urls
        for i in range(o.sockets):
            user = self.users[i % n_users]
            # the k-th socket of each user goes to URL k (mod), shifted per user, so that
            # users' sockets spread over every instance and instances get equal shares
            url_index = (i // n_users + i % n_users) % n_urls
            sock = LoadSocket(i, user, url_index, ws_urls[url_index], self.tracker,
                              o.reconnects)
            base = self.base[user.index]
            sock.tracks[user.scope] = ScopeTrack(user.scope, start=base.seq)
            self.sockets.append(sock)
            self.sockets_of.setdefault(user.index, []).append(sock)
        self.phase = "connect"
        self.mark("connect_start")

        def done(index: int, ok: bool) -> None:
            if ok:
                self.connected_count += 1
                self.sockets[index].was_connected = True

        result = await connect_many(ws, [s.ws_url for s in self.sockets], self.sockets,
                                    o.connect_concurrency, o.connect_timeout,
                                    auth_of=lambda i: self.sockets[i].auth(), on_done=done)
        self.mark("connected")
        if self.tune_gc:
            gc.collect()
            gc.freeze()  # the sockets live to the end: no GC pass needs to scan them
        self.connect_result = result
        self.p.progress(
            f"[{self.elapsed():6.1f}s] connected {result['connected']:,}/{o.sockets:,} in "
            f"{result['elapsed_s']:.1f} s ({result['connects_per_s'] or 0:,.0f}/s)"
            + (f", failed {result['failed']:,}: {result['errors']}" if result["failed"] else ""))

    async def drive_writes(self, http: aiohttp.ClientSession) -> None:
        o = self.o
        writers = [u for u in self.users if any(s.live for s in self.sockets_of[u.index])]
        total = round(o.rate * o.duration)
        self.phase = "writes"
        self.mark("writes_start")
        lag = asyncio.create_task(self.loop_lag.run(o.duration + o.write_timeout + 5))
        start = time.perf_counter()
        deadline = start + o.duration + 1.0
        counter = itertools.count()
        for i in range(total):
            due = start + i / o.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                self.writes.behind += 1
            if time.perf_counter() > deadline or not writers or self.stop.is_set():
                break
            if len(self._inflight) >= o.max_inflight:
                self.writes.skipped += 1
                continue
            user = self.rng.choice(writers)
            via = o.via if o.via != "both" else ("rest", "socket")[i % 2]
            own = self.created.get(user.index)
            update_of = (self.rng.choice(own) if own and self.rng.random() < o.update_ratio
                         else None)
            mutation_id = f"{self.run_id}-{next(counter)}"
            work = (self.rest_write(http, user, mutation_id, update_of) if via == "rest"
                    else self.socket_write(user, mutation_id, update_of))
            task = asyncio.create_task(work)
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        self.times["writes_sent_s"] = time.perf_counter() - start
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=o.write_timeout + 1)
        for task in list(self._inflight):  # bounded: past the write timeout, give up
            task.cancel()
            self.writes.unanswered += 1
        self.mark("writes_done")
        lag.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag

    def _fields(self, mutation_id: str, update: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"title": TITLE_TAG + mutation_id}
        if update:
            fields["status"] = self.rng.choice(STATUSES)
        else:
            fields["priority"] = self.rng.choice(PRIORITIES)
        return fields

    def _answered(self, user: User, task: Any, sent: float, created: bool) -> None:
        now = time.perf_counter()
        self.writes.ok += 1
        self.writes.ack_latency.append(now - sent)
        scope, seq = task["scope"], task["seq"]
        if seq > self.acked_top.get(scope, 0):
            self.acked_top[scope] = seq
        self.acked.append((user.index, task["id"], seq))
        if created:
            self.created.setdefault(user.index, []).append(task["id"])

    async def rest_write(self, http: aiohttp.ClientSession, user: User, mutation_id: str,
                         update_of: str | None) -> None:
        o = self.o
        url = self.urls[self.writes.sent % len(self.urls)]
        headers = {**auth_headers(user.token), "X-Mutation-Id": mutation_id,
                   "Content-Type": "application/json"}
        body = orjson.dumps(self._fields(mutation_id, update_of is not None))
        method, path = ("PATCH", f"/api/tasks/{update_of}") if update_of else ("POST",
                                                                                "/api/tasks")
        self.writes.sent += 1
        self.writes.by_via["rest"] += 1
        sent = time.perf_counter()
        self.tracker.sent_at[mutation_id] = sent
        try:
            async with asyncio.timeout(o.write_timeout), http.request(
                    method, url + path, data=body, headers=headers) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            self.writes.errors["rest timeout"] += 1
            self.writes.unanswered += 1
            return
        except (OSError, aiohttp.ClientError) as exc:
            self.writes.errors[f"rest {type(exc).__name__}"] += 1
            self.writes.unanswered += 1
            return
        if status not in (200, 201):
            self.writes.errors[f"rest http {status}"] += 1
            return
        self._answered(user, orjson.loads(raw)["task"], sent, update_of is None)

    async def socket_write(self, user: User, mutation_id: str, update_of: str | None) -> None:
        live = [s for s in self.sockets_of[user.index] if s.live]
        self.writes.sent += 1
        self.writes.by_via["socket"] += 1
        if not live:
            self.writes.errors["socket: no live socket for the user"] += 1
            return
        sock = live[self.writes.sent % len(live)]
        fields = self._fields(mutation_id, update_of is not None)
        if update_of:
            name, payload = "task:update", {"id": update_of, "changes": fields,
                                            "mutation_id": mutation_id}
        else:
            name, payload = "task:create", {**fields, "mutation_id": mutation_id}
        sent = time.perf_counter()
        self.tracker.sent_at[mutation_id] = sent
        try:
            ack = await sock.emit(name, payload, self.o.write_timeout)
        except AckTimeout:
            self.writes.errors["socket ack timeout"] += 1
            self.writes.unanswered += 1
            return
        except (ConnectionError, OSError, aiohttp.ClientError) as exc:
            self.writes.errors[f"socket {type(exc).__name__}"] += 1
            self.writes.unanswered += 1
            return
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            code = (ack.get("error") or {}).get("code") if isinstance(ack, dict) else None
            self.writes.errors[f"socket ack {code}"] += 1
            return
        self._answered(user, ack["task"], sent, update_of is None)

    async def _until(self, done: Callable[[], bool], within: float, step: float = 0.05) -> bool:
        deadline = time.perf_counter() + within
        while not done():
            if time.perf_counter() >= deadline:
                return False
            await asyncio.sleep(step)
        return True

    def _caught_up(self, heads: dict[str, int]) -> bool:
        for sock in self.sockets:
            if sock.reconnecting is not None:
                return False
            if not sock.live:
                continue
            for scope, track in sock.tracks.items():
                if track.known_start and track.top < heads.get(scope, 0):
                    return False
        return True

    async def drain(self, http: aiohttp.ClientSession) -> None:
        o = self.o
        self.phase = "drain"
        began = time.perf_counter()
        drained = await self._until(lambda: self._caught_up(self.acked_top), o.drain_timeout)
        self.times["drain_s"] = time.perf_counter() - began
        self.mark("drained")
        self.phase = "check"
        gate = asyncio.Semaphore(max(1, o.register_concurrency))

        async def final_of(user: User) -> None:
            # From the user's instance, or the next one if it is gone (a failover run).
            n = len(self.urls)
            async with gate:
                for attempt in range(n):
                    url = self.urls[(user.index + attempt) % n]
                    try:
                        self.final[user.index] = await fetch_state(
                            http, url, user.token, user.scope, o.write_timeout)
                        return
                    except (OSError, aiohttp.ClientConnectionError):
                        if attempt == n - 1:
                            raise

        try:
            await asyncio.gather(*(final_of(user) for user in self.users))
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise SetupError(f"reading the final state: {type(exc).__name__}: {exc}") from None
        heads = {self.users[i].scope: state.seq for i, state in self.final.items()}
        left = max(0.5, o.drain_timeout - (time.perf_counter() - began))
        drained = await self._until(lambda: self._caught_up(heads), left) and drained
        self.drained = drained
        # A quiet moment in which a late duplicate would still arrive and be counted.
        await asyncio.sleep(o.settle)
        self.tracker.running = False
        for sock in self.sockets:
            sock.live_at_check = sock.live
        self.mark("checked")

    # -- progress ---------------------------------------------------------------------------

    async def ticker(self) -> None:
        o = self.o
        budget = (o.connect_timeout * (o.sockets / max(1, o.connect_concurrency) + 2)
                  + o.duration + o.write_timeout + 2 * o.drain_timeout + 600)
        for _ in range(int(budget / o.progress_interval) + 1):  # bounded; cancelled at end
            await asyncio.sleep(o.progress_interval)
            self.tick()

    def tick(self) -> None:
        t = self.elapsed()
        tracker = self.tracker
        deliveries, samples, writes = self._tick_state
        window = sorted(tracker.latency[samples:])
        self._tick_state = (tracker.deliveries, len(tracker.latency), self.writes.sent)
        row: dict[str, Any] = {
            "t": round(t, 2), "phase": self.phase,
            "connected": sum(1 for s in self.sockets if s.live),
            "writes_sent": self.writes.sent, "writes_ok": self.writes.ok,
            "write_errors": sum(self.writes.errors.values()),
            "deliveries": tracker.deliveries,
            "deliveries_per_s": round((tracker.deliveries - deliveries) / self.o.progress_interval),
            "writes_per_s": round((self.writes.sent - writes) / self.o.progress_interval),
            "p50_ms": _ms(percentile(window, 50)), "p99_ms": _ms(percentile(window, 99)),
            "p99_so_far_ms": _ms(tracker.histogram.percentile(99)),
            "client_loop_lag_max_ms": _ms(self.loop_lag.take_window()),
        }
        servers = []
        for watch in self.watches:
            cores, rss = watch.sample(t)
            servers.append((cores, rss))
        row["servers"] = [{"cpu_cores": _round(c), "rss_mib": _mib(r)} for c, r in servers]
        cores, rss = self.client_watch.sample(t)
        row["client"] = {"cpu_cores": _round(cores), "rss_mib": _mib(rss)}
        self.timeline.append(row)
        if self.phase == "setup":
            return
        line = (f"[{t:6.1f}s] {self.phase:<7} sockets {row['connected']:,}/{self.o.sockets:,}"
                f"  writes {self.writes.sent:,} ({row['writes_per_s']:,}/s, "
                f"{row['write_errors']:,} err)  deliveries {tracker.deliveries:,} "
                f"({row['deliveries_per_s']:,}/s)  p99 {_fmt(row['p99_so_far_ms'])} ms")
        if self.phase == "writes":
            line += f"  loop lag {_fmt(row['client_loop_lag_max_ms'], 0)} ms"
        for watch, (c, r) in zip(self.watches, servers, strict=True):
            line += f"  server {watch.pid}: {_pct(c)} CPU {_fmt(_mib(r), 0)} MiB"
        self.p.progress(line)

    # -- results ---------------------------------------------------------------------------

    def verdict(self) -> Verdict:
        return judge(self.sockets, self.users, self.base, self.final, self.acked,
                     self.tracker.content_differs)

    def report(self, started: datetime, verdict: Verdict | None,
               error: str | None) -> dict[str, Any]:
        o = self.o
        tracker = self.tracker
        writes_s = None
        if "writes_start" in self.times and "writes_done" in self.times:
            writes_s = self.times["writes_done"] - self.times["writes_start"]
        t_writes = self.times.get("writes_start")
        span = None
        if t_writes is not None and tracker.last_delivery is not None:
            span = tracker.last_delivery - t_writes
        connect = dict(self.connect_result)
        report: dict[str, Any] = {
            "tool": "taskmaster loadtest",
            "run_id": self.run_id,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": {
                "urls": self.urls, "sockets": o.sockets, "users": o.user_count,
                "rate": o.rate, "via": o.via, "duration": o.duration,
                "connect_concurrency": o.connect_concurrency, "update_ratio": o.update_ratio,
                "users_from": "tokens_file" if o.tokens_file else "register",
                "server_pids": o.server_pids,
            },
            "ok": error is None and verdict is not None and verdict.ok,
            "error": error,
            "setup": {"users": len(self.users), "seconds": _round(self.times.get("users_s"))},
            "connect": connect,
            "writes": {
                "offered_rate": o.rate, "sent": self.writes.sent, "acked": self.writes.ok,
                "errors": dict(self.writes.errors), "unanswered": self.writes.unanswered,
                "skipped_max_inflight": self.writes.skipped,
                "sent_late_50ms": self.writes.behind, "by_via": dict(self.writes.by_via),
                "achieved_rate": _round(self.writes.sent / self.times["writes_sent_s"], 1)
                if self.times.get("writes_sent_s") else None,
                "seconds": _round(writes_s),
                "ack_latency_ms": latency_summary(self.writes.ack_latency),
            },
            "deliveries": {
                "count": tracker.deliveries, "via_sync_pages": tracker.page_deliveries,
                "sync_pages": tracker.pages,
                "per_s": _round(tracker.deliveries / span, 1) if span else None,
                "expected_per_write": _round(o.sockets / max(1, o.user_count), 2),
            },
            "latency_ms": latency_summary(tracker.latency),
            # The write -> delivery latency of one live delivery in N, split at the
            # envelope's `ts` (same machine only: the two clocks must agree).
            "stages_ms": {
                "sample_every": STAGE_SAMPLE_EVERY,
                "send_to_ts": latency_summary(tracker.send_to_ts),
                "ts_to_delivery": latency_summary(tracker.ts_to_delivery),
            },
            "latency_histogram_ms": tracker.histogram.buckets_ms(),
            "drain": {"seconds": _round(self.times.get("drain_s")), "complete": self.drained},
            "servers": [self._server_summary(i, w) for i, w in enumerate(self.watches)],
            "client": {**self.client_watch.summary(),
                       "event_loop_lag_ms": self.loop_lag.summary()},
            "machine": self._machine_summary(),
            "other_events": dict(tracker.other_events),
            "session_ended": dict(tracker.ended),
            "reconnects": sum(o.reconnects - s.reconnects_left for s in self.sockets),
            "correctness": verdict.to_dict() if verdict else None,
            "timeline": self.timeline,
        }
        return report

    def _machine_summary(self) -> dict[str, Any]:
        busy = self.machine.cores_between("writes_start", "writes_done")
        ours = [w.cores_between("writes_start", "writes_done")
                for w in (*self.watches, self.client_watch)]
        others = None
        if busy is not None and all(c is not None for c in ours):
            others = max(0.0, busy - sum(c for c in ours if c is not None))
        return {"cpus": os.cpu_count(), "loadavg_start": self.loadavg_start,
                "loadavg_end": loadavg(), "busy_cores_writes": _round(busy),
                "other_processes_cores_writes": _round(others) if self.watches else None,
                "cpu_stall_share_writes": _round(
                    self.machine.cpu_stall_share("writes_start", "writes_done"))}

    def _server_summary(self, index: int, watch: ProcessWatch) -> dict[str, Any]:
        """One --server-pid; with one pid per --url (same order), its own sockets' share.
        Pids past one per --url are other processes of the deployment (a database, a
        broker): their CPU per write, and no sockets or deliveries."""
        out = watch.summary()
        per_url = len(self.watches) >= len(self.urls)
        # From the first write until every delivery arrived (not the final state reads)
        per_write = watch.cpu_seconds_between("writes_start", "drained")
        if per_write is not None and self.writes.ok:
            out["cpu_us_per_write"] = round(per_write * 1e6 / self.writes.ok, 1)
        cpu = watch.cpu_seconds_between("writes_start", "checked")
        if per_url and index >= len(self.urls):
            out["url"] = None
            out["role"] = "other"
            return out
        deliveries = self.tracker.by_url[index] if per_url else self.tracker.deliveries
        connected = (sum(1 for s in self.sockets if s.was_connected and s.url_index == index)
                     if per_url else self.connected_count)
        out["url"] = self.urls[index] if per_url else None
        out["role"] = "server"
        out["deliveries"] = deliveries
        before, after = watch.marks.get("connect_start"), watch.marks.get("connected")
        if before is not None and after is not None and connected:
            out["kib_per_socket"] = round((after - before) / connected, 1)
        if cpu is not None and deliveries:
            out["cpu_us_per_delivery"] = round(cpu * 1e6 / deliveries, 1)
        return out


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib is not None else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(cores: float | None) -> str:
    return "-" if cores is None else f"{cores * 100:.0f}%"


async def run(options: Options, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one load test and return its report (see report.py for the table and PNGs)."""
    return await LoadTest(options, out).run()
