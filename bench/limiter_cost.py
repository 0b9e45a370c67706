#!/usr/bin/env python3
"""What the rate limiter costs per REST request (what the README's Security section states).

Times `RateLimits.request()` as the middleware calls it (an address budget and a user
budget, plus the login budget on auth routes), in process and against Redis (one round
trip per call; REDIS_URL or redis://127.0.0.1:6379/0, under a throw-away key prefix that
is deleted afterwards), sequentially and with 32 calls in flight. Prints microseconds
per call. Loads only 127.0.0.1.

    .venv/bin/python bench/limiter_cost.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime.config import load_config
from realtime.ratelimit import RateLimits, limiter_from_url


async def measure(url: str, calls: int, concurrency: int) -> float:
    config = load_config(env={"JWT_SECRET": "x" * 40, "REDIS_URL": url,
                              "RATE_LIMIT_MAX_REQUESTS": "1000000000",
                              "TASKMASTER_RATE_LIMIT_USER_MAX_REQUESTS": "1000000000"},
                         path=None)
    limiter = limiter_from_url(config.broker_url)
    await limiter.start()
    limits = RateLimits(config, limiter)
    try:
        async def worker(count: int, n: int) -> None:
            for i in range(count):
                assert await limits.request(f"10.0.{n}.{i % 250}", f"user{i % 100}", False) == 0

        await worker(200, 0)  # warm-up (script load, connections)
        start = time.perf_counter()
        per = calls // concurrency
        await asyncio.gather(*(worker(per, n) for n in range(concurrency)))
        elapsed = time.perf_counter() - start
        return elapsed / (per * concurrency) * 1e6
    finally:
        if url.startswith("redis"):
            client = limiter._client  # type: ignore[attr-defined]
            prefix = limiter.prefix  # type: ignore[attr-defined]
            keys = [k async for k in client.scan_iter(f"{prefix}:rl:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
        await limiter.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis_url = f"{redis_base}?prefix=limitercost{uuid.uuid4().hex[:8]}"
    for name, url in (("memory", "memory://"), ("redis", redis_url)):
        for concurrency in (1, 32):
            us = await measure(url, args.calls, concurrency)
            print(f"{name:6s} {concurrency:2d} in flight: {us:8.1f} us per request")


if __name__ == "__main__":
    asyncio.run(main())
