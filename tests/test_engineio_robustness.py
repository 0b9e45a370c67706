"""Protocol robustness the stock stack lacks (realtime/engineio_fixes.py), each proven on
our server and shown on a stock python-socketio server beside it: if a stock check fails,
python-engineio fixed the defect and the work-around can go.

- an invalid Engine.IO or Socket.IO packet closes that session at once;
- a second upgrade websocket for a session is refused, an upgrade without a probe is
  closed after ping_timeout;
- a connection that never sends the Socket.IO CONNECT is closed after connect_timeout;
- a client's CLOSE packet frees the session at once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from realtime import keys
from realtime.app import create_app

from conftest import Api, OpenAPIChecker, make_config
from waiting import eventually

WS = "/socket.io/?EIO=4&transport=websocket"
POLL = "/socket.io/?EIO=4&transport=polling"
CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class Server:
    """Ours (create_app) or stock (a bare python-socketio AsyncServer), same questions."""

    def __init__(self, client: TestClient, sio: socketio.AsyncServer,
                 token: str | None) -> None:
        self.client, self.sio, self.token = client, sio, token

    @property
    def eio_sockets(self) -> dict[str, Any]:
        return self.sio.eio.sockets  # type: ignore[no-any-return]

    def alive(self, sid: str) -> bool:
        socket = self.eio_sockets.get(sid)
        return socket is not None and not socket.closed and not socket.closing

    async def open(self, path: str = WS) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        ws = await self.client.ws_connect(path)
        opening = await ws.receive_str()
        assert opening.startswith("0{")
        return ws, json.loads(opening[1:])["sid"]

    async def connected(self) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        """A websocket session that completed the Socket.IO CONNECT."""
        ws, sid = await self.open()
        auth = json.dumps({"token": self.token}) if self.token else ""
        await ws.send_str("40" + auth)
        reply = await ws.receive_str()
        assert reply.startswith('40{"sid"'), reply
        return ws, sid


async def ours(aiohttp_client: Any, checker: OpenAPIChecker, tmp_path: Path,
               **overrides: Any) -> Server:
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, **overrides))), checker)
    user = await api.as_new_user()
    return Server(api.client, api.app[keys.SOCKETS].sio, user.token)


async def stock(aiohttp_client: Any, transports: tuple[str, ...] = ("websocket",),
                ping_timeout: float = 20) -> Server:
    sio = socketio.AsyncServer(async_mode="aiohttp", transports=list(transports),
                               ping_timeout=ping_timeout, logger=False,
                               engineio_logger=False)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    async def ping(sid: str, *args: Any) -> str:
        return "pong"

    sio.on("connect", connect)
    sio.on("ping", ping)
    app = web.Application()
    sio.attach(app)
    return Server(await aiohttp_client(app), sio, None)


async def closes_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> int | None:
    """Read until the server closes the websocket; its close code. Fails at the deadline."""
    async def until_closed() -> int | None:
        while True:
            msg = await ws.receive()
            if msg.type in CLOSED:
                return ws.close_code
            if msg.type == WSMsgType.ERROR:
                return None

    return await asyncio.wait_for(until_closed(), seconds)


async def stays_open(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> bool:
    try:
        await closes_within(ws, seconds)
    except TimeoutError:
        return True
    return False


# -- invalid packets ------------------------------------------------------------------------


INVALID_ENGINEIO = ["", "x", "9", "0", "6", "2", "bAAAA"]


@pytest.mark.parametrize("packet", INVALID_ENGINEIO, ids=repr)
async def test_an_invalid_engineio_packet_closes_the_session(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        packet: str) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    ws, sid = await server.connected()
    await ws.send_str(packet)
    assert await closes_within(ws, 3) == 1002  # protocol error
    await eventually(lambda: not server.alive(sid) and sid not in server.eio_sockets, 3,
                     "the session freed")
    await eventually(lambda: not server.sio.eio.attached_websockets, 3, "websocket released")


@pytest.mark.parametrize("packet", INVALID_ENGINEIO, ids=repr)
async def test_stock_keeps_a_session_after_an_invalid_engineio_packet(
        aiohttp_client: Any, packet: str) -> None:
    server = await stock(aiohttp_client)
    ws, sid = await server.connected()
    await ws.send_str(packet)
    await asyncio.sleep(0.5)
    assert server.alive(sid), "python-engineio now closes it: drop the work-around"


INVALID_SOCKETIO = ["49", '42["unterminated', '42{"not":"a list"}', "44", "4", "45-"]


@pytest.mark.parametrize("packet", INVALID_SOCKETIO, ids=repr)
async def test_an_invalid_socketio_packet_closes_the_session(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        packet: str) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    gateway = server.client.server.app[keys.SOCKETS]
    ws, sid = await server.connected()
    await eventually(lambda: len(gateway.sessions) == 1, 3, "the socket registered")
    await ws.send_str(packet)
    await closes_within(ws, 3)
    await eventually(lambda: not server.alive(sid) and not gateway.sessions, 3,
                     "the session freed")


@pytest.mark.parametrize("packet", INVALID_SOCKETIO, ids=repr)
async def test_stock_keeps_a_session_after_an_invalid_socketio_packet(
        aiohttp_client: Any, packet: str) -> None:
    server = await stock(aiohttp_client)
    ws, sid = await server.connected()
    await ws.send_str(packet)
    await ws.send_str('421["ping"]')
    assert await asyncio.wait_for(ws.receive_str(), 3) == '431["pong"]'
    assert server.alive(sid), "python-socketio now closes it: drop the work-around"


async def test_an_invalid_polling_payload_closes_the_session(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """Invalid packets, and a body over the limit: 400 at once, the session closed.
    (Stock engine.io's disconnect waited for the session's queue to drain: with our
    long-poll release and no GET pending, the POST hung forever.)"""
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.transports": "websocket,polling",
                           "sockets.max_message_bytes": 2048})
    opening = await (await server.client.get(POLL)).text()
    sid = json.loads(opening[1:])["sid"]
    for body in (b"9", b"\xff\xfe", b"4hello\x1ebnot base64!", b"4" + b"x" * 4096):
        answer = await asyncio.wait_for(server.client.post(
            f"{POLL}&sid={sid}", data=body, headers={"Content-Type": "text/plain"}), 5)
        assert answer.status == 400
        assert not server.alive(sid) and sid not in server.eio_sockets
        opening = await (await server.client.get(POLL)).text()
        sid = json.loads(opening[1:])["sid"]
    answer = await server.client.post(f"{POLL}&sid={sid}", data=b"40\x1e3",
                                      headers={"Content-Type": "text/plain"})
    assert answer.status == 200  # valid packets pass


async def test_stock_accepts_an_invalid_polling_payload(aiohttp_client: Any) -> None:
    server = await stock(aiohttp_client, transports=("polling", "websocket"))
    opening = await (await server.client.get(POLL)).text()
    sid = json.loads(opening[1:])["sid"]
    answer = await server.client.post(f"{POLL}&sid={sid}", data=b"9",
                                      headers={"Content-Type": "text/plain"})
    assert answer.status == 200 and server.alive(sid), "stock now refuses it"


# -- upgrades -------------------------------------------------------------------------------


async def polling_session(server: Server) -> str:
    opening = await (await server.client.get(POLL)).text()
    return json.loads(opening[1:])["sid"]  # type: ignore[no-any-return]


async def test_a_second_upgrade_websocket_is_refused(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.transports": "websocket,polling"})
    sid = await polling_session(server)
    first = await server.client.ws_connect(f"{WS}&sid={sid}")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await server.client.ws_connect(f"{WS}&sid={sid}")
    assert refused.value.status == 400
    # The first one still upgrades normally.
    await first.send_str("2probe")
    assert await asyncio.wait_for(first.receive_str(), 3) == "3probe"
    await first.send_str("5")
    await first.close()


async def test_stock_holds_two_upgrade_websockets(aiohttp_client: Any) -> None:
    server = await stock(aiohttp_client, transports=("polling", "websocket"))
    sid = await polling_session(server)
    first = await server.client.ws_connect(f"{WS}&sid={sid}")
    second = await server.client.ws_connect(f"{WS}&sid={sid}")  # stock: accepted
    assert await stays_open(second, 0.5) and await stays_open(first, 0.1)
    await first.close()
    await second.close()


async def test_an_upgrade_without_a_probe_is_closed(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.transports": "websocket,polling",
                           "sockets.ping_timeout": "1s"})
    sid = await polling_session(server)
    ws = await server.client.ws_connect(f"{WS}&sid={sid}")
    assert await closes_within(ws, 4) == 1002
    await eventually(lambda: not server.sio.eio.attached_websockets, 3, "websocket released")


async def test_stock_waits_for_a_probe_forever(aiohttp_client: Any) -> None:
    server = await stock(aiohttp_client, transports=("polling", "websocket"), ping_timeout=1)
    sid = await polling_session(server)
    ws = await server.client.ws_connect(f"{WS}&sid={sid}")
    assert await stays_open(ws, 2.5), "stock now times the probe out"
    await ws.close()


# -- connect timeout and CLOSE ----------------------------------------------------------------


async def test_a_connection_without_socketio_connect_is_closed(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.connect_timeout": "1s"})
    ws, sid = await server.open()
    await closes_within(ws, 4)
    await eventually(lambda: sid not in server.eio_sockets, 3, "the session freed")
    # A connection that does CONNECT in time is left alone.
    ws, sid = await server.connected()
    assert await stays_open(ws, 1.5)
    assert server.alive(sid)
    await ws.close()


async def test_stock_keeps_a_connection_that_never_connects(aiohttp_client: Any) -> None:
    server = await stock(aiohttp_client)
    ws, sid = await server.open()
    assert await stays_open(ws, 2)
    assert server.alive(sid)
    await ws.close()


async def test_a_close_packet_frees_a_websocket_session_at_once(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    gateway = server.client.server.app[keys.SOCKETS]
    ws, sid = await server.connected()
    await eventually(lambda: len(gateway.sessions) == 1, 3, "the socket registered")
    await ws.send_str("1")
    await closes_within(ws, 3)
    await eventually(lambda: sid not in server.eio_sockets and not gateway.sessions
                     and not gateway._user_sockets, 1, "freed at once")
