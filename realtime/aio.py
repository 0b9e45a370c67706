"""asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_EVERY = 0.5  # seconds


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task and wait until it has ended, cancelling again if it swallowed it.

    On Python 3.11, a cancel() that lands while an `asyncio.timeout()` inside the task
    expires comes out as TimeoutError (fixed in 3.12), and redis-py's
    `get_message(timeout=...)` then just returns None: a loop around it would run on
    forever and the shutdown that awaits it would hang."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), RECANCEL_EVERY)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
