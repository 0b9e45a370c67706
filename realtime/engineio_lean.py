"""Less memory per Engine.IO session: a smaller queue, fewer tasks, a timer for pings.

python-engineio 4.x keeps, for every websocket session, beside aiohttp's own state:
an `asyncio.Queue` (four deques, ~3 kB even when empty), a writer task that waits on
the queue inside `wait_for` (a second task, a future and a timer), a receive loop that
wraps every read in `ensure_future` + `wait_for` (a third task, a future and a timer),
and after each pong a task that sleeps until the next ping (a fourth task). Measured
with tracemalloc at 2,000 idle sockets, that is ~8 kB of the ~35 kB a socket costs.

Here, per session:
- `PacketQueue`: the part of `asyncio.Queue` engine.io and realtime/delivery.py use
  (unbounded, `get`/`put`/`*_nowait`, `task_done`/`join`, `qsize`/`empty`), on a list,
  its waiter lists made only when someone waits;
- `LeanSocket`, engine.io's socket with two methods replaced:
  * `schedule_ping` queues the next ping on the server's `PingClock` (one timer for
    every session) instead of starting a sleeping task;
  * `_websocket_handler` reads without a `wait_for` around each read, and has no writer
    task: a put on the queue writes the packet at once, in order, straight to the
    connection as a websocket frame, as realtime/delivery.py does for events (the upgrade
    handshake is unchanged). At once rather than at the next turn of the loop: an ack or
    the CONNECT answer then waits for no other socket's work. The
    timeouts only ever fired for a client that stopped answering pings, and engine.io's
    service task already closes such a session (`check_ping_timeout`, every socket once
    per ping_timeout): its close queues the end of output, whose websocket close ends
    the reader.
The wire protocol is untouched: the same packets, in the same order, at the same times.
A websocket session now runs on aiohttp's two tasks only (stock: six).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import orjson
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .delivery import BINARY, TEXT, ws_frame
from .ids import RandomBytes


class OrjsonDumps:
    """The `json.dumps` that engine.io's and python-socketio's packets call (they pass
    `separators=`; orjson's output is already compact)."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()


class SessionIds:
    """engine.io's session ids (12 random bytes and a 3-byte counter, in URL-safe base64)
    with the random bytes cut from a 4 kB read of os.urandom: one system call per 341 ids
    instead of one per id (two ids per connect: Engine.IO's and Socket.IO's)."""

    def __init__(self) -> None:
        self._random = RandomBytes(4092)
        self._counter = 0

    def __call__(self) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFF
        return base64.urlsafe_b64encode(
            self._random.take(12) + self._counter.to_bytes(3, "big")).decode()


class PacketQueue:
    """An unbounded FIFO with asyncio.Queue's interface, in ~100 bytes when idle."""

    __slots__ = ("_getters", "_items", "_joiners", "_unfinished", "listener")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self.listener: Callable[[], None] | None = None  # told of every put
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._unfinished += 1
        self._wake_a_getter()
        if self.listener is not None:
            self.listener()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)  # a handful of packets at most: no deque needed

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._items:  # woken, then cancelled: pass the wake-up on
                    self._wake_a_getter()
                raise
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner

    def _wake_a_getter(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class PingClock:
    """When each session is pinged next, on one timer. Every session waits the same
    ping interval, so due times come in the order they were set: a queue of
    (due, sid) and one timer for its head serve them all, where a timer per session
    cost a heap push per ping and, with its handle and bound method, about 0.5 kB of an
    idle socket (BENCHMARKS.md, issue 5 (a)). A session that closed or was re-armed no
    longer matches its entry, which is skipped."""

    SLACK = 0.05  # seconds late, at most, so that one wake-up serves a burst of sessions

    def __init__(self, sockets: dict[str, Any], interval: float) -> None:
        self._sockets = sockets  # engine.io's sessions by sid
        self.interval = interval
        self._due: collections.deque[tuple[float, str]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, sid: str) -> float:
        """Ping the session `sid` one interval from now; returns when."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval
        self._due.append((due, sid))
        if self._timer is None:
            self._timer = loop.call_at(due + self.SLACK, self._sweep, loop)
        return due

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        queue, now = self._due, loop.time()
        while queue and queue[0][0] <= now:
            due, sid = queue.popleft()
            socket = self._sockets.get(sid)
            if socket is not None and getattr(socket, "_ping_due", None) == due:
                socket._ping()
        if queue:
            self._timer = loop.call_at(queue[0][0] + self.SLACK, self._sweep, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()


class LeanSocket(AsyncSocket):
    """engine.io's AsyncSocket with a timer for pings and no task of its own per websocket.

    Sessions are created by engine.io as AsyncSocket and re-classed by `adopt` before
    their first ping is scheduled (the class adds no per-instance layout)."""

    _ping_due: float | None = None  # when PingClock pings this session next
    _ws_out: tuple[asyncio.Transport, Any] | None = None  # (connection, websocket)
    _flush_scheduled = False
    _closer: asyncio.Task[Any] | None = None  # closes the websocket after the last packet
    # engine.io's attributes (BaseSocket.__init__), typed for mypy
    last_ping: float | None
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool

    def schedule_ping(self) -> None:
        # As stock: a new ping only once the previous one was answered (last_ping set).
        if self.last_ping:
            self.last_ping = None
            self._ping_due = self.server.ping_clock.add(self.sid)

    def _ping(self) -> None:
        self._ping_due = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()  # what check_ping_timeout measures from
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))

    async def send(self, pkt: Any) -> None:
        """Stock's, with its ping check inline and without the log call: every packet the
        session sends (the CONNECT answer, acks) saved two coroutines."""
        if self.closed:
            raise eio_exceptions.SocketIsClosedError()
        last_ping = self.last_ping
        if last_ping and time.time() - last_ping > self.server.ping_timeout:
            await super().send(pkt)  # stock's: closes the session, sends nothing
            return
        self.queue.put_nowait(pkt)

    async def receive_message(self, data: str) -> None:
        """`receive` of a text MESSAGE packet that carries a Socket.IO packet (the text
        after the `4` starts with a digit, so engine.io keeps it as text): the message
        handler, as `_trigger_event` runs it when `async_handlers` is off (python-socketio
        turns it off), without the packet object, the log call and the two wrappers."""
        if self.server.async_handlers:  # pragma: no cover  # python-socketio: always off
            await self.receive(eio_packet.Packet(eio_packet.MESSAGE, data=data))
            return
        handler = self.server.handlers.get("message")
        if handler is None:
            return
        try:
            answer = handler(self.sid, data)
            if inspect.isawaitable(answer):
                await answer
        except Exception:
            self.server.logger.exception("message async handler error")

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self._ping_due = None  # the clock holds its sid only: the session is freed now
        await super().close(wait=wait, abort=abort, reason=reason)

    def attach_native(self, conn: Any, head: bytes) -> None:
        """The session's websocket is realtime/wsfront.py's connection: no read loop here
        (the connection hands packets to `receive`), output straight to its transport.
        `head` (the 101) goes out in one write with what is queued (the OPEN packet)."""
        self.connected = True
        self.upgraded = True
        transport = conn.transport
        self._ws_out = (transport, conn)
        self.queue.listener = self._flush  # each packet goes out as it is queued
        frames, ended = self._take_frames()
        transport.write(head + frames)
        if ended:  # closed while connecting: as _flush does at the end of output
            self._ws_out = None
            self.queue.listener = None
            self._closer = asyncio.ensure_future(conn.close())

    async def _websocket_handler(self, ws: Any) -> None:
        """Stock's, minus the wait_for around every read and every queue wait."""
        limit = self.server.max_http_buffer_size

        async def websocket_wait() -> Any:
            data = await ws.wait()
            if data and len(data) > limit:
                raise ValueError("packet is too large")
            return data

        if self.connected:
            if not await self._upgrade_handshake(websocket_wait, ws):
                return
        else:
            self.connected = True
            self.upgraded = True

        transport = getattr(ws, "transport", None)
        writer = None
        if transport is None:  # not our websocket wrapper: a writer task, as stock
            writer = asyncio.ensure_future(self._write_forever(ws))
        else:
            self._ws_out = (transport, ws)
            self.queue.listener = self._flush  # each packet goes out as it is queued
            self._flush_soon()  # what was queued before (OPEN, or packets of the upgrade)
        while True:
            try:
                data = await websocket_wait()
            except (Exception, asyncio.CancelledError):  # as stock: any failure ends it
                break
            if data is None:
                break
            try:
                await self.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
        self.queue.put_nowait(None)  # the end of output
        # aiohttp cancels this handler when the connection drops (and passes the cancel on
        # to the writer it waits for). The session must still end here (as stock's, whose
        # loops swallow it), or engine.io never drops it.
        with contextlib.suppress(asyncio.CancelledError):
            if writer is not None:
                await writer
            else:
                self._send_queued()
                await ws.close()
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    # -- output without a writer task ---------------------------------------------------
    # Packets put on the queue of a websocket session are written as they are put (what
    # was queued before the websocket was attached: at the next turn of the loop),
    # straight to the connection as websocket frames (like realtime/delivery.py), in
    # queue order; a None ends the output and closes the websocket, as stock's writer.

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._ws_out
        if out is not None and self._send_queued():
            self._closer = asyncio.ensure_future(out[1].close())

    def _send_queued(self) -> bool:
        """Write what is queued, in one write; True (and no more output) once the None
        was met."""
        out = self._ws_out
        if out is None:
            return False
        frames, ended = self._take_frames()
        if frames and not out[0].is_closing():
            out[0].write(frames)
        if ended:
            self._ws_out = None
            self.queue.listener = None
        return ended

    def _take_frames(self) -> tuple[bytes, bool]:
        """The queued packets as websocket frames, and whether the end (None) was met."""
        queue = self.queue
        frames: list[bytes] = []
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                return b"".join(frames), True
            if pkt.packet_type == eio_packet.OPEN:
                pkt.json = OrjsonDumps  # engine.io's stdlib json: 1.5 % of a connect
            encoded = pkt.encode()
            if isinstance(encoded, str):
                frames.append(ws_frame(encoded.encode(), TEXT))
            else:
                frames.append(ws_frame(encoded, BINARY))
        return b"".join(frames), False

    async def _upgrade_handshake(self, websocket_wait: Any, ws: Any) -> bool:
        """Polling -> websocket: the probe exchange, exactly as stock."""
        self.upgrading = True  # hold packet sends during the upgrade
        try:
            data = await websocket_wait()
        except OSError:
            return False
        probe = eio_packet.Packet(encoded_packet=data)
        if probe.packet_type != eio_packet.PING or probe.data != "probe":
            self.upgrading = False
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        try:
            data = await websocket_wait()
        except OSError:
            self.upgrading = False
            return False
        if eio_packet.Packet(encoded_packet=data).packet_type != eio_packet.UPGRADE:
            self.upgraded = False
            self.upgrading = False
            return False
        self.upgraded = True
        self.upgrading = False
        return True

    async def _write_forever(self, ws: Any) -> None:
        queue = self.queue
        while True:
            try:
                packets = [await queue.get()]
            except asyncio.CancelledError:  # as stock's poll(): the end, not an error
                break
            queue.task_done()
            if packets[0] is None:
                break
            stop = False
            while not queue.empty():
                more = queue.get_nowait()
                queue.task_done()
                if more is None:  # send what came before it, then stop
                    stop = True
                    break
                packets.append(more)
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except (Exception, asyncio.CancelledError):
                break
            if stop:
                break
        await ws.close()


def adopt(socket: Any) -> None:
    """Make a freshly created engine.io session a LeanSocket."""
    if type(socket) is AsyncSocket:
        socket.__class__ = LeanSocket
