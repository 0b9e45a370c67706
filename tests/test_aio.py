"""realtime/aio.py: stopping a task whose cancellation can get lost."""

from __future__ import annotations

import asyncio

from realtime.aio import stop_task


async def test_a_task_that_swallows_a_cancel_is_still_stopped() -> None:
    """What Python 3.11's asyncio.timeout does to a cancel that races its expiry (redis-py's
    get_message(timeout=...) then returns None and the broker's loop goes on)."""
    swallowed = 0
    running, never = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        nonlocal swallowed
        running.set()
        while True:
            try:
                await never.wait()
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.wait_for(running.wait(), 5)
    await asyncio.wait_for(stop_task(task), 5)
    assert task.done() and swallowed == 3


async def test_a_finished_or_missing_task_is_fine() -> None:
    async def quick() -> int:
        return 1

    task = asyncio.create_task(quick())
    await task
    await stop_task(task)
    await stop_task(None)

    async def failing() -> None:
        raise RuntimeError("boom")

    broken = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await stop_task(broken)  # its exception is retrieved, not raised at shutdown
