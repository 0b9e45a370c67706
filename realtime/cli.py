"""`taskmaster`: the command line. `taskmaster serve` runs one instance;
`taskmaster loadtest` load-tests running ones (realtime/loadtest)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import logs
from .config import Config, ConfigError, load_config
from .errors import ApiError
from .errortracking import init_error_tracking


def _serve(config: Config) -> int:
    import uvloop

    from . import drain
    from .app import create_app
    from .runner import run_app

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    mode = "production" if config.production else "development"
    logging.getLogger("taskmaster").info(
        "starting instance %s on http://%s:%d (%s mode; store %s; broker %s)",
        config.instance_id, config.host, config.port, mode,
        _without_credentials(config.store_url), _without_credentials(config.broker_url))
    app = create_app(config)
    if config.gc_gen0:
        app.on_startup.append(_tune_gc(config.gc_gen0))
    app.on_startup.append(drain.on_sigterm(app))
    try:
        run_app(app, host=config.host, port=config.port, access_log=None,
                backlog=config.backlog, shutdown_timeout=drain.budgets(config.drain_timeout)[1])
    except (ApiError, ValueError, OSError) as exc:
        # The store or broker refused at start-up, or the port is taken: one clear line.
        print(f"taskmaster: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _tune_gc(gen0: int) -> Callable[[Any], Awaitable[None]]:
    """After start-up, move what exists to the permanent generation and collect the
    young one far less often: a server's objects are long-lived or freed by refcount,
    and frequent gen-0 collections over thousands of sockets cost more than they free
    (the peer benchmark measured 2.4x deliveries from this alone)."""

    async def tune(app: Any) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(gen0, 50, 100)

    return tune


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rsplit("@", 1)[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskmaster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one server instance")
    serve.add_argument("--config", help="path to a config.toml (default: ./config.toml)")
    serve.add_argument("--host", help="listen address (overrides HOST)")
    serve.add_argument("--port", type=int, help="listen port (overrides PORT)")
    from .loadtest import command as loadtest

    loadtest_parser = loadtest.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "loadtest":  # a client: no server config to load
        return loadtest.run_command(args, loadtest_parser)

    overrides = {}
    if args.host:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = args.port
    try:
        config = load_config(path=args.config, overrides=overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format, config.instance_id)
    try:
        if init_error_tracking(config):
            logging.getLogger("taskmaster").info("error tracking: Sentry on")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(config)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
