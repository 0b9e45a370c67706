"""Latency statistics: exact nearest-rank percentiles at the end, a cheap running
histogram for the progress lines."""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Iterable
from typing import Any


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, Any]:
    """count, p50, p95, p99, max and mean in milliseconds (None when there is nothing)."""
    ms = sorted(s * 1000 for s in seconds)
    out: dict[str, Any] = {"count": len(ms)}
    for name, pct in (("p50", 50), ("p95", 95), ("p99", 99)):
        value = percentile(ms, pct)
        out[name] = round(value, 2) if value is not None else None
    out["max"] = round(ms[-1], 2) if ms else None
    out["mean"] = round(statistics.fmean(ms), 2) if ms else None
    return out


class LogHistogram:
    """Counts of values in buckets 2% wide (from 10 us to ~1000 s): O(1) to add,
    percentiles within 2% at any time without keeping or sorting the samples."""

    __slots__ = ("count", "counts", "max")
    BASE = 1e-5  # seconds: the first bucket's upper edge
    GROWTH = math.log(1.02)
    BUCKETS = 930  # 1e-5 * 1.02**930 ~ 1e3 s

    def __init__(self) -> None:
        self.counts = [0] * (self.BUCKETS + 1)
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        if seconds <= self.BASE:
            index = 0
        else:
            index = min(self.BUCKETS, 1 + int(math.log(seconds / self.BASE) / self.GROWTH))
        self.counts[index] += 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def percentile(self, pct: float) -> float | None:
        """The upper edge of the bucket that holds the nearest-rank percentile (seconds)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(pct / 100 * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self.max, self.BASE * math.exp(index * self.GROWTH))
        return self.max

    def buckets_ms(self) -> list[tuple[float, int]]:
        """[(bucket's upper edge in ms, count)] for the buckets that are not empty."""
        return [(round(self.BASE * math.exp(i * self.GROWTH) * 1000, 4), n)
                for i, n in enumerate(self.counts) if n]


class LoopLag:
    """How late this process's event loop wakes a 10 ms sleep: the load generator's own
    saturation, which would otherwise show up as server latency."""

    INTERVAL = 0.01

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.window_max = 0.0  # since the last take_window()

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(int(seconds / self.INTERVAL) + 1):  # bounded; usually cancelled
            before = loop.time()
            await asyncio.sleep(self.INTERVAL)
            lag = max(0.0, loop.time() - before - self.INTERVAL)
            self.samples.append(lag)
            if lag > self.window_max:
                self.window_max = lag

    def take_window(self) -> float:
        value, self.window_max = self.window_max, 0.0
        return value

    def summary(self) -> dict[str, Any]:
        out = latency_summary(self.samples)
        return {k: out[k] for k in ("count", "p50", "p99", "max")}
