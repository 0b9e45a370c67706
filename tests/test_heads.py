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
        self.now: dict[str, int] | None = None  # what heads_now answers (None: cannot)
        self.now_calls = 0

    def heads_now(self, scopes: Collection[str]) -> dict[str, int] | None:
        self.now_calls += 1
        return None if self.now is None else {scope: self.now[scope] for scope in scopes}

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




async def test_a_store_that_reads_at_once_answers_without_a_batch_or_a_turn() -> None:
    heads, store = reader()
    store.now = {"user:1": 7}
    ask = heads.heads(["user:1"])
    with pytest.raises(StopIteration) as finished:
        ask.send(None)  # done at its first step: it never waited for the loop
    assert finished.value.value == {"user:1": 7}
    assert not store.calls and heads.reads == 1


async def test_an_ask_while_a_batch_is_under_way_joins_the_batches() -> None:
    """The at-once path is taken only when no batch is waiting or reading; the others keep
    the batch's order."""
    heads, store = reader()
    first = asyncio.ensure_future(heads.heads(["user:1"]))  # store.now None: batched
    await store.begun.wait()
    store.now = {"user:1": 99, "user:2": 99}
    second = asyncio.ensure_future(heads.heads(["user:2"]))
    await turns()
    store.go.set()
    assert await first == {"user:1": 1}
    assert await second == {"user:2": 2}  # the next batch, not heads_now
    assert store.now_calls == 1  # only the first ask, when nothing was under way
