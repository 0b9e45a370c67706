"""Scope heads for connecting sockets, read for many connects in one store call.

A socket that connects without a cursor starts live from its scope's head, read after
this instance began watching the scope (realtime/sockets.py `_join`). One read per
connect meant one store round trip per connect, which was a quarter of the server's CPU
in a connect storm. Here the heads asked for while no read is under way are read
together at the next turn of the loop (by a task that takes its batch when it starts),
and those asked for during a read are read together right after it: one call per batch
(like the store's group commit for writes).

Exactness is kept: every head handed out was read after it was asked for, so after the
asking socket's instance was watching the scope. A change committed before the read is
older than the head; one committed after it is relayed here, and if that happens before
the socket is registered with the relay, the catch-up every new socket runs from its
cursor fetches it from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from store import Store


class HeadReader:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, asyncio.Future[int]] = {}  # the next batch
        self._reading = False
        self._task: asyncio.Task[None] | None = None  # the read under way
        self.reads = 0  # store calls made (how well connects are batched)

    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        """The current head of each scope, read after this call began."""
        loop = asyncio.get_running_loop()
        futures = {}
        for scope in scopes:
            future = self._waiting.get(scope)
            if future is None:
                future = self._waiting[scope] = loop.create_future()
            futures[scope] = future
        if not self._reading:
            self._start()
        # shield: one caller giving up must not cancel the answer the others wait for
        return {scope: await asyncio.shield(future) for scope, future in futures.items()}

    def _start(self) -> None:
        """A read task, which takes its batch when it first runs (the next turn of the
        loop): everyone who asked until then."""
        if self._reading or not self._waiting:
            return
        self._reading = True
        self._task = asyncio.ensure_future(self._read_next())

    async def _read_next(self) -> None:
        batch, self._waiting = self._waiting, {}
        await self._read(batch)

    async def _read(self, batch: dict[str, asyncio.Future[int]]) -> None:
        try:
            self.reads += 1
            heads = await self.store.heads(list(batch))
        except BaseException as exc:
            for future in batch.values():
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                    future.exception()  # retrieved: a caller may have given up
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            for scope, future in batch.items():
                if not future.done():
                    future.set_result(heads[scope])
        finally:
            self._reading = False
            self._start()  # what was asked for meanwhile
