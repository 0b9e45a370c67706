"""Serving the app: aiohttp's runner, with realtime/wsfront.py in front of every connection.

`FrontRunner` is aiohttp's `AppRunner` whose server starts each connection with the
websocket front; `run_app` is `aiohttp.web.run_app` (one TCP site, signals, cleanup in
the same order) on that runner, which aiohttp's own `run_app` cannot be given.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from . import wsfront


class FrontRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return wsfront.install(server, self.app)


async def _serve(runner: FrontRunner, host: str, port: int, backlog: int) -> None:
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog)
        await site.start()
        await asyncio.Event().wait()  # until GracefulExit (SIGINT, SIGTERM's drain)
    finally:
        await runner.cleanup()


def run_app(app: web.Application, *, host: str, port: int, backlog: int,
            shutdown_timeout: float, **runner_kwargs: Any) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = FrontRunner(app, handle_signals=True, shutdown_timeout=shutdown_timeout,
                         **runner_kwargs)
    main = loop.create_task(_serve(runner, host, port, backlog))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():  # cancelling runs _serve's cleanup
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
