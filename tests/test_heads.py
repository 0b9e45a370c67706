"""realtime/heads.py: heads of connecting sockets, read in batches, each read after it was
asked for (a socket's cursor must never start past a change it has not been sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import cast

import pytest

from realtime.heads import HeadReader
from store import Store


class CountingStore:
    """heads() answers the number of reads begun so far; each read waits for `go`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.go = asyncio.Event()
        self.begun = asyncio.Event()  # set when a read starts
        self.fail: Exception | None = None

    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        self.calls.append(list(scopes))
        self.begun.set()
        read = len(self.calls)
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        return dict.fromkeys(scopes, read)


async def turns(count: int = 10) -> None:
    """Let everything ready on the loop run (a wrong second read would start here)."""
    for _ in range(count):
        await asyncio.sleep(0)


def reader() -> tuple[HeadReader, CountingStore]:
    store = CountingStore()
    return HeadReader(cast(Store, store)), store


async def test_asks_of_one_turn_are_read_together() -> None:
    heads, store = reader()
    asks = [asyncio.ensure_future(heads.heads([f"user:{n % 5}"])) for n in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    store.go.set()
    answers = await asyncio.gather(*asks)
    assert len(store.calls) == 1 and sorted(store.calls[0]) == [f"user:{n}" for n in range(5)]
    assert all(list(answer.values()) == [1] for answer in answers)


async def test_an_ask_during_a_read_waits_for_the_next_read() -> None:
    """Not answered by the read under way: that one may have begun before the asker
    joined its room."""
    heads, store = reader()
    first = asyncio.ensure_future(heads.heads(["user:a"]))
    await asyncio.wait_for(store.begun.wait(), 5)
    assert len(store.calls) == 1  # under way
    late = asyncio.ensure_future(heads.heads(["user:a", "user:b"]))
    await turns()
    assert len(store.calls) == 1  # held until the read under way ends
    store.go.set()
    assert await first == {"user:a": 1}
    assert await late == {"user:a": 2, "user:b": 2}
    assert store.calls[1] == ["user:a", "user:b"] and heads.reads == 2


async def test_a_failed_read_fails_its_askers_and_the_next_read_goes_on() -> None:
    heads, store = reader()
    store.fail = RuntimeError("store down")
    store.go.set()
    asks = [asyncio.ensure_future(heads.heads(["user:a"])) for _ in range(3)]
    for ask in asks:
        with pytest.raises(RuntimeError):
            await ask
    store.fail = None
    assert await heads.heads(["user:a"]) == {"user:a": 2}


async def test_an_asker_that_gives_up_does_not_cancel_the_others() -> None:
    heads, store = reader()
    quitter = asyncio.ensure_future(heads.heads(["user:a"]))
    stayer = asyncio.ensure_future(heads.heads(["user:a"]))
    await asyncio.wait_for(store.begun.wait(), 5)
    quitter.cancel()
    store.go.set()
    assert await stayer == {"user:a": 1}
    with pytest.raises(asyncio.CancelledError):
        await quitter


