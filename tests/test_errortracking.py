"""The optional error-tracking hook (issue 7): off by default; with SENTRY_DSN, error log
records reach the configured Sentry endpoint, without credentials."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from aiohttp import web

from realtime.config import ConfigError, load_config
from realtime.errortracking import init_error_tracking

REPORTER = """
import logging, sys, sentry_sdk
from realtime.config import load_config
from realtime.errortracking import init_error_tracking
config = load_config(env={"SENTRY_DSN": sys.argv[1]}, path=None)
assert init_error_tracking(config)
logging.getLogger("realtime.sockets").error("relay failed on %s", "task:created")
sentry_sdk.flush(5)
"""


async def test_error_logs_reach_sentry_when_a_dsn_is_set(aiohttp_server: Any) -> None:
    received: list[bytes] = []

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes a gzip Content-Encoding itself
        received.append(body + b"\n" + str(dict(request.headers)).encode())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/1/envelope/", ingest)
    server = await aiohttp_server(app)
    dsn = f"http://publickey@127.0.0.1:{server.port}/1"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", REPORTER, dsn)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    events = [body for body in received if b"relay failed on task:created" in body]
    assert len(events) == 1, received
    assert b"Bearer" not in events[0]


def test_without_a_dsn_nothing_starts() -> None:
    assert init_error_tracking(load_config(env={}, path=None)) is False


def test_a_bad_dsn_stops_start_up_without_echoing_it() -> None:
    config = load_config(env={"SENTRY_DSN": "not-a-dsn-secretkey"}, path=None)
    with pytest.raises(ConfigError, match="SENTRY_DSN is not a valid") as refused:
        init_error_tracking(config)
    assert "secretkey" not in str(refused.value)
