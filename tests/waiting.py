"""Waiting on something outside the test's control (a process, a server, a subscription),
by polling with a deadline. Use an event or a queue instead wherever the test can be told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL = 0.05  # seconds between two looks


def poll_until(ready: Callable[[], bool], timeout: float, what: str,
               gone: Callable[[], str | None] = lambda: None) -> None:
    """Until ready() is true; fails at the deadline, or at once when gone() says why the
    thing waited for cannot come any more (a process that exited, say)."""
    deadline = time.monotonic() + timeout
    while not ready():
        reason = gone()
        assert reason is None, f"{what}: {reason}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(POLL)


async def eventually(ready: Callable[[], bool | Awaitable[bool]], timeout: float,
                     what: str) -> None:
    """The async twin of poll_until: ready() may be a plain or an async check."""

    async def check() -> bool:
        result = ready()
        return bool(await result) if isinstance(result, Awaitable) else bool(result)

    async def loop() -> None:
        while not await check():
            await asyncio.sleep(POLL)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout} s") from None
