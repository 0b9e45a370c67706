"""Work-arounds for python-engineio's aiohttp driver, applied to one server instance.

Found against python-engineio 4.x here (see the project guide):
- A long-polling POST body is read with one `read(n)`, which returns whatever has
  arrived so far: a large message is silently truncated. We hand engine.io a body
  reader that reads exactly Content-Length bytes (or refuses with a 400 and closes
  the session when the body is short or over the limit), never a partial body.
- The WebSocket is created with aiohttp's default `compress=True`, so
  permessage-deflate is accepted whenever a client offers it. We turn it off: a
  zlib context per socket costs far more memory than the socket itself, every frame
  pays CPU for it, and compressing attacker-influenced text beside secrets is the
  CRIME/BREACH pattern. Task events are small JSON; plain frames are the right call.
- A client's CLOSE packet closes the session without waking a pending long-poll
  GET, which then hangs for ping_interval + ping_timeout holding the session's
  resources. We wake it as soon as the session is closed.
- A POST to a session that is closed but not yet dropped answered 500 (a KeyError out
  of engine.io). We drop the closed session first, so it gets engine.io's 400.
- Packets after a CLOSE in the same long-polling payload were still handled: `1<RS>40`
  left a half-connected socket in python-socketio's rooms for good. They are dropped.
- An invalid Engine.IO packet (empty, an unknown type, a type no client sends, bad
  base64) does not end the session: over a websocket an undecodable one escapes
  the receive loop as an exception, leaving the session open until its ping
  timeout; a well-formed but unexpected one is ignored; in a long-poll POST it is
  logged and answered 200. An invalid Socket.IO packet inside a valid MESSAGE is
  logged as an error and the session goes on. We close the session at once (the
  websocket with code 1002), without logging a stack trace per bad packet.
- A second upgrade WebSocket for a session that is still upgrading is accepted, and
  both wait for a probe without any timeout: a client can hold upgrade websockets
  open forever. We refuse a websocket for a session that already has one (400),
  give the probe `ping_timeout`, and close a session's websocket with the session.
- A connection that never sends the Socket.IO CONNECT stays open as long as it
  answers pings. `close_unconnected` closes it after a deadline.
- `disconnect(sid)`, which engine.io calls when a long-poll request fails (a body too
  large, short or invalid), waits for the session's queue to drain; with no GET
  pending nothing drains it, so the failing POST never got its 400 and its task
  stayed forever. We close without waiting (the queue is woken as above).

Beside the fixes, every session is made leaner in memory (realtime/engineio_lean.py:
a smaller queue, a timer instead of a task for pings, no wait_for task per read).

The patch replaces entries of this server's copy of the driver table only; the
module-level table that other servers share is left untouched.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from engineio import exceptions as eio_exceptions
from engineio.async_drivers import aiohttp as eio_aiohttp

from . import engineio_lean, wsfront

log = logging.getLogger(__name__)
CONNECT_DEADLINE_SLACK = 0.05  # seconds a connect deadline may be enforced late
CLIENT_PACKET_TYPES = frozenset("1345")  # CLOSE, PONG, MESSAGE, UPGRADE
PROBE = "2probe"  # the PING a client sends on an upgrade websocket, only there
CLOSE_TIMEOUT = 2.0  # seconds a closing websocket waits for the client's close frame
PROTOCOL_ERROR = 1002  # websocket close code for an invalid packet
LOG_EVERY = 10.0  # seconds between two log lines about invalid packets


def valid_client_packet(text: str, upgrading: bool = False) -> bool:
    """An Engine.IO packet a client may send over a websocket (text frame)."""
    if not text:
        return False
    return text[0] in CLIENT_PACKET_TYPES or (upgrading and text == PROBE)


def valid_polling_payload(body: bytes) -> bool:
    """A long-poll POST body: packets separated by 0x1e, `b<base64>` for binary."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for item in text.split("\x1e"):
        if item[:1] == "b":
            try:
                base64.b64decode(item[1:], validate=True)
            except (binascii.Error, ValueError):
                return False
        elif not valid_client_packet(item):
            return False
    return True


class _Throttled:
    """Logs one line per LOG_EVERY seconds at most, counting what it skipped."""

    def __init__(self) -> None:
        self.last = -LOG_EVERY
        self.skipped = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < LOG_EVERY:
            self.skipped += 1
            return
        self.last = now
        if self.skipped:
            message += f" (and {self.skipped} more since the last line)"
            self.skipped = 0
        log.warning(message, *args)


class _ExactBody:
    """Stands in for `environ['wsgi.input']`: reads the whole body or refuses."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._request = request
        self._limit = limit

    async def read(self, length: int = -1) -> bytes:
        content = self._request.content
        if length > 0:
            try:
                return await content.readexactly(length)
            except Exception:  # short body, connection lost: never hand over a part
                raise eio_exceptions.ContentTooLongError("incomplete request body") from None
        # No Content-Length (chunked): read up to the limit, refuse anything longer.
        body = await content.read(self._limit + 1)
        while not content.at_eof() and len(body) <= self._limit:
            body += await content.read(self._limit + 1 - len(body))
        if len(body) > self._limit:
            raise eio_exceptions.ContentTooLongError("request body too large")
        return body


class _CheckedBody(_ExactBody):
    """The whole body, refused (400, session closed) unless its packets are valid."""

    async def read(self, length: int = -1) -> bytes:
        body = await super().read(length)
        if not valid_polling_payload(body):
            raise eio_exceptions.ContentTooLongError("invalid Engine.IO packet")
        return body


class _PlainWebSocket(eio_aiohttp.WebSocket):
    """engine.io's aiohttp WebSocket wrapper: no permessage-deflate, one websocket per
    session, a bounded upgrade, and invalid packets end the session."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        native = environ.get(wsfront.NATIVE)
        if native is not None:
            return await self._serve_native(native, environ)
        request = environ["aiohttp.request"]
        socket = getattr(self.handler, "__self__", None)
        sid = getattr(socket, "sid", None)
        attached: dict[str, _PlainWebSocket] = self.server.attached_websockets
        if sid is not None and sid in attached:
            return web.Response(status=400, text="this session already has a websocket")
        self._socket = socket
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False,
            timeout=CLOSE_TIMEOUT)
        if sid is not None:
            attached[sid] = self
        try:
            await self._sock.prepare(request)
            self.environ = environ
            # Publish this connection's transport for direct fan-out (realtime/delivery.py)
            # and for the session's own packets (realtime/engineio_lean.py).
            transport = self.transport = request.transport
            registry: dict[str, Any] = self.server.direct_transports
            if sid is not None and transport is not None:
                registry[sid] = transport
            try:
                await self.handler(self)
            finally:
                if sid is not None and registry.get(sid) is transport:
                    del registry[sid]
        finally:
            if sid is not None and attached.get(sid) is self:
                del attached[sid]
            if socket is not None and socket.upgrading and not socket.upgraded:
                socket.upgrading = False  # a failed upgrade: polling goes on
        return self._sock

    async def _serve_native(self, conn: wsfront.FrontProtocol, environ: dict[str, Any]) -> Any:
        """A new session straight over websocket, on realtime/wsfront.py's connection:
        the 101, then the session reads from and writes to that connection directly."""
        socket = getattr(self.handler, "__self__", None)
        if not isinstance(socket, engineio_lean.LeanSocket):  # pragma: no cover  # adopt()
            raise TypeError("a native websocket needs a LeanSocket session")
        if socket.connected or socket.upgrading:  # pragma: no cover  # wsfront serves no sid
            raise RuntimeError("a native websocket is for a new session only")
        try:
            head = conn.accept(socket, environ)
        except OSError:  # the client left during the handshake
            await socket.close(wait=False, abort=True,
                               reason=self.server.reason.TRANSPORT_CLOSE)
            return wsfront.ACCEPTED
        socket.attach_native(conn, head)
        return wsfront.ACCEPTED

    async def wait(self) -> str | bytes:
        socket = getattr(self, "_socket", None)
        upgrading = bool(socket is not None and socket.upgrading)
        receive = self._sock.receive()
        if upgrading:  # stock waits for the probe forever
            try:
                msg = await asyncio.wait_for(receive, self.server.ping_timeout)
            except TimeoutError:
                await self._sock.close(code=PROTOCOL_ERROR, message=b"no upgrade probe")
                raise OSError("no upgrade probe") from None
        else:
            msg = await receive
        if msg.type == WSMsgType.BINARY:
            return bytes(msg.data)
        if msg.type != WSMsgType.TEXT:
            raise OSError()  # closed or failed: the stock loop ends the session
        if not valid_client_packet(msg.data, upgrading):
            self.server.invalid_packets.warning(
                "closed an Engine.IO session that sent an invalid packet %r",
                msg.data[:32])
            await self._sock.close(code=PROTOCOL_ERROR, message=b"invalid packet")
            raise OSError("invalid Engine.IO packet")  # the loop ends, the session closes
        return str(msg.data)

    def close_soon(self) -> None:
        """Close this websocket without waiting (the session it served is gone)."""
        sock = self._sock
        if sock is not None and not sock.closed:
            task = asyncio.ensure_future(sock.close())
            self.server.background.add(task)
            task.add_done_callback(self.server.background.discard)


def apply(eio_server: Any) -> None:
    """Install the work-arounds on one engineio.AsyncServer."""
    limit = eio_server.max_http_buffer_size
    translate = eio_server._async["translate_request"]
    make_response = eio_server._async["make_response"]

    def translate_request(request: web.Request | wsfront.NativeRequest) -> dict[str, Any]:
        if isinstance(request, wsfront.NativeRequest):
            return request.environ
        environ: dict[str, Any] = translate(request)
        environ["wsgi.input"] = _CheckedBody(request, limit)
        environ["wsgi.errors"] = sys.stderr
        return environ

    def make_native_or_aiohttp_response(status: str, headers: list[tuple[str, str]],
                                        payload: bytes, environ: dict[str, Any]) -> Any:
        if wsfront.NATIVE in environ:
            return wsfront.NativeResponse(status, headers, payload)
        return make_response(status, headers, payload, environ)

    eio_server._async = {**eio_server._async, "translate_request": translate_request,
                         "make_response": make_native_or_aiohttp_response,
                         "websocket": _PlainWebSocket}
    eio_server.direct_transports = {}
    eio_server.attached_websockets = {}
    eio_server.background = set()
    eio_server.invalid_packets = _Throttled()
    _lean_sessions(eio_server)

    on_disconnect = eio_server.handlers["disconnect"]

    server_close = eio_server.reason.SERVER_DISCONNECT

    async def disconnect_and_release(sid: str, *args: Any) -> Any:
        try:
            return await on_disconnect(sid, *args)
        finally:
            socket = eio_server.sockets.get(sid)
            # A close by the server queues a CLOSE packet next and waits for the queue to
            # drain: the writer must stay alive for it. Any other close sends nothing.
            if socket is not None and (not args or args[0] != server_close):
                socket.queue.put_nowait(None)  # ends a waiting poll() at once
            websocket = eio_server.attached_websockets.get(sid)
            if websocket is not None and socket is not None and not socket.upgraded:
                websocket.close_soon()  # an upgrade still waiting for its probe

    eio_server.handlers["disconnect"] = disconnect_and_release

    on_message = eio_server.handlers["message"]

    async def message_or_close(sid: str, data: Any) -> Any:
        # python-socketio raises (ValueError, KeyError, TypeError...) on a packet it
        # cannot decode or dispatch; the application's own handlers never raise.
        try:
            return await on_message(sid, data)
        except Exception as exc:
            eio_server.invalid_packets.warning(
                "closed an Engine.IO session that sent an invalid Socket.IO packet (%s: %s)",
                type(exc).__name__, str(exc)[:100])
            await close_session(eio_server, sid)
            return None

    eio_server.handlers["message"] = message_or_close

    async def disconnect_without_waiting(sid: str | None = None) -> None:
        for one in [sid] if sid is not None else list(eio_server.sockets):
            await close_session(eio_server, one)
            eio_server.sockets.pop(one, None)

    eio_server.disconnect = disconnect_without_waiting
    _drop_closed_sessions_first(eio_server)
    _ignore_messages_after_close(eio_server)


async def close_session(eio_server: Any, sid: str) -> None:
    """End one Engine.IO session now: disconnect handlers run, its websocket closes."""
    socket = eio_server.sockets.get(sid)
    if socket is None or socket.closed or socket.closing:
        return
    await socket.close(wait=False, abort=False, reason=eio_server.reason.SERVER_DISCONNECT)
    websocket = eio_server.attached_websockets.get(sid)
    if websocket is not None:
        websocket.close_soon()


def close_unconnected(eio_server: Any, seconds: float,
                      connected: Callable[[str], bool]) -> None:
    """Close every Engine.IO session that has not completed the Socket.IO CONNECT
    `seconds` after it opened. One timeout for all, so the deadlines fall due in the
    order the sessions opened: a queue and one timer serve them all (a timer per
    connection was 2 % of a connect's CPU)."""
    on_connect = eio_server.handlers["connect"]
    deadlines: collections.deque[tuple[float, str]] = collections.deque()
    timer: asyncio.TimerHandle | None = None

    async def connect_with_deadline(sid: str, environ: dict[str, Any]) -> Any:
        result = await on_connect(sid, environ)
        loop = asyncio.get_running_loop()
        deadlines.append((loop.time() + seconds, sid))
        if timer is None:
            arm(loop)
        return result

    def arm(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal timer
        # A little late, so that one wake-up serves the connections of a burst.
        timer = loop.call_at(deadlines[0][0] + CONNECT_DEADLINE_SLACK, sweep, loop)

    def sweep(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal timer
        timer = None
        now = loop.time()
        while deadlines and deadlines[0][0] <= now:
            expire(deadlines.popleft()[1])
        if deadlines:
            arm(loop)

    def expire(sid: str) -> None:
        socket = eio_server.sockets.get(sid)
        if socket is None or socket.closed or socket.closing or connected(sid):
            return
        task = asyncio.ensure_future(close_session(eio_server, sid))
        eio_server.background.add(task)
        task.add_done_callback(eio_server.background.discard)

    eio_server.handlers["connect"] = connect_with_deadline


def _lean_sessions(eio_server: Any) -> None:
    """Sessions get a PacketQueue and become LeanSockets (realtime/engineio_lean.py):
    the queue through the server's `create_queue` hook, the class when engine.io hands
    the new session to the connect handler, before its first ping is scheduled."""
    eio_server.create_queue = engineio_lean.PacketQueue
    eio_server.ping_clock = engineio_lean.PingClock(eio_server.sockets, eio_server.ping_interval)
    eio_server.generate_id = engineio_lean.SessionIds()  # python-socketio's sids too
    on_connect = eio_server.handlers["connect"]

    async def connect_lean(sid: str, environ: dict[str, Any]) -> Any:
        socket = eio_server.sockets.get(sid)
        if socket is not None:
            engineio_lean.adopt(socket)
        return await on_connect(sid, environ)

    eio_server.handlers["connect"] = connect_lean


def _ignore_messages_after_close(eio_server: Any) -> None:
    """A long-polling payload is handled packet by packet even after one of them closed
    the session: with `1<RS>40` python-socketio registered a new connection for a session
    already gone (its environ deleted), failed on a KeyError and kept the half-connected
    socket in its rooms forever. Messages of a closed or closing session are dropped."""
    on_message = eio_server.handlers["message"]

    async def message_of_an_open_session(sid: str, *args: Any) -> Any:
        socket = eio_server.sockets.get(sid)
        if socket is None or socket.closed or socket.closing:
            return None
        return await on_message(sid, *args)

    eio_server.handlers["message"] = message_of_an_open_session


def _drop_closed_sessions_first(eio_server: Any) -> None:
    """engine.io's POST branch looks a session up with `_get_socket`, which raises KeyError
    for a session that is closed but not yet dropped (after a client's CLOSE packet, say):
    the request failed with a 500. We drop such a session before engine.io looks, as
    `_get_socket` itself would, so it answers 400 "Invalid session" like for any unknown
    one. (Installed before `attach`, which routes requests to `handle_request`.)"""
    handle_request = eio_server.handle_request

    async def handle_request_of_live_sessions(request: web.Request) -> Any:
        sid = request.query.get("sid")
        socket = eio_server.sockets.get(sid) if sid else None
        if socket is not None and socket.closed:
            del eio_server.sockets[sid]
        return await handle_request(request)

    eio_server.handle_request = handle_request_of_live_sessions
