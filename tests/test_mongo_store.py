"""What is particular to the MongoDB backend: the server going away and coming back."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime.errors import ApiError
from store import store_from_url

from mongo_server import MongoServer, database_url
from test_store_contract import new_task
from waiting import eventually


async def test_an_outage_is_unavailable_quickly_then_the_same_store_recovers() -> None:
    server = MongoServer()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, server.start)
    try:
        store = store_from_url(database_url(server.uri, "outage"), timeout=1.0)
        await store.open()
        try:
            await store.create_task(new_task("before"))
            await loop.run_in_executor(None, lambda: server.stop(keep_data=True))
            started = time.monotonic()
            with pytest.raises(ApiError) as caught:
                await store.create_task(new_task("during"))
            assert caught.value.code == "unavailable"
            assert time.monotonic() - started < 5  # a clean error, not a hang
            with pytest.raises(ApiError) as caught:
                await store.sync("user:u1", 0, 10)
            assert caught.value.code == "unavailable"

            await loop.run_in_executor(None, server.start)
            async def answers() -> bool:  # the driver reconnects; no restart of the store
                try:
                    await store.ping()
                    return True
                except ApiError:
                    return False

            await eventually(answers, 20, "the store recovering")
            task, created = await store.create_task(new_task("after"))
            assert created and task["seq"] == 2
            answer = await store.sync("user:u1", 0, 10)
            assert [c["id"] for c in answer.changes] == ["before", "after"]
        finally:
            await store.close()
    finally:
        await loop.run_in_executor(None, server.stop)
