#!/usr/bin/env python3
"""CPU per batch of broker publishes: redis-py's pipeline (how the broker published before
2026-11-30) against `PublisherConnection` (realtime/broker/publisher.py), on one process.

    PYTHONPATH=. .venv/bin/python bench/publish_cost.py [redis://127.0.0.1:6379/0]

Publishes to `publish-cost:ev:{n}` channels (nobody listens); 20,000 events per case after
a warm-up pass of the same size.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from realtime.broker.publisher import PublisherConnection

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
EVENTS = 20_000
PAYLOAD = orjson.dumps({"from": "abcdef123456", "event": {
    "type": "task:created", "scope": "user:123", "seq": 5,
    "task": {"id": "x" * 36, "title": "hello world", "done": False}}})
CHANNELS = [f"publish-cost:ev:{{{n}}}" for n in range(64)]


async def measure(run: Callable[[], Awaitable[None]]) -> float:
    await run()  # warm-up
    start = time.process_time()
    await run()
    return time.process_time() - start


async def pipeline_cpu(batches: int, size: int) -> float:
    client = aioredis.from_url(URL, socket_connect_timeout=2, socket_timeout=5,
                               retry=Retry(NoBackoff(), 0), max_connections=4)

    async def run() -> None:
        for b in range(batches):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(size):
                    pipe.execute_command("PUBLISH", CHANNELS[(b + i) % 64], PAYLOAD)
                await pipe.execute()

    try:
        return await measure(run)
    finally:
        await client.aclose()


async def bare_cpu(batches: int, size: int) -> float:
    pub = PublisherConnection(URL, "publish-cost")
    async with asyncio.timeout(2):
        await pub.open()

    async def run() -> None:
        for b in range(batches):
            async with asyncio.timeout(5):
                await pub.publish([(CHANNELS[(b + i) % 64], PAYLOAD) for i in range(size)])

    try:
        return await measure(run)
    finally:
        pub.close()


async def main() -> None:
    print("| events per batch | redis-py pipeline, CPU per batch | bare publisher |")
    print("|---|---|---|")
    for size in (1, 4, 32):
        batches = EVENTS // size
        old = await pipeline_cpu(batches, size)
        new = await bare_cpu(batches, size)
        print(f"| {size} | {1e6 * old / batches:,.0f} µs | {1e6 * new / batches:,.0f} µs |")


if __name__ == "__main__":
    asyncio.run(main())
