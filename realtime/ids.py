"""Random bytes for ids, read from the OS in blocks."""

from __future__ import annotations

import os


class RandomBytes:
    """os.urandom in blocks of `block` bytes, handed out a few at a time: one system call
    per block instead of one per id (engine.io's session ids, new task ids)."""

    def __init__(self, block: int = 4096) -> None:
        self._block = block
        self._pool = b""
        self._used = 0

    def take(self, count: int) -> bytes:
        start = self._used
        if start + count > len(self._pool):
            self._pool, start = os.urandom(self._block), 0
        self._used = start + count
        return self._pool[start:start + count]
