"""The application factory.

`create_app(config)` wires routes and middlewares and does no I/O. Every resource
is opened in a `cleanup_ctx` step, in dependency order, so teardown runs in
reverse and only for what actually started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from handlers import setup_routes
from handlers.middleware import error_middleware, metrics_middleware
from handlers.protection import POLICY, HttpPolicy, policy_middleware, rate_limit_middleware
from store import store_from_url

from . import keys
from .auth import AuthService, resolve_secret
from .broker import broker_from_url
from .config import Config
from .metrics import Metrics
from .ratelimit import RateLimits, limiter_from_url
from .sockets import SocketGateway
from .tasks import TaskService, utc_now
from .validation import iso

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(
        # Outermost first: metrics see every answer as sent; the policy (headers, CORS,
        # compression) sees every answer, errors included; a 429 passes through the error
        # middleware for its request id.
        middlewares=[metrics_middleware, policy_middleware, error_middleware,
                     rate_limit_middleware],
        client_max_size=config.max_body_bytes,
    )
    app[keys.CONFIG] = config
    app[POLICY] = HttpPolicy(config)
    app[keys.STARTED_AT] = time.time()
    metrics = app[keys.METRICS] = Metrics()
    metrics.watch(app)
    gateway = SocketGateway(config, metrics)
    gateway.sio.attach(app)
    app[keys.SOCKETS] = gateway
    app.cleanup_ctx.extend([_store_ctx, _broker_ctx, _limiter_ctx, _services_ctx,
                            _sockets_ctx, _purge_ctx])
    setup_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    store = store_from_url(config.store_url, timeout=config.store_timeout)
    store.observe = app[keys.METRICS].observe_store
    await store.open()
    app[keys.STORE] = store
    yield
    await store.close()


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    broker = broker_from_url(app[keys.CONFIG].broker_url)
    await broker.start()
    app[keys.BROKER] = broker
    yield
    await broker.stop()


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    limiter = limiter_from_url(config.broker_url)  # shared through Redis like the events
    await limiter.start()
    app[keys.RATE_LIMITS] = RateLimits(config, limiter)
    yield
    await limiter.stop()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    secret = await asyncio.get_running_loop().run_in_executor(None, resolve_secret, config)
    auth = AuthService(config, app[keys.STORE], app[keys.BROKER], secret)
    await auth.start()
    app[keys.AUTH] = auth
    tasks = app[keys.TASKS] = TaskService(app[keys.STORE], app[keys.BROKER])
    yield
    await tasks.close()
    await auth.close()


async def _sockets_ctx(app: web.Application) -> AsyncIterator[None]:
    gateway = app[keys.SOCKETS]
    await gateway.start(app[keys.AUTH], app[keys.TASKS], app[keys.STORE], app[keys.BROKER],
                        app[keys.RATE_LIMITS])
    yield
    await gateway.stop()


async def _purge_ctx(app: web.Application) -> AsyncIterator[None]:
    """Drop tombstones older than the retention, every purge interval."""
    config = app[keys.CONFIG]
    store = app[keys.STORE]

    async def purge_forever() -> None:
        while True:
            cutoff = utc_now() - timedelta(seconds=config.tombstone_retention)
            try:
                dropped = await store.purge(iso(cutoff), time.time())
                if dropped:
                    log.info("purged %d tombstones older than %s", dropped, iso(cutoff))
            except Exception:
                log.exception("tombstone purge failed; will retry")
            await asyncio.sleep(config.purge_interval)

    task = asyncio.create_task(purge_forever(), name="tombstone-purge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
