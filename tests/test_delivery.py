"""The fan-out engine (realtime/delivery.py): direct frames, queue fallback, slow sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import orjson

from realtime import keys
from realtime.app import create_app
from realtime.delivery import Outgoing, ws_frame

from conftest import Api, make_config
from socket_clients import Tab
from waiting import eventually


def test_frames_carry_the_engine_io_message() -> None:
    small = Outgoing('2["task:created",{}]')
    assert small.frame == b"\x81\x15" + b'42["task:created",{}]'
    assert Outgoing(b"\x93\x01").frame == b"\x82\x02\x93\x01"
    assert ws_frame(b"x" * 300, 0x1)[:4] == b"\x81\x7e\x01\x2c"
    assert ws_frame(b"x" * 70000, 0x2)[:10] == b"\x82\x7f" + struct.pack("!Q", 70000)


async def test_websocket_sockets_get_direct_frames_polling_ones_the_queue(
        tmp_path: Any, aiohttp_client: Any, openapi_checker: Any, closing: list[Any]) -> None:
    config = make_config(tmp_path, **{"sockets.transports": "websocket,polling",
                                      "sockets.ping_interval": "2s"})
    api = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await api.as_new_user()
    url = str(api.client.make_url("/"))
    ws_tab = await Tab(url, user.token).connect()
    poll_tab = await Tab(url, user.token, transports=("polling",)).connect()
    closing.extend([ws_tab, poll_tab])
    delivery = api.app[keys.SOCKETS].delivery
    direct, queued = delivery.direct, delivery.queued
    for n in range(5):
        assert (await user.post("/api/tasks", json={"title": f"t{n}"})).status == 201
    for tab in (ws_tab, poll_tab):
        await tab.wait_for(lambda events, t=tab: len(t.task_events()) == 5)
        assert [e["seq"] for e in tab.task_events()] == [1, 2, 3, 4, 5]
    assert delivery.direct - direct == 5
    assert delivery.queued - queued == 5


class SilentClient:
    """A raw WebSocket client that connects, authenticates, then never reads again."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((parts.hostname, parts.port))
        self.sock.settimeout(5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
        assert self.read_frame().startswith(b"0{")  # engine.io open
        self.send_text(b"40" + orjson.dumps({"token": token}))
        assert self.read_frame().startswith(b'40{"sid"')  # namespace connected

    def read_frame(self) -> bytes:
        while True:
            if len(self.buffer) >= 2:
                length, offset = self.buffer[1] & 0x7F, 2
                if length == 126:
                    length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                if len(self.buffer) >= offset + length:
                    payload = self.buffer[offset:offset + length]
                    self.buffer = self.buffer[offset + length:]
                    return payload
            self.buffer += self.sock.recv(4096)

    def send_text(self, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = (struct.pack("!BB", 0x81, 0x80 | len(payload)) if len(payload) < 126
                  else struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)))
        self.sock.sendall(header + mask + masked)

    def close(self) -> None:
        self.sock.close()


async def test_a_socket_that_stops_reading_is_dropped_and_others_go_on(
        tmp_path: Any, aiohttp_client: Any, openapi_checker: Any, closing: list[Any]) -> None:
    config = make_config(tmp_path, **{"sockets.max_pending_bytes": 256 * 1024})
    api = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await api.as_new_user()
    url = str(api.client.make_url("/"))
    healthy = await Tab(url, user.token).connect()
    closing.append(healthy)
    silent = await asyncio.get_running_loop().run_in_executor(None, SilentClient, url,
                                                              user.token)
    gateway = api.app[keys.SOCKETS]
    assert len(gateway.sessions) == 2
    try:
        description = "x" * 9000
        for n in range(400):  # ~3.6 MB for the silent socket, far past its allowance
            reply = await user.post("/api/tasks", json={"title": f"t{n}",
                                                        "description": description})
            assert reply.status == 201
            if gateway.delivery.dropped_slow:
                break
        assert gateway.delivery.dropped_slow == 1
        await healthy.wait_for(lambda events: len(healthy.task_events()) == n + 1, timeout=10)
        assert healthy.replica.violations == []

        await eventually(lambda: len(gateway.sessions) == 1, 10, "the slow socket's session ending")
        metrics = (await api.get("/metrics")).body
        assert "taskmaster_sockets_dropped_slow_total 1.0" in metrics.splitlines()
        assert (await user.post("/api/tasks", json={"title": "after"})).status == 201
        await healthy.wait_event("task:created", where=lambda e: e["task"]["title"] == "after")
    finally:
        silent.close()
