"""realtime/wsfront.py: websocket connects served without aiohttp's request machinery.

Raw TCP clients check the RFC 6455 side (handshake, masking, fragments, control frames,
limits, closing); real Socket.IO clients check that nothing changes for them; and the
rest of the suite runs through the same front (tests/conftest.py serves every app the
way `taskmaster serve` does)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime import eio_native, keys, wsfront
from realtime.app import create_app

from conftest import Api, OpenAPIChecker, make_config
from socket_clients import Tab
from waiting import eventually

WS = "/socket.io/?EIO=4&transport=websocket"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, size)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def upgrade_request(path: str = WS, key: bytes | None = None, extra: str = "") -> bytes:
    key = key or base64.b64encode(os.urandom(16))
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


class Raw:
    """A websocket client on a bare TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, client: TestClient) -> Raw:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        return cls(reader, writer)

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def handshake(self, path: str = WS) -> str:
        """Upgrade; the Engine.IO session id from the OPEN packet."""
        key = base64.b64encode(os.urandom(16))
        self.writer.write(upgrade_request(path, key))
        status, headers = await self.head()
        assert status == 101, (status, headers)
        expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        opcode, payload = await self.frame()
        assert opcode == TEXT and payload.startswith(b"0{"), payload
        return str(json.loads(payload[1:])["sid"])

    def send(self, opcode: int, payload: bytes, **kw: Any) -> None:
        self.writer.write(frame(opcode, payload, **kw))

    async def frame(self) -> tuple[int, bytes]:
        async def read() -> tuple[int, bytes]:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            assert not second & 0x80, "server frames are never masked"
            return first & 0x0F, await self.reader.readexactly(size)

        return await asyncio.wait_for(read(), 5)

    async def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            opcode, payload = await self.frame()
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])

    async def eof(self) -> bool:
        data = await asyncio.wait_for(self.reader.read(), 5)
        return data == b"" or self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


async def served(aiohttp_client: Any, checker: OpenAPIChecker, tmp_path: Path,
                 **overrides: Any) -> tuple[Api, Api]:
    api = Api(await aiohttp_client(create_app(make_config(tmp_path, **overrides))), checker)
    return api, await api.as_new_user()


async def status_of(api: Api, *chunks: bytes) -> int:
    """Send a request (in these pieces), read the answer's status, hang up."""
    raw = await Raw.connect(api.client)
    for chunk in chunks:
        raw.writer.write(chunk)
        await raw.writer.drain()
    status, _ = await raw.head()
    raw.close()
    return status


def front_of(client: TestClient) -> wsfront.Front:
    runner = client.server.runner
    assert runner is not None and isinstance(runner.server, wsfront.FrontServer)
    return runner.server.front


async def connected(client: TestClient, token: str) -> tuple[Raw, str]:
    raw = await Raw.connect(client)
    sid = await raw.handshake()
    raw.send(TEXT, b"40" + json.dumps({"token": token}).encode())
    opcode, payload = await raw.frame()
    assert opcode == TEXT and payload.startswith(b'40{"sid"'), payload
    return raw, sid


def eio_of(api: Api) -> Any:
    return api.app[keys.SOCKETS].sio.eio


# -- what is served natively, and what is not ---------------------------------------------


async def test_a_websocket_client_is_served_natively_and_gets_events(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    front = front_of(api.client)
    url = str(api.client.make_url("/"))
    tab = await Tab(url, user.token).connect()
    try:
        assert front.accepted == 1
        assert len(front.connections) == 1
        # aiohttp holds no handler for it: only the REST connection of `api` (if kept alive)
        aiohttp_connections = api.client.server.runner.server._connections  # type: ignore[union-attr]
        assert all(not isinstance(h, wsfront.FrontProtocol) for h in aiohttp_connections)
        created = await user.post("/api/tasks", json={"title": "native"})
        assert created.status == 201
        event = await tab.wait_event("task:created")
        assert event["task"]["title"] == "native"
        ack = await tab.call("task:create", {"title": "over the socket"})
        assert ack["ok"] is True, ack
    finally:
        await tab.close()
    await eventually(lambda: not front.connections, 5, "the native connection released")


async def test_a_connect_and_an_event_in_one_read_are_handled_in_order(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """Packets that arrive together are handled one after the other: the event is not
    handled before the CONNECT it follows (it would be refused as not connected), and
    its store write runs in a task (asyncio.timeout outside one is a RuntimeError)."""
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    claims = json.loads(base64.urlsafe_b64decode(user.token.split(".")[1] + "=="))
    raw = await Raw.connect(api.client)
    await raw.handshake()
    # With a cursor there is no head to read: the whole connect runs without waiting.
    auth = {"token": user.token, "cursors": {f"user:{claims['sub']}": 0}}
    raw.writer.write(frame(TEXT, b"40" + json.dumps(auth).encode())
                     + frame(TEXT, b'421["task:create",{"title":"pipelined"}]'))
    packets = []
    while not packets or not packets[-1].startswith(b"431"):
        opcode, payload = await raw.frame()
        assert opcode == TEXT
        packets.append(payload)
    assert packets[0].startswith(b'40{"sid"'), packets
    ack = json.loads(packets[-1][3:])[0]
    assert ack["ok"] is True and ack["task"]["title"] == "pipelined", ack
    raw.close()


async def test_polling_and_its_upgrade_stay_with_aiohttp(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path,
                             **{"sockets.transports": "websocket,polling"})
    front = front_of(api.client)
    url = str(api.client.make_url("/"))
    tab = await Tab(url, user.token, transports=("polling", "websocket")).connect()
    try:
        created = await user.post("/api/tasks", json={"title": "upgraded"})
        assert created.status == 201
        assert (await tab.wait_event("task:created"))["task"]["title"] == "upgraded"
        assert front.accepted == 0
    finally:
        await tab.close()


async def test_rest_requests_pass_through_on_one_kept_alive_connection(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    raw = await Raw.connect(api.client)
    request = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    raw.writer.write(request + request)  # pipelined: both reach aiohttp, in order
    for _ in range(2):
        status, headers = await raw.head()
        assert status == 200
        await raw.reader.readexactly(int(headers["content-length"]))
    raw.close()


@pytest.mark.parametrize("path", [
    "/socket.io/?EIO=4&transport=websocket&sid=nosuchsession",  # an upgrade: aiohttp's
    "/socket.io/?EIO=4&transport=polling",  # not a websocket request
])
async def test_requests_the_front_does_not_serve_get_aiohttps_answers(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        path: str) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    status = await status_of(api, upgrade_request(path))
    assert status in (200, 400)  # engine.io's answer, through aiohttp: not a 101
    assert front_of(api.client).accepted == 0


async def test_a_head_that_arrives_byte_by_byte_is_served(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    status = await status_of(api, *(bytes([byte]) for byte in upgrade_request()))
    assert status == 101
    assert front_of(api.client).accepted == 1


async def test_a_head_too_long_goes_to_aiohttp_and_is_refused(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    status = await status_of(api, upgrade_request(extra="X-Padding: " + "a" * 20_000 + "\r\n"))
    assert 400 <= status < 500
    assert front_of(api.client).accepted == 0


async def test_refused_handshakes_get_engineio_answers_and_a_close(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    for path, extra in [("/socket.io/?EIO=3&transport=websocket", ""),
                        (WS, "Origin: https://evil.example\r\n")]:
        raw = await Raw.connect(api.client)
        raw.writer.write(upgrade_request(path, extra=extra))
        status, headers = await raw.head()
        assert status == 400, path
        assert headers["connection"] == "close"
        assert headers["server"] == "TaskMaster"
        assert await raw.eof()
    assert front_of(api.client).accepted == 0
    assert not eio_of(api).sockets


# -- plain handshakes (realtime/eio_native.py) against engine.io's own ------------------

PLAIN = WS  # served by eio_native
GENERAL = WS + "&x=%41"  # the same request, escaped: served by engine.io's handle_request


@pytest.mark.parametrize(("query", "plain"), [
    ("EIO=4&transport=websocket", True),
    ("transport=websocket&EIO=4&t=Pq1x", True),
    ("EIO=4&transport=websocket&x=%41", False),
    ("EIO=4&transport=websocket&x=a+b", False),
    ("EIO=3&transport=websocket", False),
    ("EIO=4&transport=polling", False),
    ("EIO=4", False),
    ("EIO=4&transport=websocket&sid=abc", False),
    ("EIO=4&transport=websocket&j=0", False),
    ("EIO=4&EIO=4&transport=websocket", False),
    ("EIO=4&transport=websocket&transport=polling", False),
])
def test_which_queries_are_plain(query: str, plain: bool) -> None:
    assert eio_native.plain_query(query) is plain


_query_parts = st.lists(st.sampled_from(
    ["EIO=4", "EIO=3", "EIO=", "EIO", "transport=websocket", "transport=polling",
     "transport=", "sid=abc", "j=0", "t=Pq1x", "x=%41", "x=a+b", "=", "", "a=b=c",
     "EIO=4&", "&transport=websocket", "b64=1"]), max_size=6)


@settings(max_examples=500, deadline=None)
@given(parts=_query_parts)
def test_a_plain_query_is_one_engineio_reads_as_a_new_websocket_session(
        parts: list[str]) -> None:
    """Whatever the query, eio_native serves it only where engine.io's own parse gives
    EIO 4, the websocket transport, no session id and no JSONP index."""
    query = "&".join(parts)
    if eio_native.plain_query(query):
        parsed = urllib.parse.parse_qs(query)
        assert parsed.get("EIO") == ["4"], query
        assert parsed.get("transport") == ["websocket"], query
        assert "sid" not in parsed and "j" not in parsed, query


def _counting_handle_request(eio: Any) -> list[int]:
    calls = [0]
    handle_request = eio.handle_request

    async def counted(*args: Any) -> Any:
        calls[0] += 1
        return await handle_request(*args)

    eio.handle_request = counted
    return calls


async def test_a_plain_handshake_opens_the_same_session_as_engineio(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    eio = eio_of(api)
    calls = _counting_handle_request(eio)
    openings = []
    for path in (PLAIN, GENERAL):
        raw = await Raw.connect(api.client)
        raw.writer.write(upgrade_request(path))
        status, _ = await raw.head()
        assert status == 101
        opcode, payload = await raw.frame()
        assert opcode == TEXT and payload[:1] == b"0"
        opening = json.loads(payload[1:])
        assert opening["sid"] in eio.sockets
        raw.send(TEXT, b"40" + json.dumps({"token": user.token}).encode())
        opcode, payload = await raw.frame()
        assert payload.startswith(b'40{"sid"'), payload  # a Socket.IO session on top
        openings.append({k: v for k, v in opening.items() if k != "sid"})
        raw.close()
    assert calls == [1]  # only the escaped one went through engine.io's dispatch
    assert openings[0] == openings[1]
    assert openings[0]["pingInterval"] == int(eio.ping_interval) * 1000


@pytest.mark.parametrize("refusal", ["false", "raises"])
async def test_a_refusing_connect_handler_gets_engineios_answer_on_both_paths(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        refusal: str) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    eio = eio_of(api)

    async def refuse(sid: str, environ: dict[str, Any]) -> Any:
        if refusal == "raises":
            raise RuntimeError("refused by a broken handler")
        return False

    eio.handlers["connect"] = refuse
    answers = []
    for path in (PLAIN, GENERAL):
        raw = await Raw.connect(api.client)
        raw.writer.write(upgrade_request(path))
        status, headers = await raw.head()
        body = await raw.reader.readexactly(int(headers["content-length"]))
        answers.append((status, body))
        assert await raw.eof()
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    assert not eio.sockets
    assert front_of(api.client).accepted == 0


async def test_a_websocket_handshake_is_refused_on_both_paths_without_the_transport(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path,
                          **{"sockets.transports": "polling"})
    answers = []
    for path in (PLAIN, GENERAL):
        raw = await Raw.connect(api.client)
        raw.writer.write(upgrade_request(path))
        status, headers = await raw.head()
        answers.append((status, await raw.reader.readexactly(int(headers["content-length"]))))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400 and b"Invalid transport" in answers[0][1]
    assert not eio_of(api).sockets


async def test_a_refused_origin_is_refused_on_both_paths(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    answers = []
    for path in (PLAIN, GENERAL):
        raw = await Raw.connect(api.client)
        raw.writer.write(upgrade_request(path, extra="Origin: https://evil.example\r\n"))
        status, headers = await raw.head()
        answers.append((status, await raw.reader.readexactly(int(headers["content-length"]))))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400 and b"not an accepted origin" in answers[0][1]


async def test_the_101_carries_the_security_headers(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, _ = await served(aiohttp_client, openapi_checker, tmp_path)
    raw = await Raw.connect(api.client)
    raw.writer.write(upgrade_request())
    status, headers = await raw.head()
    assert status == 101
    assert headers["server"] == "TaskMaster"
    assert headers["x-content-type-options"] == "nosniff"
    raw.close()


# -- frames ------------------------------------------------------------------------------


async def test_fragments_pings_and_binary_frames(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    raw = await Raw.connect(api.client)
    await raw.handshake()
    connect = b"40" + json.dumps({"token": user.token}).encode()
    raw.send(TEXT, connect[:5], fin=False)
    raw.send(PING, b"in between")  # control frames may come between fragments
    raw.send(0x0, connect[5:9], fin=False)
    raw.send(0x0, connect[9:])
    assert await raw.frame() == (PONG, b"in between")
    opcode, payload = await raw.frame()
    assert opcode == TEXT and payload.startswith(b'40{"sid"'), payload
    raw.send(TEXT, b'421["task:create",{"title":"' + b"x" * 200 + b'"}]')  # 16-bit length
    opcode, payload = await raw.frame()
    while not payload.startswith(b"431"):  # the event itself may come before the ack
        opcode, payload = await raw.frame()
    assert json.loads(payload[3:])[0]["ok"] is True
    raw.close()


@pytest.mark.parametrize(("data", "code"), [
    (frame(TEXT, b"40", mask=False), 1002),  # a client frame must be masked
    (bytes([0x81 | 0x40, 0x80]) + b"\0\0\0\0", 1002),  # an extension bit nobody agreed
    (frame(0x0, b"40"), 1002),  # a continuation with nothing to continue
    (frame(0x3, b""), 1002),  # a reserved opcode
    (frame(PING, b"x", fin=False), 1002),  # a fragmented control frame
    (frame(PING, b"x" * 126), 1002),  # a control frame over 125 bytes
    (frame(TEXT, b"4\xff\xfe"), 1007),  # not UTF-8
    (frame(TEXT, b"9"), 1002),  # not an Engine.IO packet
    (frame(TEXT, b"4" + b"x" * 2000), 1009),  # over sockets.max_message_bytes
], ids=["unmasked", "rsv", "continuation", "opcode", "fragmented-ping", "long-ping",
        "utf8", "engineio", "too-big"])
async def test_a_bad_frame_closes_the_socket_with_its_code(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        data: bytes, code: int) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path,
                             **{"sockets.max_message_bytes": 1024})
    raw, sid = await connected(api.client, user.token)
    eio = eio_of(api)
    raw.writer.write(data)
    assert await raw.close_code() == code
    await eventually(lambda: sid not in eio.sockets, 5, "the session dropped")
    await eventually(lambda: not api.app[keys.SOCKETS].sessions, 5, "the socket gone")
    assert not eio.direct_transports and not eio.attached_websockets
    assert await raw.eof()  # the server closes the connection (after CLOSE_TIMEOUT at most)


async def test_a_client_close_is_answered_and_frees_the_session(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    raw, sid = await connected(api.client, user.token)
    raw.send(CLOSE, struct.pack("!H", 1000) + b"bye")
    assert await raw.close_code() == 1000
    assert await raw.eof()
    await eventually(lambda: sid not in eio_of(api).sockets, 5, "the session dropped")
    await eventually(lambda: not front_of(api.client).connections, 5, "connection released")


async def test_a_dropped_connection_frees_the_session(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    raw, sid = await connected(api.client, user.token)
    gateway = api.app[keys.SOCKETS]
    assert len(gateway.sessions) == 1
    raw.writer.transport.abort()
    await eventually(lambda: not gateway.sessions and sid not in eio_of(api).sockets, 5,
                     "the session ended with its connection")


async def test_a_server_disconnect_sends_close_and_ends_the_connection(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    raw, sid = await connected(api.client, user.token)
    await eio_of(api).disconnect(sid)
    assert await raw.close_code() == 1000
    raw.send(CLOSE, struct.pack("!H", 1000))  # the client's answer ends the connection
    assert await raw.eof()
    await eventually(lambda: not front_of(api.client).connections, 5, "connection released")


async def test_shutdown_closes_native_sockets_as_going_away(
        tmp_path: Path, openapi_checker: OpenAPIChecker, aiohttp_client: Any) -> None:
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    raw, _ = await connected(api.client, user.token)
    closing = asyncio.ensure_future(api.client.server.close())
    # Either the front's "going away" or the gateway's own goodbye comes first; the
    # connection must end either way, and shutdown must not hang on it.
    code = await raw.close_code()
    assert code in (1000, 1001)
    raw.close()
    await asyncio.wait_for(closing, 15)


# -- what it saves ---------------------------------------------------------------------


async def test_idle_native_sockets_hold_no_task(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """aiohttp serves a websocket with two tasks for its whole life; here, none."""
    api, user = await served(aiohttp_client, openapi_checker, tmp_path)
    first = await connected(api.client, user.token)  # starts engine.io's service task

    def tasks() -> list[str]:
        names = (task.get_coro().__qualname__ for task in asyncio.all_tasks())
        return sorted(name for name in names if not name.startswith("eventually."))

    before = tasks()
    sockets = [await connected(api.client, user.token) for _ in range(20)]
    await eventually(lambda: tasks() == before, 5, f"only the tasks of before: {before}")
    for raw, _ in [first, *sockets]:
        raw.close()


async def test_a_plain_aiohttp_runner_still_serves_websockets(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """Deployments that serve the app with aiohttp's own runner (no front) keep working."""
    app = create_app(make_config(tmp_path))
    api = Api(await aiohttp_client(TestServer(app)), openapi_checker)
    user = await api.as_new_user()
    tab = await Tab(str(api.client.make_url("/")), user.token).connect()
    try:
        assert (await user.post("/api/tasks", json={"title": "plain"})).status == 201
        assert (await tab.wait_event("task:created"))["task"]["title"] == "plain"
    finally:
        await tab.close()
    assert isinstance(api.client.server.runner.server, web.Server)  # type: ignore[union-attr]
    assert not isinstance(api.client.server.runner.server,  # type: ignore[union-attr]
                          wsfront.FrontServer)


# -- a flooding client -------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass


class _SlowSession:
    """A session whose packet handling waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.received: list[str] = []
        self.sid = "s"

    async def receive(self, packet: Any) -> None:
        await self.receive_message(packet.data)

    async def receive_message(self, data: str) -> None:
        await self.release.wait()
        self.received.append(data)


async def test_a_flood_stops_reading_the_socket_until_the_session_catches_up() -> None:
    front: Any = type("FrontStub", (), {})()
    front.eio = type("EioStub", (), {"max_http_buffer_size": 1 << 20})()
    conn = wsfront.FrontProtocol(front)
    transport, session = _Transport(), _SlowSession()
    conn.transport = transport  # type: ignore[assignment]
    conn.socket = session  # type: ignore[assignment]
    conn._state = wsfront.OPEN
    message = b'42["x","' + b"y" * 2000 + b'"]'
    for _ in range(40):  # 80 kB in 40 packets (fewer than the packet bound), a read each
        conn.data_received(frame(TEXT, message))
    assert transport.paused and transport.pauses == 1  # past 64 kB waiting: no more reads
    session.release.set()
    await eventually(lambda: len(session.received) == 40, 5, "every packet handled")
    assert not transport.paused


class _Closable(_Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


_frames = st.one_of(
    st.binary(max_size=40),  # anything at all
    st.builds(lambda op, data, fin, mask: frame(op, data, fin=fin, mask=mask),
              st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xF]),
              st.binary(max_size=300), st.booleans(), st.booleans()))


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(_frames, max_size=8))
def test_no_bytes_make_the_frame_parser_raise(chunks: list[bytes]) -> None:
    """Whatever a client sends after the handshake, the protocol answers it (a close code
    at worst) and never raises into the event loop."""
    front: Any = type("FrontStub", (), {})()
    front.eio = type("EioStub", (), {"max_http_buffer_size": 256})()
    front.eio.invalid_packets = type("Throttled", (), {"warning": lambda *a: None})()
    conn = wsfront.FrontProtocol(front)
    transport = _Closable()
    conn.transport = transport  # type: ignore[assignment]
    conn._state = wsfront.OPEN

    async def feed() -> None:
        for chunk in chunks:
            conn.data_received(chunk)
        if transport.closed:
            assert conn._state in (wsfront.CLOSING, wsfront.DONE)

    asyncio.run(feed())
