"""Benchmark-only routes: registered only when the setting `bench.endpoints` is true.

They exist so that bench/peer_compare.py can drive this server the way the peer
benchmark drives Node Socket.IO and stock python-socketio (whose servers publish
through an HTTP control endpoint): `creates` through the real write path, `publish`
through the delivery engine alone. The setting is off by default and `load_config`
refuses it in production mode.

- `POST /api/_bench/creates` with `[[user_id, title], ...]` (optionally
  `[user_id, title, mutation_id]`): creates those tasks through
  `TaskService.create_many`, the product's one write path for a batch (validate -> the
  store commits them in one call and assigns each scope's seqs -> the broker publishes
  each event -> every instance's relay delivers). Answers `200 {"created": n}` once
  every write is committed, or the first item's error if any failed.
- `POST /api/_bench/publish` with the same body: the delivery engine alone. Each item
  becomes the `task:created` event its create would have produced (the same envelope,
  the same task document, byte for byte in shape), published straight to the broker
  (-> every instance's relay -> sockets); nothing is written to the store. The seq comes
  from a per-scope counter in this process, so it is right only while every write of a
  user goes to one instance (the load generator's `publish: 'events'` sends user u to
  target u mod n); anything else shows up as gaps in the sockets' seq checks. It exists
  because the peer servers' `POST /emit` writes nothing either: comparing the two
  compares delivery engines, and `creates` adds the store's commit on top.
- `GET /api/_bench/stats`: sockets, RSS, delivery, broker, store and GC counters.

**These routes skip per-request authentication**: a create names the user it writes
for, whoever sends it. That is acceptable only because they are for benchmarks, off
by default, refused in production, and answer only requests from the loopback
interface (anything else gets 403).
"""

from __future__ import annotations

import gc
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from realtime import keys, validation
from realtime.errors import ApiError
from realtime.tasks import NewTask, TaskIds, new_task_document, task_event, utc_now

from .middleware import json_response, read_json
from .system import _rss_bytes

MAX_BATCH = 10_000


@dataclass
class BenchStats:
    batches: int = 0
    creates: int = 0
    create_seconds: float = 0.0  # summed over creates: the wait for their commit
    batch_seconds: float = 0.0  # summed over batches: the whole gather
    published: int = 0  # events of `publish` (no store)
    seqs: dict[str, int] = field(default_factory=dict)  # `publish`'s seq per scope
    new_id: TaskIds = field(default_factory=TaskIds)


BENCH_STATS = web.AppKey("bench_stats", BenchStats)


def setup(app: web.Application) -> None:
    app[BENCH_STATS] = BenchStats()
    app.router.add_post("/api/_bench/creates", creates)
    app.router.add_post("/api/_bench/publish", publish)
    app.router.add_get("/api/_bench/stats", stats)


def _loopback_only(request: web.Request) -> None:
    try:
        local = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        local = False
    if not local:
        raise ApiError("forbidden", "benchmark routes answer only the loopback interface")


def _items(body: Any) -> list[tuple[str, dict[str, Any], str | None]]:
    if not isinstance(body, list) or not body:
        raise ApiError("invalid", "send a non-empty array of [user_id, title] pairs")
    if len(body) > MAX_BATCH:
        raise ApiError("too_large", f"at most {MAX_BATCH} creates per request")
    items = []
    for item in body:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise ApiError("invalid", "each item must be [user_id, title] or "
                                      "[user_id, title, mutation_id]")
        user_id = validation.task_id(item[0], "user_id")  # same alphabet as a scope id
        _, fields = validation.new_task({"title": item[1]})
        mutation_id = validation.mutation_id(item[2] if len(item) == 3 else None)
        items.append((user_id, fields, mutation_id))
    return items


async def creates(request: web.Request) -> web.Response:
    """Create tasks for the named users, concurrently, through the real write path.

    No per-request authentication (bench only, loopback only, off by default)."""
    _loopback_only(request)
    items = _items(await read_json(request))
    tasks = request.app[keys.TASKS]
    bench = request.app[BENCH_STATS]

    started = time.perf_counter()
    outcomes = await tasks.create_many([
        NewTask(user_id, fields, mutation_id=mutation_id)
        for user_id, fields, mutation_id in items])
    elapsed = time.perf_counter() - started
    bench.batches += 1
    bench.creates += len(items)
    bench.create_seconds += elapsed * len(items)  # every create of the batch waited this long
    bench.batch_seconds += elapsed
    for outcome in outcomes:
        if isinstance(outcome, ApiError):
            raise outcome
    return json_response({"created": len(items)})


async def publish(request: web.Request) -> web.Response:
    """Publish the events these creates would produce, without the store (module doc).

    No per-request authentication (bench only, loopback only, off by default)."""
    _loopback_only(request)
    items = _items(await read_json(request))
    bench = request.app[BENCH_STATS]
    broker = request.app[keys.BROKER]
    now = validation.iso(utc_now())
    seqs = bench.seqs
    for user_id, fields, mutation_id in items:
        task = new_task_document(user_id, None, fields, now, bench.new_id)
        scope = task["scope"]
        # what a store adds on commit, in the order store.create_tasks returns it
        task.update(version=1, seq=seqs.get(scope, 0) + 1, deleted=False)
        seqs[scope] = task["seq"]
        broker.publish(task_event("task:created", task, mutation_id, now))
    bench.published += len(items)
    return json_response({"published": len(items)})


async def stats(request: web.Request) -> web.Response:
    _loopback_only(request)
    app = request.app
    gateway = app[keys.SOCKETS]
    broker = app[keys.BROKER]
    store = app[keys.STORE]
    bench = app[BENCH_STATS]
    commits, writes = getattr(store, "group_commits", (None, None))
    return json_response({
        "sockets": len(gateway.sio.eio.sockets),
        "sessions": len(gateway.sessions),
        "rss": _rss_bytes(),
        "delivered": gateway.delivered,
        "delivery": {"direct": gateway.delivery.direct, "queued": gateway.delivery.queued,
                     "dropped_slow": gateway.delivery.dropped_slow},
        "broker": {name: getattr(broker, name) for name in
                   ("published", "received", "dropped", "reconnects") if hasattr(broker, name)},
        "store": {"commits": commits, "writes": writes, **getattr(store, "writer_times", {})},
        "bench": {"batches": bench.batches, "creates": bench.creates,
                  "create_seconds": round(bench.create_seconds, 6),
                  "batch_seconds": round(bench.batch_seconds, 6),
                  "published": bench.published},
        "connects": gateway.connect_stats(),
        "gc": {"counts": gc.get_count(), "threshold": gc.get_threshold(),
               "collections": [s["collections"] for s in gc.get_stats()],
               "frozen": gc.get_freeze_count()},
    })
