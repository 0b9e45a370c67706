"""A minimal, cheap Socket.IO client: Engine.IO v4 / Socket.IO v5 over aiohttp's WebSocket.

Enough of the protocol for many thousands of simulated tabs in one process: the
websocket transport only (no polling, no upgrade), namespace `/`, JSON packets, no
permessage-deflate. The handshake is `0{open}` from the server, `40{auth}` from us,
`40{sid}` (or `44{error}`) back; pings `2` are answered `3`; `42[name, data]` are events
and `43<id>[...]` answers to our acked emits.

Subclass `SioClient` and override `on_event` to see events; it runs in the socket's
reader task, once per event, with the receive time (`time.perf_counter()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from .stats import latency_summary

_TEXT = aiohttp.WSMsgType.TEXT


class AckTimeout(Exception):
    """The server did not answer an acked emit in time."""


class SioClient:
    """One Socket.IO connection. `connect()` once; `close()` when done (always)."""

    __slots__ = ("_acks", "_next_ack", "closed", "connect_error", "reader", "token", "ws")

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed: str | None = None  # why the connection ended, once it has
        self.connect_error: str | None = None
        self._acks: dict[int, asyncio.Future[Any]] | None = None
        self._next_ack = 0

    # -- what a subclass sees -----------------------------------------------------------

    def on_event(self, name: str, data: Any, now: float) -> None:
        """A server event (`42[name, data, ...]`) arrived at `now` (perf_counter)."""

    def on_malformed(self, raw: str) -> None:
        """An event packet that is not `[name, ...]` JSON."""

    def on_closed(self) -> None:
        """The connection ended (after `connect` succeeded); `self.closed` says why."""

    # -- connection ---------------------------------------------------------------------

    async def connect(self, session: aiohttp.ClientSession, ws_url: str, within: float,
                      auth: dict[str, Any] | None = None) -> bool:
        """Open the socket and join namespace `/` with `auth` (default `{token}`).

        Returns False (and sets `connect_error`) on any failure, including a refusal.
        """
        self.closed = None
        self.connect_error = None
        try:
            async with asyncio.timeout(within):
                ws = await session.ws_connect(ws_url, compress=0, autoclose=True,
                                              autoping=True, max_msg_size=8 << 20)
                self.ws = ws
                opened = await ws.receive()
                if opened.type != _TEXT or not opened.data.startswith("0"):
                    raise ConnectionError(f"no engine.io open packet: {opened.data!r:.100}")
                body = auth if auth is not None else {"token": self.token}
                await ws.send_str("40" + orjson.dumps(body).decode())
                while True:
                    answer = await ws.receive()
                    if answer.type != _TEXT:
                        raise ConnectionError(f"closed during connect: {answer.type.name}")
                    if answer.data == "2":
                        await ws.send_str("3")
                        continue
                    break
                if answer.data.startswith("44"):
                    raise ConnectionRefused(_refusal(answer.data[2:]))
                if not answer.data.startswith("40"):
                    raise ConnectionError(f"unexpected packet {answer.data!r:.100}")
        except (TimeoutError, OSError, aiohttp.ClientError, ConnectionError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.connect_error = f"{kind}: {exc}"[:300]
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    await self.ws.close()
            self.ws = None
            return False
        self.reader = asyncio.create_task(self._read())
        return True

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        on_event = self.on_event
        loads = orjson.loads
        try:
            # Bounded by the connection's life; the owner closes every socket at the end.
            while True:
                message = await ws.receive()
                now = time.perf_counter()
                if message.type is not _TEXT:
                    self.closed = self.closed or f"websocket {message.type.name.lower()}"
                    break
                data: str = message.data
                if data.startswith("42"):
                    body = data[2:]
                    if body[:1] != "[":  # an event that asks for an ack: 42<id>[...]
                        body = body.lstrip("0123456789")
                    try:
                        name, payload, *_ = loads(body)
                    except (orjson.JSONDecodeError, ValueError, TypeError):
                        self.on_malformed(data)
                        continue
                    on_event(name, payload, now)
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith("43"):
                    self._answer(data[2:])
                elif data.startswith("41") or data == "1":
                    self.closed = self.closed or "server disconnect"
                    break
        except (OSError, aiohttp.ClientError) as exc:
            self.closed = self.closed or type(exc).__name__
        except asyncio.CancelledError:
            self.closed = self.closed or "closed"
        finally:
            self._fail_acks()
        self.on_closed()

    # -- acked emits ----------------------------------------------------------------------

    async def emit(self, name: str, data: Any, within: float) -> Any:
        """Send `42<id>[name, data]` and return the first argument of the server's ack."""
        ws = self.ws
        if ws is None or self.closed is not None:
            raise ConnectionError("the socket is not connected")
        if self._acks is None:
            self._acks = {}
        ack_id = self._next_ack
        self._next_ack += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await ws.send_str(f"42{ack_id}" + orjson.dumps([name, data]).decode())
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            raise AckTimeout(f"no ack for {name} in {within:g} s") from None
        finally:
            self._acks.pop(ack_id, None)

    def _answer(self, body: str) -> None:
        digits = len(body) - len(body.lstrip("0123456789"))
        if not digits or self._acks is None:
            return
        future = self._acks.get(int(body[:digits]))
        if future is None or future.done():
            return
        try:
            args = orjson.loads(body[digits:])
        except orjson.JSONDecodeError:
            future.set_exception(ConnectionError("malformed ack"))
            return
        future.set_result(args[0] if isinstance(args, list) and args else None)

    def _fail_acks(self) -> None:
        if self._acks:
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"socket closed: {self.closed}"))

    async def close(self) -> None:
        if self.closed is None:
            self.closed = "closed"
        if self.ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class ConnectionRefused(ConnectionError):
    """The server answered the namespace CONNECT with CONNECT_ERROR (`44`)."""


def _refusal(body: str) -> str:
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200]
    if isinstance(error, dict):
        code = (error.get("data") or {}).get("code") if isinstance(error.get("data"),
                                                                   dict) else None
        message = str(error.get("message", ""))[:200]
        return f"{message} ({code})" if code else message
    return str(error)[:200]


# -- many sockets ----------------------------------------------------------------------


def ws_url_of(url: str) -> str:
    """`http://host:port[/prefix]` -> the Engine.IO websocket URL of that server."""
    parts = urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    prefix = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{prefix}/socket.io/?EIO=4&transport=websocket"


async def connect_many(session: aiohttp.ClientSession, ws_url: str | Sequence[str],
                       clients: Sequence[SioClient], in_flight: int, within: float,
                       auth_of: Callable[[int], dict[str, Any] | None] | None = None,
                       on_done: Callable[[int, bool], Awaitable[None] | None] | None = None,
                       ) -> dict[str, Any]:
    """Connect `clients` with at most `in_flight` handshakes at once.

    `ws_url` is one URL or one per client; `auth_of(index)` gives a client's auth
    (default `{token}`); `on_done(index, ok)` is called as each handshake ends.
    """
    gate = asyncio.Semaphore(in_flight)
    durations: list[float] = [0.0] * len(clients)

    async def one(index: int, client: SioClient) -> bool:
        url = ws_url if isinstance(ws_url, str) else ws_url[index]
        async with gate:
            began = time.perf_counter()
            ok = await client.connect(session, url, within,
                                      auth_of(index) if auth_of is not None else None)
            durations[index] = time.perf_counter() - began
        if on_done is not None:
            result = on_done(index, ok)
            if result is not None:
                await result
        return ok

    start = time.perf_counter()
    ok = await asyncio.gather(*(one(i, client) for i, client in enumerate(clients)))
    elapsed = time.perf_counter() - start
    errors = Counter(client.connect_error.split(":")[0] for client in clients
                     if client.connect_error)
    connected = sum(ok)
    return {"sockets": len(clients), "connected": connected, "failed": len(clients) - connected,
            "errors": dict(errors), "elapsed_s": round(elapsed, 3),
            "connects_per_s": round(connected / elapsed, 1) if elapsed > 0 else None,
            "handshake_ms": latency_summary(
                [d for d, good in zip(durations, ok, strict=True) if good])}


async def close_all(clients: Sequence[SioClient], batch: int = 500) -> None:
    for start in range(0, len(clients), batch):
        await asyncio.gather(*(client.close() for client in clients[start:start + batch]))
