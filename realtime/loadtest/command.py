"""`taskmaster loadtest`: the command line of the load harness."""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .report import draw_pngs, render_table, write_json
from .run import LoadTest, Options

EXIT_OK, EXIT_INCORRECT, EXIT_USAGE, EXIT_NOT_RUN = 0, 1, 2, 3

DESCRIPTION = """\
Open many Socket.IO connections as many users, drive writes at a steady rate through
REST and/or socket events for a bounded time, and report connect rate, write->delivery
latency, deliveries per second, the server's CPU and memory (--server-pid, same machine)
and correctness: every event reached every socket of its scope exactly once, in seq
order, and every socket's replica equals the server's state (read through
GET /api/sync). Exits 0 when correct, 1 when correctness fails, 3 when the run could
not be made (e.g. no socket connected). Sends traffic only to the --url given."""


class _Help(argparse.HelpFormatter):
    """Shows a default only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `loadtest` subcommand to `taskmaster`'s subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "loadtest", help="load-test a running server and check delivery correctness",
        description=DESCRIPTION, formatter_class=_Help)
    parser.add_argument("--url", dest="urls", action="extend", nargs="+", required=True,
                        metavar="URL", help="base URL of an instance (several: sockets are "
                        "spread round-robin; all must share one store)")
    parser.add_argument("--sockets", type=int, default=1000, help="sockets to open")
    parser.add_argument("--users", type=int, default=None,
                        help="users the sockets belong to (default: --sockets / 10)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="writes per second, all users together (0: no writes)")
    parser.add_argument("--via", choices=("rest", "socket", "both"), default="rest",
                        help="send writes as REST POST/PATCH, socket task:create/"
                        "task:update with acks, or alternate")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of writes (the run adds connect and drain time)")
    parser.add_argument("--connect-concurrency", type=int, default=100,
                        help="handshakes in flight while connecting (above the server's "
                        "listen backlog, 128 for aiohttp, SYNs get dropped and retried 1 s "
                        "later)")
    users = parser.add_mutually_exclusive_group(required=True)
    users.add_argument("--register", action="store_true",
                       help="register the users through POST /api/auth/register "
                       "(a unique e-mail prefix per run)")
    users.add_argument("--tokens-file", type=Path, metavar="PATH",
                       help="pre-minted tokens: one per line, bare or as JSON "
                       "{token, user_id?} (e.g. a --save-tokens file)")
    parser.add_argument("--save-tokens", type=Path, metavar="PATH",
                        help="with --register: write the users' tokens here for reuse")
    parser.add_argument("--json", dest="json_path", type=Path, metavar="PATH",
                        help="write the JSON report here")
    parser.add_argument("--png-dir", type=Path, metavar="DIR",
                        help="draw latency_over_time.png and latency_histogram.png here "
                        "(needs matplotlib: the [plot] extra)")
    parser.add_argument("--server-pid", dest="server_pids", type=int, action="append",
                        default=[], metavar="PID",
                        help="the server's pid on this machine, for its CPU and RSS "
                        "(several instances: one per --url, in the same order; more pids "
                        "after those: other processes to watch, e.g. the database)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines; only the summary")
    more = parser.add_argument_group("fine tuning")
    more.add_argument("--update-ratio", type=float, default=0.5,
                      help="share of writes that update a task created earlier in the run")
    more.add_argument("--http-connections", type=int, default=64,
                      help="keep-alive HTTP connections for REST writes")
    more.add_argument("--register-concurrency", type=int, default=16,
                      help="registrations and state reads in flight")
    more.add_argument("--connect-timeout", type=float, default=30.0)
    more.add_argument("--write-timeout", type=float, default=30.0)
    more.add_argument("--drain-timeout", type=float, default=30.0,
                      help="longest wait for deliveries after the last write answer")
    more.add_argument("--settle", type=float, default=0.5,
                      help="quiet seconds before the check, to catch late duplicates")
    more.add_argument("--max-inflight", type=int, default=5000,
                      help="unanswered writes past which the next ones are skipped")
    more.add_argument("--reconnects", type=int, default=3,
                      help="times a dropped socket reconnects (with its cursors)")
    more.add_argument("--seed", type=int, default=None, help="random seed of the write mix")
    return parser


def options_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    for url in args.urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            parser.error(f"--url {url!r}: give a base URL like http://127.0.0.1:8000")
    checks = [
        (1 <= args.sockets <= 100_000, "--sockets must be 1 to 100000"),
        (args.users is None or 1 <= args.users <= args.sockets,
         "--users must be 1 to --sockets"),
        (0 <= args.rate <= 100_000, "--rate must be 0 to 100000 writes/s"),
        (0 < args.duration <= 3600, "--duration must be more than 0 and at most 3600 s"),
        (1 <= args.connect_concurrency <= 10_000, "--connect-concurrency must be 1 to 10000"),
        (0 <= args.update_ratio <= 1, "--update-ratio must be 0 to 1"),
        (1 <= args.http_connections <= 10_000, "--http-connections must be 1 to 10000"),
        (1 <= args.register_concurrency <= 1000, "--register-concurrency must be 1 to 1000"),
        (all(0 < t <= 600 for t in (args.connect_timeout, args.write_timeout,
                                     args.drain_timeout)), "timeouts must be 0 to 600 s"),
        (0 <= args.settle <= 60, "--settle must be 0 to 60 s"),
        (1 <= args.max_inflight <= 1_000_000, "--max-inflight must be 1 to 1000000"),
        (0 <= args.reconnects <= 100, "--reconnects must be 0 to 100"),
        (args.save_tokens is None or args.register, "--save-tokens goes with --register"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    if args.tokens_file is not None and not args.tokens_file.is_file():
        parser.error(f"--tokens-file {args.tokens_file}: no such file")
    return Options(
        urls=args.urls, sockets=args.sockets, users=args.users, rate=args.rate, via=args.via,
        duration=args.duration, connect_concurrency=args.connect_concurrency,
        json_path=args.json_path, png_dir=args.png_dir, register=args.register,
        tokens_file=args.tokens_file, save_tokens=args.save_tokens, quiet=args.quiet,
        server_pids=args.server_pids, update_ratio=args.update_ratio,
        http_connections=args.http_connections,
        register_concurrency=args.register_concurrency, connect_timeout=args.connect_timeout,
        write_timeout=args.write_timeout, drain_timeout=args.drain_timeout,
        settle=args.settle, max_inflight=args.max_inflight, reconnects=args.reconnects,
        seed=args.seed)


def exit_code(report: dict[str, Any]) -> int:
    if report.get("error"):
        return EXIT_NOT_RUN
    return EXIT_OK if report["ok"] else EXIT_INCORRECT


def raise_nofile(need: int, out: Callable[[str], None]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, need) if hard == resource.RLIM_INFINITY else min(hard, max(soft, need))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < need:
        out(f"warning: the open-file limit is {wanted}, under the {need} this run needs; "
            "raise it (ulimit -n) or some sockets will fail to connect")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency off Windows
        return None
    return uvloop.new_event_loop


async def _run(test: LoadTest) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        def first_interrupt() -> None:
            test.p.always("interrupted: stopping the writes; draining and checking "
                          "(Ctrl-C again to abort)")
            test.stop.set()
            loop.remove_signal_handler(signal.SIGINT)

        try:
            loop.add_signal_handler(signal.SIGINT, first_interrupt)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not Unix
            handled = False
    try:
        return await test.run()
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser,
                out: Callable[[str], None] | None = None) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    out = out or say
    options = options_from(args, parser)
    raise_nofile(options.sockets + options.http_connections + 256, out)
    test = LoadTest(options, out, tune_gc=True)
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 20)  # the load generator's own GC: far fewer passes
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(_run(test))
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    if options.png_dir is not None:
        pngs = draw_pngs(report, test.tracker.latency, test.tracker.latency_at,
                         test.write_offset(), options.png_dir)
        report["png"] = pngs if isinstance(pngs, list) else []
        if isinstance(pngs, str):
            report["png_note"] = pngs
    report["exit_code"] = exit_code(report)
    out(render_table(report))
    if options.png_dir is not None:
        out(f"PNG: {', '.join(report['png'])}" if report["png"]
            else f"PNG: none ({report['png_note']})")
    if options.json_path is not None:
        write_json(report, options.json_path)
        out(f"JSON: {options.json_path}")
    return int(report["exit_code"])


def main(argv: list[str] | None = None) -> int:
    """`python -m realtime.loadtest ...`: the same as `taskmaster loadtest ...`."""
    parser = argparse.ArgumentParser(prog="taskmaster")
    commands = parser.add_subparsers(dest="command", required=True)
    loadtest = add_parser(commands)
    args = parser.parse_args(["loadtest", *(sys.argv[1:] if argv is None else argv)])
    return run_command(args, loadtest)
