"""Health (liveness), readiness and the OpenAPI document."""

from __future__ import annotations

import asyncio
import resource
import time
from datetime import UTC, datetime

from aiohttp import web

from realtime import keys
from realtime.errors import ApiError
from realtime.metrics import CONTENT_TYPE
from realtime.validation import iso

from .middleware import json_response
from .openapi import openapi_document

PROBE_TIMEOUT = 2.0


async def _store_state(app: web.Application) -> str:
    try:
        await asyncio.wait_for(app[keys.STORE].ping(), PROBE_TIMEOUT)
    except (ApiError, TimeoutError, OSError):
        return "down"
    return "up"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def health(request: web.Request) -> web.Response:
    """Liveness: answers 200 while the process runs, and says how its parts are."""
    app = request.app
    return json_response({
        "status": "ok",
        "timestamp": iso(datetime.now(UTC)),
        "uptime": round(time.time() - app[keys.STARTED_AT], 3),
        "instance": app[keys.CONFIG].instance_id,
        "store": await _store_state(app),
        "broker": "up" if app[keys.BROKER].healthy else "down",
        "memory": {"rss_bytes": _rss_bytes()},
    })


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 only while the store answers, the broker delivers and the instance
    is not draining (a balancer stops sending new clients as soon as a drain starts)."""
    app = request.app
    store = await _store_state(app)
    broker = "up" if app[keys.BROKER].healthy else "down"
    draining = app[keys.SOCKETS].draining
    ok = store == "up" and broker == "up" and not draining
    return json_response({"ready": ok, "store": store, "broker": broker,
                          "draining": draining}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; see README "Metrics" for what each series means."""
    return web.Response(body=request.app[keys.METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
