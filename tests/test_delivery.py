"""The fan-out engine (realtime/delivery.py): direct frames, queue fallback, slow sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from engineio import packet as eio_packet
from test_instances import register

from realtime import keys
from realtime.app import create_app
from realtime.delivery import Outgoing, ws_frame

from conftest import TEST_SECRET, Api, make_config
from processes import Instance
from socket_clients import Tab
from waiting import eventually


def test_frames_carry_the_engine_io_message() -> None:
    small = Outgoing('2["task:created",{}]')
    assert small.frame == b"\x81\x15" + b'42["task:created",{}]'
    assert Outgoing(b"\x93\x01").frame == b"\x82\x02\x93\x01"
    assert ws_frame(b"x" * 300, 0x1)[:4] == b"\x81\x7e\x01\x2c"
    assert ws_frame(b"x" * 70000, 0x2)[:10] == b"\x82\x7f" + struct.pack("!Q", 70000)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_events_encode_as_python_socketio_would(tmp_path: Path, serializer: str) -> None:
    """The gateway's JSON fast path gives the packet class's own encoding, byte for byte,
    and data holding bytes still becomes a binary event (as the packet class decides)."""
    from socketio import packet as sio_packet

    from realtime.sockets import SocketGateway

    gateway = SocketGateway(make_config(tmp_path, **{"sockets.serializer": serializer}))
    task = {"id": "t-1", "title": "caf\u00e9 \U0001f600 \"quoted\"\n", "tags": ["a", "b"],
            "due_date": None, "version": 3, "done": False, "ratio": 0.5}
    events: list[tuple[str, Any]] = [
        ("task:created", {"type": "task:created", "scope": "user:u", "seq": 7, "task": task}),
        ("sync", {"scope": "user:u", "seq": 9, "changes": [task], "more": False}),
        ("session:expiring", {"expires_at": "2026-11-30T00:00:00.000Z"}),
        ("binary", {"blob": b"\x00\x01"}),
    ]
    for name, data in events:
        expected = gateway.sio.packet_class(sio_packet.EVENT, namespace="/",
                                            data=[name, data]).encode()
        assert gateway.encode(name, data).encoded == expected, name
    if serializer == "json":
        assert isinstance(gateway.encode("binary", {"blob": b"x"}).encoded, list)


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


class RecordingTransport:
    """Stands in for a socket's transport in the relay's table, counting its writes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_burst_reaches_each_socket_in_one_write_once_in_order_behind_its_queue(
        tmp_path: Any, aiohttp_client: Any, openapi_checker: Any, closing: list[Any]) -> None:
    """Consecutive events of a scope go to a socket as one write (one syscall per socket
    per burst); a socket that already had part of the run gets only the rest; a socket
    with packets in engine.io's queue gets the burst through the queue, behind them."""
    api = Api(await aiohttp_client(create_app(make_config(tmp_path))), openapi_checker)
    user = await api.as_new_user()
    scope = f"user:{user.user['id']}"  # type: ignore[attr-defined]
    url = str(api.client.make_url("/"))
    tabs = [await Tab(url, user.token).connect(), await Tab(url, user.token).connect()]
    closing.extend(tabs)
    gateway, delivery = api.app[keys.SOCKETS], api.app[keys.SOCKETS].delivery
    members = gateway._members[scope]
    await eventually(lambda: all(not m.feed.repairing for m in members.values()), 5,
                     "both feeds live")
    (first_sid, first), (second_sid, second) = members.items()
    recorders = {}
    for member in (first, second):
        real = delivery._transports[member.target.eio_sid]
        member.target.transport = recorders[member.target.eio_sid] = RecordingTransport(real)
    captured: list[dict[str, Any]] = []
    api.app[keys.BROKER].subscribe(captured.append)

    async def burst(count: int) -> list[dict[str, Any]]:
        """`count` real writes whose events the relay does not send to our two sockets."""
        members.clear()
        del captured[:]
        for n in range(count):
            assert (await user.post("/api/tasks", json={"title": f"b{n}"})).status == 201
        members.update({first_sid: first, second_sid: second})
        return list(captured)

    events = await burst(5)
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    del members[first_sid]
    await gateway.relay_many(events[:2])  # the second socket gets the first two ...
    members[first_sid] = first
    direct = delivery.direct
    await gateway.relay_many(events)  # ... then the rest; the first socket all five
    assert delivery.direct - direct == 5 + 3
    assert [len(recorders[m.target.eio_sid].writes) for m in (first, second)] == [1, 2]
    for tab in tabs:
        await tab.wait_for(lambda _, t=tab: len(t.task_events()) == 5)
        assert [e["seq"] for e in tab.task_events()] == seqs
        assert tab.replica.violations == []

    more = await burst(3)
    socket = first.target.socket
    queue = socket.queue
    # A websocket session writes what is queued as it is queued; hold its output (as
    # while it upgrades) so that something waits in its queue when the events come.
    listener, queue.listener = queue.listener, None
    probe = gateway.encode("probe", {"n": 1}).encoded
    queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data=probe))
    queued, writes = delivery.queued, len(recorders[first.target.eio_sid].writes)
    await gateway.relay_many(more)
    assert delivery.queued - queued == 3
    assert len(recorders[first.target.eio_sid].writes) == writes  # none of it overtook
    queue.listener = listener
    socket._flush()
    first_tab = next(t for t in tabs if t.client.get_sid() == first_sid)
    await first_tab.wait_for(lambda _: len(first_tab.task_events()) == 8)
    names = [name for name, _ in first_tab.events]
    assert names.index("probe") < len(names) - 3
    assert [name for name in names[names.index("probe") + 1:]] == ["task:created"] * 3
    for tab in tabs:
        await tab.wait_for(lambda _, t=tab: len(t.task_events()) == 8)
        assert [e["seq"] for e in tab.task_events()] == seqs + [e["seq"] for e in more]


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


async def test_silent_clients_leave_memory_bounded_and_others_latency_within_2x(
        tmp_path: Any, http: Any, closing: list[Any]) -> None:
    """Issue 7: clients that stop reading while writes flow to their scope. Measured on
    a real process (its RSS), against a no-fault run of the same writes."""
    env = {"JWT_SECRET": TEST_SECRET,
           "TASKMASTER_SOCKETS_MAX_PENDING_BYTES": str(BOUND)}
    server = Instance(tmp_path, env, name="slow-clients").start()
    try:
        rest, _ = await register(http, server)
        healthy = await Tab(server.url, rest.token).connect()
        closing.append(healthy)
        description = "x" * 9000

        async def timed_writes(label: str, count: int) -> list[float]:
            took = []
            for n in range(count):
                title = f"{label}{n}"
                started = time.perf_counter()
                status, _ = await rest.call(server, "POST", "/api/tasks",
                                            {"title": title, "description": description})
                assert status == 201
                await healthy.wait_event("task:created",
                                         where=lambda e, t=title: e["task"]["title"] == t)
                took.append(time.perf_counter() - started)
            return sorted(took)

        await timed_writes("warm", 50)
        rss_at_start = rss_of(server)
        baseline = await timed_writes("calm", 400)
        calm_growth = rss_of(server) - rss_at_start  # caches, the store, allocator
        loop = asyncio.get_running_loop()
        silent = [await loop.run_in_executor(None, SilentClient, server.url, rest.token)
                  for _ in range(SILENT)]
        rss_before = rss_of(server)
        held: list[float] = []
        try:
            faulty = []
            for burst in range(8):  # 3.6 MB for each silent client in all
                faulty += await timed_writes(f"storm{burst}-", 50)
                held.append(await scraped(http, server, "taskmaster_socket_pending_bytes"))
        finally:
            for client in silent:
                client.close()
        faulty.sort()
        storm_growth = rss_of(server) - rss_before

        # What the process holds for them: at most the bound each (plus one event),
        # then nothing once they are dropped; unbounded it would reach ~3.5 MB each.
        assert max(held) <= SILENT * (BOUND + 10_000), held
        extra = storm_growth - calm_growth
        assert extra < 8 << 20, f"RSS grew {extra / 2**20:.1f} MB more than without them"
        metrics = await (await http.get(server.url + "/metrics")).text()
        assert f"taskmaster_sockets_dropped_slow_total {SILENT}.0" in metrics.splitlines()
        median = statistics.median
        assert median(faulty) <= 2 * median(baseline) + 0.005, (median(faulty),
                                                                median(baseline))
        p90 = int(len(baseline) * 0.9)
        assert faulty[int(len(faulty) * 0.9)] <= 2 * baseline[p90] + 0.010
        assert healthy.replica.violations == []
    finally:
        server.stop()


SILENT = 6
BOUND = 262144


async def scraped(http: Any, server: Instance, name: str) -> float:
    async with http.get(server.url + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def rss_of(instance: Instance) -> int:
    assert instance.proc is not None
    for line in Path(f"/proc/{instance.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_half_open_connection_is_found_by_heartbeats_and_freed(
        tmp_path: Any, aiohttp_client: Any, openapi_checker: Any) -> None:
    """A peer that vanished without a FIN (or a client frozen mid-connection): it never
    answers a ping, so the server closes it after ping_interval + ping_timeout."""
    config = make_config(tmp_path, **{"sockets.ping_interval": "1s",
                                      "sockets.ping_timeout": "1s"})
    api = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await api.as_new_user()
    url = str(api.client.make_url("/"))
    frozen = await asyncio.get_running_loop().run_in_executor(None, SilentClient, url,
                                                              user.token)
    gateway = api.app[keys.SOCKETS]
    try:
        assert len(gateway.sessions) == 1
        started = time.monotonic()
        await eventually(lambda: not gateway.sessions, 10, "the frozen socket freed")
        assert time.monotonic() - started >= 1.0  # by the heartbeat, not at once
        await eventually(lambda: not gateway.delivery._transports, 10,
                         "its transport released")  # when its handler returns, just after
    finally:
        frozen.close()
