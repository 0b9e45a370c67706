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

The patch replaces entries of this server's copy of the driver table only; the
module-level table that other servers share is left untouched.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio.async_drivers import aiohttp as eio_aiohttp


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


class _PlainWebSocket(eio_aiohttp.WebSocket):
    """engine.io's aiohttp WebSocket wrapper, with permessage-deflate refused."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        # Publish this connection's transport for direct fan-out (realtime/delivery.py).
        sid = getattr(getattr(self.handler, "__self__", None), "sid", None)
        transport = request.transport
        registry: dict[str, Any] = self.server.direct_transports
        if sid is not None and transport is not None:
            registry[sid] = transport
        try:
            await self.handler(self)
        finally:
            if sid is not None and registry.get(sid) is transport:
                del registry[sid]
        return self._sock


def apply(eio_server: Any) -> None:
    """Install the work-arounds on one engineio.AsyncServer."""
    limit = eio_server.max_http_buffer_size
    translate = eio_server._async["translate_request"]

    def translate_request(request: web.Request) -> dict[str, Any]:
        environ: dict[str, Any] = translate(request)
        environ["wsgi.input"] = _ExactBody(request, limit)
        environ["wsgi.errors"] = sys.stderr
        return environ

    eio_server._async = {**eio_server._async, "translate_request": translate_request,
                         "websocket": _PlainWebSocket}
    eio_server.direct_transports = {}

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

    eio_server.handlers["disconnect"] = disconnect_and_release
    _drop_closed_sessions_first(eio_server)
    _ignore_messages_after_close(eio_server)


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
