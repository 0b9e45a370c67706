"""Websocket connects without aiohttp's per-request machinery.

Why: a websocket that aiohttp serves keeps, for its whole life, a request handler, its
parser, the request and response objects and a chain of suspended handler coroutines
(middlewares, engine.io, the read loop): about half of what an idle socket costs, and a
fifth of the CPU of a connect (BENCHMARKS.md, issue 5 (a)).

What: every accepted connection starts with `FrontProtocol`, which reads the head of its
first request. A new Engine.IO session asked for straight over websocket
(`GET /socket.io/?EIO=4&transport=websocket`, no `sid`, a well-formed RFC 6455 upgrade)
is served here: a plain one by realtime/eio_native.py (engine.io's steps without its
request dispatch), any other by engine.io's own `handle_request`, on an environ built
from the head; either way the origin check, the version check and the connect handler
are engine.io's, and refusals are written back as the same HTTP answers. Once accepted,
this protocol object *is* the connection: it writes the 101, parses the client's frames
(masked, fragmented, control frames, the size limit, UTF-8) and hands each Engine.IO
packet to the session in order, with a task only while packets are being handled; an
idle socket has no task and no coroutine frame at all. Output is unchanged: the
session's packets and the relay's events are written to the transport
(realtime/engineio_lean.py, realtime/delivery.py).

Everything else (REST, long-polling, the polling -> websocket upgrade, and any request
this code does not fully understand) is handed, bytes untouched, to aiohttp's own
protocol, which then owns the connection as if it had accepted it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import http
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from . import eio_native
from .delivery import ws_frame
from .ratelimit import address_of

if TYPE_CHECKING:
    from .engineio_lean import LeanSocket

log = logging.getLogger(__name__)
MAX_HEADER_KEYS = 512

NATIVE = "taskmaster.native"  # environ key: the FrontProtocol serving this handshake
ADDRESS = "taskmaster.address"  # environ key: the client's rate-limit address
ACCEPTED = eio_native.ACCEPTED  # what a handshake returns for an accepted native socket
MAX_HEAD = 8192  # bytes of request head read before giving the connection to aiohttp
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
CLOSE, PING, PONG = 0x8, 0x9, 0xA
CLOSE_TIMEOUT = 2.0  # seconds a closing websocket waits for the client's close frame
# Packets (or bytes of packets) waiting to be handled before the socket stops being read,
# as aiohttp's reader pauses past its queue limit: a flooding client waits on TCP.
INBOX_HIGH = 64
INBOX_HIGH_BYTES = 1 << 16
SNIFF, HANDSHAKE, OPEN, CLOSING, DONE = range(5)


class NativeRequest:
    """What engine.io's `handle_request` is given for a native handshake: translated by
    realtime/engineio_fixes.py into the environ built here."""

    __slots__ = ("environ", "query")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.query: dict[str, str] = {}  # never a sid: those go to aiohttp


class NativeResponse:
    """engine.io's answer to a refused native handshake (an error status)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class FrontServer(web.Server):
    """aiohttp's Server, whose connections start with a FrontProtocol (set up by
    `install`; the class adds no state aiohttp knows about)."""

    front: Front

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]  # a front, not a handler
        return FrontProtocol(self.front)

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # aiohttp's signature
        for conn in list(self.front.connections):
            conn.close_native(1001, b"server shutting down")
        await super().shutdown(timeout)


class Front:
    """What the native path needs from the app, resolved once at start-up."""

    def __init__(self, server: web.Server, app: web.Application) -> None:
        from handlers.protection import POLICY, SERVER, SOCKETS

        from . import keys

        self.aiohttp_server = server
        self.app = app
        self.path = SOCKETS
        self.prefix = f"GET {SOCKETS}".encode()  # how a request the front may serve starts
        policy = app.get(POLICY)
        headers = [*(policy.headers if policy is not None else ()), ("Server", SERVER)]
        self.extra_headers = "".join(f"{name}: {value}\r\n" for name, value in headers)
        gateway = app.get(keys.SOCKETS)
        self.eio: Any = gateway.sio.eio if gateway is not None else None
        self.connections: set[FrontProtocol] = set()
        # Header names as sent -> their environ keys: the same few names come with every
        # handshake (bounded: the names are the clients' to choose).
        self.header_keys: dict[str, str] = {}
        self.accepted = 0  # native websockets accepted (a metric for tests and benchmarks)
        self._trusted: tuple[Any, ...] | None = None

    def trusted(self) -> tuple[Any, ...]:
        if self._trusted is None:
            from . import keys

            limits = self.app.get(keys.RATE_LIMITS)  # set at start-up, before any connect
            if limits is None:
                return ()
            self._trusted = limits.trusted
        return self._trusted

    def aiohttp_protocol(self) -> asyncio.Protocol:
        return web.Server.__call__(self.aiohttp_server)


def install(server: web.Server, app: web.Application) -> FrontServer:
    """Make `server` (aiohttp's, made by the runner) start connections with a front."""
    server.__class__ = FrontServer
    front_server: FrontServer = server  # type: ignore[assignment]  # re-classed just above
    front_server.front = Front(server, app)
    return front_server


def _unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    size = len(data)
    if not size:
        return b""
    key = (bytes(mask) * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def _accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class FrontProtocol(asyncio.Protocol):
    __slots__ = ("_buf", "_closer", "_fragments", "_fragments_size", "_front", "_inbox",
                 "_inbox_bytes", "_opcode", "_paused", "_reader", "_state", "socket",
                 "transport")

    def __init__(self, front: Front) -> None:
        self._front = front
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = SNIFF
        self.socket: LeanSocket | None = None
        self._inbox: list[str | bytes] = []
        self._inbox_bytes = 0
        self._reader: asyncio.Task[None] | None = None
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._opcode = 0
        self._paused = False
        self._closer: asyncio.TimerHandle | None = None

    # -- the first request ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state in (OPEN, CLOSING):
            self._frames(data)
            return
        if state == DONE:  # failed: nothing more is read
            return
        self._buf += data
        if state == HANDSHAKE:  # a client waits for the 101: this much is not a client
            if len(self._buf) > self._front.eio.max_http_buffer_size + MAX_HEAD and \
                    self.transport is not None:
                self.transport.abort()
            return
        buf, prefix = self._buf, self._front.prefix
        if buf[:len(prefix)] != prefix[:len(buf)]:
            self._hand_to_aiohttp()
            return
        end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(buf) > MAX_HEAD:  # aiohttp answers (or refuses) what is this long
                self._hand_to_aiohttp()
            return
        environ = self._native_environ(bytes(buf[:end]))
        if environ is None:
            self._hand_to_aiohttp()
            return
        del buf[:end + 4]
        self._state = HANDSHAKE
        task = asyncio.get_running_loop().create_task(self._handshake(environ))
        self._reader = task  # a reference until the handshake ends

    def _hand_to_aiohttp(self) -> None:
        transport, data = self.transport, bytes(self._buf)
        self._state, self._buf, self.transport = DONE, bytearray(), None
        if transport is None:
            return
        protocol = self._front.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)

    def _native_environ(self, head: bytes) -> dict[str, Any] | None:
        """The environ of a request this path serves, or None (aiohttp serves it)."""
        if self._front.eio is None:
            return None
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover  # latin-1 decodes any bytes
            return None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] != "HTTP/1.1":
            return None
        target = parts[1]
        path, _, query = target.partition("?")
        if path != self._front.path:
            return None
        if "%" in query or "+" in query or "sid" in query:  # the general case: as engine.io
            params = urllib.parse.parse_qs(query)
            if params.get("transport") != ["websocket"] or "sid" in params:
                return None
        elif [p for p in query.split("&") if p.startswith("transport=")] != \
                ["transport=websocket"]:
            return None
        environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path,
                                   "QUERY_STRING": query, "RAW_URI": target,
                                   "SERVER_PROTOCOL": "HTTP/1.1"}
        forwarded: list[str] = []
        keys = self._front.header_keys
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            key = keys.get(name)
            if key is None:
                if not colon or not name or name != name.strip() or " " in name:
                    return None  # folded or malformed: aiohttp answers it
                key = "HTTP_" + name.upper().replace("-", "_")
                if len(keys) < MAX_HEADER_KEYS:
                    keys[name] = key
            value = value.strip()
            if key == "HTTP_X_FORWARDED_FOR":
                forwarded.append(value)
            if key in environ:
                environ[key] += "," + value
            else:
                environ[key] = value
        if "HTTP_CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        connection = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
        try:
            key_ok = len(binascii.a2b_base64(key, strict_mode=True)) == 16
        except (binascii.Error, ValueError):
            key_ok = False
        if (environ.get("HTTP_UPGRADE", "").lower() != "websocket" or "upgrade" not in connection
                or environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13" or not key_ok
                or "HTTP_HOST" not in environ):
            return None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        remote = peer[0] if isinstance(peer, tuple) and peer else None
        environ["REMOTE_ADDR"] = remote or ""
        environ[ADDRESS] = address_of(remote, forwarded, self._front.trusted())
        environ[NATIVE] = self
        return environ

    async def _handshake(self, environ: dict[str, Any]) -> None:
        eio = self._front.eio
        try:
            if eio_native.plain_query(environ["QUERY_STRING"]):
                answer = await eio_native.open_session(eio, self, environ)
            else:
                answer = await eio.handle_request(NativeRequest(environ))
        except Exception:
            log.exception("native websocket handshake failed")
            answer = NativeResponse("500 INTERNAL SERVER ERROR", [], b"Internal Server Error")
        finally:
            if self._reader is asyncio.current_task():
                self._reader = None
            environ.pop(NATIVE, None)  # the environ outlives the handshake (python-socketio)
        if answer is ACCEPTED:
            if self._buf and self._state in (OPEN, CLOSING):
                self._frames(b"")
            return
        if not isinstance(answer, NativeResponse):  # pragma: no cover  # engine.io's contract
            answer = NativeResponse("500 INTERNAL SERVER ERROR", [], b"Internal Server Error")
        self._answer(answer)

    def _answer(self, answer: NativeResponse) -> None:
        """An HTTP answer to a refused handshake, then the connection is closed."""
        transport = self.transport
        self._state = DONE
        if transport is None or transport.is_closing():
            return
        code = int(answer.status.split()[0])
        head = [f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in answer.headers
                 if name.lower() not in {"content-length", "connection"}]
        head.append(f"Content-Length: {len(answer.body)}\r\nConnection: close\r\n")
        head.append(self._front.extra_headers)
        transport.write("".join(head).encode("latin-1") + b"\r\n" + answer.body)
        transport.close()

    def accept(self, socket: LeanSocket, environ: dict[str, Any]) -> bytes:
        """Called by engine.io's websocket wrapper once the session exists: from now on
        this object is the session's websocket. Returns the 101, for the session to write
        together with its first packets (one write, one TCP segment). (No TCP_NODELAY
        call: asyncio and uvloop set it on every TCP connection.)"""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise OSError("the connection closed during the handshake")
        key = _accept_key(environ["HTTP_SEC_WEBSOCKET_KEY"])
        head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {key}\r\n"
                f"{self._front.extra_headers}\r\n").encode("latin-1")
        self.socket = socket
        self._state = OPEN
        front = self._front
        front.connections.add(self)
        front.accepted += 1
        eio = front.eio
        eio.direct_transports[socket.sid] = transport
        eio.attached_websockets[socket.sid] = self
        return head

    # -- frames ---------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        buf = self._buf
        if data:
            buf += data
        pos, size = 0, len(buf)
        limit = self._front.eio.max_http_buffer_size
        while self._state == OPEN or self._state == CLOSING:
            if size - pos < 2:
                break
            first, second = buf[pos], buf[pos + 1]
            opcode, length, header = first & 0x0F, second & 0x7F, 2
            if first & 0x70 or not second & 0x80:  # extension bits, or an unmasked frame
                self._fail(1002, b"protocol error")
                return
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if opcode >= CLOSE:
                if not first & 0x80 or length > 125:
                    self._fail(1002, b"protocol error")
                    return
            elif length + self._fragments_size > limit:
                self._fail(1009, b"message too big")
                return
            start = pos + header + 4
            if size < start + length:
                break
            payload = _unmask(buf[start:start + length], buf[pos + header:start])
            pos = start + length
            self._frame(opcode, bool(first & 0x80), payload)
        if self._state == OPEN or self._state == CLOSING:
            del buf[:pos]
        else:
            buf.clear()

    def _frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode == 0x0 or opcode == 0x1 or opcode == 0x2:
            if (opcode == 0x0) != (self._fragments is not None):
                self._fail(1002, b"protocol error")  # a continuation out of place
                return
            if opcode:
                self._opcode = opcode
            if not final:
                if self._fragments is None:
                    self._fragments = []
                self._fragments.append(payload)
                self._fragments_size += len(payload)
                return
            if self._fragments is not None:
                payload = b"".join((*self._fragments, payload))
                self._fragments, self._fragments_size = None, 0
            self._message(self._opcode, payload)
        elif opcode == CLOSE:
            self._closed_by_client(payload)
        elif opcode == PING:
            if self.transport is not None and self._state == OPEN:
                self.transport.write(ws_frame(payload, PONG))
        elif opcode != PONG:
            self._fail(1002, b"protocol error")

    def _message(self, opcode: int, payload: bytes) -> None:
        if self._state != OPEN:
            return
        data: str | bytes = payload
        if opcode == 0x1:
            try:
                data = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, b"invalid UTF-8")
                return
            from .engineio_fixes import valid_client_packet

            if not valid_client_packet(data):
                self._front.eio.invalid_packets.warning(
                    "closed an Engine.IO session that sent an invalid packet %r", data[:32])
                self._fail(1002, b"invalid packet")
                return
        self._inbox.append(data)
        self._inbox_bytes += len(payload)
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._handle_inbox())
        if (len(self._inbox) >= INBOX_HIGH or self._inbox_bytes >= INBOX_HIGH_BYTES) and \
                not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    async def _handle_inbox(self) -> None:
        """Hand the session its packets, one at a time, in order (as engine.io's own read
        loop does), then end: an idle socket keeps no task."""
        socket, inbox = self.socket, self._inbox
        try:
            while inbox and socket is not None:
                data = inbox.pop(0)
                self._inbox_bytes -= len(data)  # str or bytes: near enough for a bound
                if self._paused and len(inbox) < INBOX_HIGH // 2 and \
                        self._inbox_bytes < INBOX_HIGH_BYTES // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                try:
                    if type(data) is str and len(data) > 1 and data[0] == "4" and \
                            data[1].isnumeric():
                        await socket.receive_message(data[1:])  # a Socket.IO packet
                    else:
                        await socket.receive(eio_packet.Packet(encoded_packet=data))
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    inbox.clear()
                    self.close_native(1000, b"")
                except Exception:
                    socket.server.logger.exception("Unknown receive error")
        finally:
            self._reader = None

    # -- closing --------------------------------------------------------------------

    def _closed_by_client(self, payload: bytes) -> None:
        transport = self.transport
        if self._state == OPEN and transport is not None:
            code = payload[:2] if len(payload) >= 2 else (1000).to_bytes(2, "big")
            transport.write(ws_frame(code, CLOSE))  # the reply the RFC asks for
        self._state = CLOSING
        if transport is not None:
            transport.close()
        self._end_session()

    def _fail(self, code: int, reason: bytes) -> None:
        """A protocol error: our close frame, then the connection ends at once (RFC 6455
        7.1.7, "fail the connection"); nothing more is read from it."""
        self.close_native(code, reason)
        self._state = DONE
        self._buf.clear()
        if self.transport is not None:
            self.transport.close()  # after what is buffered, the close frame included
        self._end_session()

    def close_native(self, code: int, reason: bytes) -> None:
        """Start the closing handshake: our close frame; the connection closes when the
        client answers, or after CLOSE_TIMEOUT."""
        transport = self.transport
        if self._state in (CLOSING, DONE) or transport is None:
            return
        self._state = CLOSING
        if transport.is_closing():
            return
        transport.write(ws_frame(code.to_bytes(2, "big") + reason, CLOSE))
        self._closer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        """engine.io's websocket interface: the session ended its output."""
        self.close_native(code, message)

    def close_soon(self) -> None:
        """realtime/engineio_fixes.py's interface: close without waiting."""
        self.close_native(1000, b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = DONE
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self._end_session()  # a handshake still running finds the transport gone
        self._front.connections.discard(self)
        self.transport = None

    def _end_session(self) -> None:
        """The websocket is gone: so is its session (as engine.io's own read loop ends it)."""
        socket, self.socket = self.socket, None
        if socket is None:
            return
        eio, sid = self._front.eio, socket.sid
        if eio.attached_websockets.get(sid) is self:
            del eio.attached_websockets[sid]
        if eio.direct_transports.get(sid) is self.transport:
            eio.direct_transports.pop(sid, None)
        self._inbox.clear()
        self._inbox_bytes = 0
        socket.queue.put_nowait(None)  # the end of output
        socket._send_queued()
        task = asyncio.get_running_loop().create_task(_drop(eio, socket))
        eio.background.add(task)
        task.add_done_callback(eio.background.discard)


async def _drop(eio: Any, socket: LeanSocket) -> None:
    """Close the session of a websocket that is gone and forget it at once, as engine.io
    does when its own websocket handler returns (otherwise its service task would, up
    to ping_timeout later)."""
    if not socket.closed and not socket.closing:
        await socket.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
    if socket.closed and eio.sockets.get(socket.sid) is socket:
        del eio.sockets[socket.sid]
