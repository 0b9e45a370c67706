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

Asker = tuple[Collection[str], "asyncio.Future[dict[str, int]]"]


class HeadReader:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[Asker] = []  # the next batch: each caller's scopes and future
        self._reading = False
        self._task: asyncio.Task[None] | None = None  # the read under way
        self.reads = 0  # store calls made (how well connects are batched)

    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        """The current head of each scope, read after this call began."""
        # A future per caller, so one caller giving up cancels nobody else's answer.
        future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((scopes, future))
        if not self._reading:
            self._start()
        return await future

    def _start(self) -> None:
        """A read task, which takes its batch when it first runs (the next turn of the
        loop): everyone who asked until then."""
        if self._reading or not self._waiting:
            return
        self._reading = True
        self._task = asyncio.ensure_future(self._read_next())

    async def _read_next(self) -> None:
        batch, self._waiting = self._waiting, []
        await self._read(batch)

    async def _read(self, batch: list[Asker]) -> None:
        try:
            self.reads += 1
            scopes = list({scope: None for scopes, _ in batch for scope in scopes})
            heads = await self.store.heads(scopes)
        except BaseException as exc:
            for _, future in batch:
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
            for asked, future in batch:
                if not future.done():
                    future.set_result({scope: heads[scope] for scope in asked})
        finally:
            self._reading = False
            self._start()  # what was asked for meanwhile
