"""Graceful drain on SIGTERM, what a Procfile platform sends on every deploy.

SIGTERM -> /api/ready answers 503 and new sockets are refused (the balancer and the
clients go elsewhere) -> every socket is told `server_draining` and its connection
closed, spread over `drain.spread`, so clients reconnect to other instances with
their cursors and lose nothing -> aiohttp stops listening, lets in-flight requests
(writes included) finish, and the cleanup contexts flush the broker and close the
store -> exit 0. Whatever happens, the process is gone within `drain.timeout`: the
phases have budgets, and a watchdog ends the process if cleanup itself hangs.

A second SIGTERM changes nothing; SIGINT (Ctrl-C) still exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import keys

log = logging.getLogger(__name__)
EXIT_BY_WATCHDOG = 70  # EX_SOFTWARE: the drain's own deadline ended the process


def budgets(timeout: float) -> tuple[float, float]:
    """(drain phase, aiohttp's shutdown wait for in-flight requests) within `timeout`,
    leaving the rest for cleanup (broker flush, store close)."""
    return timeout * 0.5, timeout * 0.25


def on_sigterm(app: web.Application) -> Callable[[web.Application], Awaitable[None]]:
    """An on_startup hook that makes SIGTERM start the drain (it replaces aiohttp's own
    SIGTERM handler, which would stop at once)."""

    async def install(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        started: list[asyncio.Task[None]] = []

        def start() -> None:
            if not started:
                started.append(loop.create_task(_drain_then_exit(app), name="drain"))

        loop.add_signal_handler(signal.SIGTERM, start)

    return install


async def _drain_then_exit(app: web.Application) -> None:
    config = app[keys.CONFIG]
    gateway = app[keys.SOCKETS]
    _watchdog(config.drain_timeout)
    phase, _ = budgets(config.drain_timeout)
    log.info("SIGTERM: draining %d sockets over %.1f s, exiting within %.1f s",
             len(gateway.sessions), config.drain_spread, config.drain_timeout)
    try:
        async with asyncio.timeout(phase):
            await gateway.drain(config.drain_spread)
    except TimeoutError:
        log.warning("drain: %d sockets still open after %.1f s; closing them",
                    len(gateway.sessions), phase)
    log.info("drain: sockets gone; finishing in-flight requests and exiting")
    asyncio.get_running_loop().call_soon(_leave_the_loop)


def _leave_the_loop() -> None:
    # Raised from a loop callback, GracefulExit (a SystemExit) ends run_app's loop, which
    # then stops listening, waits for in-flight requests and runs the cleanup contexts.
    raise web.GracefulExit()


def _watchdog(timeout: float) -> None:
    def expire() -> None:
        log.error("drain: not finished within drain.timeout = %.1f s; exiting now", timeout)
        logging.shutdown()
        os._exit(EXIT_BY_WATCHDOG)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
