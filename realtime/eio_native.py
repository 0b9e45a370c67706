"""A new Engine.IO session over a native websocket, without engine.io's request dispatch.

Why: for a plain `GET /socket.io/?EIO=4&transport=websocket` that realtime/wsfront.py
serves, engine.io's `handle_request` goes through a query parse, `_handle_connect`,
`handle_get_request`, `_upgrade_websocket` and the websocket wrapper: six coroutines,
two `iscoroutinefunction` checks, an OPEN packet through the session's queue and two
encoders, for work that on this path is always the same (BENCHMARKS.md, issue 5 (a)).

What: the steps of python-engineio 4.x's `handle_request` + `_handle_connect` for a
new websocket session, in the same order and with the same answers: the origin check,
the transport and version checks, a session id, the session registered, the connect
handler (a refusal answered with engine.io's own 401), the first ping armed, then the
101 and the OPEN packet in one write. A request with anything else in its query
(`j`, escapes, a `sid`, another version) is not plain: engine.io's `handle_request`
serves it, unchanged. tests/test_wsfront.py compares the two paths' answers.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import orjson

from .delivery import TEXT, ws_frame
from .engineio_lean import LeanSocket

if TYPE_CHECKING:
    from .wsfront import FrontProtocol

ACCEPTED = object()  # what a handshake returns for an accepted native socket (wsfront's too)


def plain_query(query: str) -> bool:
    """True for a query this module serves: `EIO=4`, `transport=websocket`, and other
    parameters engine.io ignores, each once, nothing escaped."""
    if "%" in query or "+" in query:
        return False
    names = set()
    eio = transport = False
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name in names or name in ("sid", "j"):
            return False
        names.add(name)
        if name == "EIO":
            eio = value == "4"
        elif name == "transport":
            transport = value == "websocket"
    return eio and transport


async def open_session(eio: Any, conn: FrontProtocol, environ: dict[str, Any]) -> Any:
    """engine.io's handshake for a new websocket session, on `conn`: returns what
    `handle_request` would (ACCEPTED, or an answer to write back)."""
    if eio.cors_allowed_origins != []:
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            allowed = eio._cors_allowed_origins(environ)
            if allowed is not None and origin not in allowed:
                eio._log_error_once(origin + " is not an accepted origin.", "bad-origin")
                return await eio._make_response(
                    eio._bad_request(origin + " is not an accepted origin."), environ)
    if "websocket" not in eio.transports:
        eio._log_error_once("Invalid transport", "bad-transport")
        return await eio._make_response(eio._bad_request("Invalid transport"), environ)

    if eio.start_service_task:  # as _handle_connect: the ping-timeout watcher
        eio.start_service_task = False
        eio.service_task_handle = eio.start_background_task(eio._service_task)
    sid = eio.generate_id()
    socket = LeanSocket(eio, sid)
    eio.sockets[sid] = socket

    try:
        accepted = await _connect_handler(eio, sid, environ)
    except BaseException:  # cancelled (a shutdown): no session is left behind
        eio.sockets.pop(sid, None)
        raise
    if accepted is not None and accepted is not True:
        eio.sockets.pop(sid, None)
        eio.logger.warning("Application rejected connection")
        return await eio._make_response(eio._unauthorized(accepted or None), environ)

    socket.schedule_ping()
    try:
        head = conn.accept(socket, environ)
    except OSError:  # the client left during the handshake
        await socket.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
    else:
        socket.attach_native(conn, head + _open_frame(eio, sid))
    if socket.closed and eio.sockets.get(sid) is socket:
        del eio.sockets[sid]
    return ACCEPTED


async def _connect_handler(eio: Any, sid: str, environ: dict[str, Any]) -> Any:
    """engine.io's `_trigger_event('connect', ...)`: a handler that raises refuses."""
    handler = eio.handlers.get("connect")
    if handler is None:
        return None
    try:
        answer = handler(sid, environ)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception:
        eio.logger.exception("connect async handler error")
        return False
    return answer


def _open_frame(eio: Any, sid: str) -> bytes:
    """The OPEN packet, as engine.io's `_handle_connect` makes it, as a websocket frame."""
    opening = {"sid": sid, "upgrades": [], "pingTimeout": int(eio.ping_timeout * 1000),
               "pingInterval": int(eio.ping_interval + eio.ping_interval_grace_period) * 1000,
               "maxPayload": eio.max_http_buffer_size}
    return ws_frame(b"0" + orjson.dumps(opening), TEXT)
