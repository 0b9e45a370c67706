"""The leaner Engine.IO sessions (realtime/engineio_lean.py) and the trimmed environ:
the queue behaves like asyncio.Queue where engine.io relies on it, a websocket session
runs on two tasks instead of six (its packets written in order without a writer task),
heartbeats still ping live clients and close silent ones, and a session keeps only the
request of its connect."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.exceptions import SocketIsClosedError
from test_engineio_robustness import WS, Server, closes_within, ours, stays_open

from realtime import engineio_lean, keys
from realtime import ids as random_ids
from realtime.engineio_lean import LeanSocket, PacketQueue, PingClock

from conftest import OpenAPIChecker
from waiting import eventually

# -- the queue ----------------------------------------------------------------------------


async def test_the_queue_is_fifo_and_a_getter_waits_for_a_put() -> None:
    queue = PacketQueue()
    assert queue.empty() and queue.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    await queue.put("a")
    queue.put_nowait("b")
    assert await getter == "a"
    assert queue.qsize() == 1 and queue.get_nowait() == "b"


async def test_a_getter_that_times_out_loses_nothing() -> None:
    """engine.io's poll() wraps get() in wait_for: a timed-out get must not eat an item."""
    queue = PacketQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("kept")
    assert await asyncio.wait_for(queue.get(), 1) == "kept"


async def test_a_wake_up_passes_on_when_the_woken_getter_is_cancelled() -> None:
    queue = PacketQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes `first`...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "x"


async def test_join_waits_for_every_task_done() -> None:
    queue = PacketQueue()
    await asyncio.wait_for(queue.join(), 1)  # nothing unfinished
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        queue.task_done()


# -- sessions on the server -----------------------------------------------------------------


def session_tasks() -> int:
    return len(asyncio.all_tasks())


async def tasks_per_session(server: Server, count: int) -> float:
    before = session_tasks()
    sockets = [await server.connected() for _ in range(count)]
    await asyncio.sleep(0.05)  # let every session settle (stock starts its tasks lazily)
    grown = (session_tasks() - before) / count
    for ws, _ in sockets:
        await ws.close()
    return grown


async def stock_server(aiohttp_client: Any) -> Server:
    sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], logger=False,
                               engineio_logger=False)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    sio.on("connect", connect)
    app = web.Application()
    sio.attach(app)
    return Server(await aiohttp_client(app), sio, None)


async def test_a_websocket_session_runs_on_aiohttps_two_tasks_only(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """The connection's and its request handler's; stock also keeps a writer task, a
    read task, a queue-wait task and a ping task alive per session (measured beside it,
    so the count is not assumed)."""
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    ws, sid = await server.connected()
    socket = server.eio_sockets[sid]
    assert type(socket) is LeanSocket and type(socket.queue) is PacketQueue
    await ws.close()
    assert await tasks_per_session(server, 10) <= 2
    stock = await stock_server(aiohttp_client)
    assert await tasks_per_session(stock, 10) >= 5, "stock got leaner: re-measure"


async def test_heartbeats_keep_a_live_client_and_close_a_silent_one(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.ping_interval": "1s", "sockets.ping_timeout": "1s"})
    live, _ = await server.connected()
    pings: list[float] = []

    async def answer_pings() -> None:
        while True:
            msg = await live.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            if msg.data == "2":
                pings.append(time.monotonic())
                await live.send_str("3")

    answering = asyncio.ensure_future(answer_pings())
    silent, silent_sid = await server.connected()
    started = time.monotonic()
    # The silent one hears its ping, does not answer, and is closed: after
    # ping_interval + ping_timeout at the earliest, by the engine.io service task.
    assert await closes_within(silent, 10) is not None
    assert time.monotonic() - started >= 2.0
    await eventually(lambda: silent_sid not in server.eio_sockets, 5, "the silent session freed")
    await eventually(lambda: len(pings) >= 3, 10, "three pings answered")
    assert not answering.done(), "the live client was closed"
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.8 <= gap <= 3.0 for gap in gaps), gaps  # one per ping_interval
    answering.cancel()
    await live.close()


async def test_a_closed_session_is_not_pinged_or_held_by_the_ping_clock(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    ws, sid = await server.connected()
    socket = server.eio_sockets[sid]
    assert socket._ping_due is not None
    await ws.send_str("1")  # CLOSE
    await closes_within(ws, 3)
    await eventually(lambda: socket.closed, 3, "the session closed")
    assert socket._ping_due is None
    clock = server.client.server.app[keys.SOCKETS].sio.eio.ping_clock
    assert all(not isinstance(entry, LeanSocket) for pair in clock._due for entry in pair)


async def test_a_send_to_a_session_past_its_ping_timeout_closes_it_and_sends_nothing(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """As stock's `send`: the ping check first (a client gone quiet is closed, its packet
    dropped), and a closed session refuses."""
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    ws, sid = await server.connected()
    socket = server.eio_sockets[sid]
    await socket.send(eio_packet.Packet(eio_packet.MESSAGE, data="2[\"kept\"]"))
    assert await ws.receive_str() == '42["kept"]'
    socket.last_ping = time.time() - socket.server.ping_timeout - 1  # a ping unanswered
    await socket.send(eio_packet.Packet(eio_packet.MESSAGE, data="2[\"dropped\"]"))
    assert socket.closing or socket.closed
    frames = []
    while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
        frames.append(msg.data)
    # Nothing: not the event, and (as stock, whose close sends its CLOSE packet through the
    # same ping check) no CLOSE packet; the websocket ends.
    assert frames == []
    await eventually(lambda: socket.closed, 3, "the session closed")
    with pytest.raises(SocketIsClosedError):
        await socket.send(eio_packet.Packet(eio_packet.MESSAGE, data="2[\"late\"]"))


class _Pinged:
    """A session as PingClock sees it: its `_ping_due`, and `_ping`."""

    def __init__(self, sid: str, pinged: list[str]) -> None:
        self.sid, self.pinged = sid, pinged
        self._ping_due: float | None = None

    def _ping(self) -> None:
        self._ping_due = None
        self.pinged.append(self.sid)


async def test_the_ping_clock_pings_each_armed_session_once_in_order() -> None:
    sockets: dict[str, Any] = {}
    clock = PingClock(sockets, 0.01)
    pinged: list[str] = []
    for sid in ("a", "b", "c", "gone"):
        sockets[sid] = _Pinged(sid, pinged)
        sockets[sid]._ping_due = clock.add(sid)
    del sockets["gone"]  # freed before its ping
    sockets["b"]._ping_due = None  # closed before its ping
    sockets["c"]._ping_due = clock.add("c")  # re-armed: only its second entry matches
    assert [due for due, _ in clock._due] == sorted(due for due, _ in clock._due)
    await eventually(lambda: not clock._due, 2, "every entry swept")
    assert pinged == ["a", "c"]
    assert clock._timer is None
    clock.close()


async def test_a_session_keeps_only_the_request_of_its_connect(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    ws, sid = await server.connected()
    environ = server.sio.environ[sid]
    assert set(environ) == {"aiohttp.request"}
    # ... which is all a second CONNECT of the namespace on the same session needs.
    gateway = server.client.server.app[keys.SOCKETS]
    await ws.send_str("41")
    await eventually(lambda: not gateway.sessions, 3, "the namespace disconnected")
    await ws.send_str("40" + json.dumps({"token": server.token}))
    reply = await ws.receive_str()
    assert reply.startswith('40{"sid"'), reply
    await eventually(lambda: len(gateway.sessions) == 1, 3, "connected again")
    assert await stays_open(ws, 0.2)
    await ws.close()


async def test_concurrent_connects_share_head_reads(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    gateway = server.client.server.app[keys.SOCKETS]
    opened = [await server.open() for _ in range(20)]
    before = gateway._heads.reads
    auth = json.dumps({"token": server.token})
    await asyncio.gather(*(ws.send_str("40" + auth) for ws, _ in opened))
    replies = await asyncio.gather(*(ws.receive_str() for ws, _ in opened))
    assert all(reply.startswith('40{"sid"') for reply in replies), replies
    assert 1 <= gateway._heads.reads - before < 20
    for ws, _ in opened:
        await ws.close()


async def test_an_upgrade_from_polling_still_works(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """The probe exchange of LeanSocket's upgrade path, by hand."""
    server = await ours(aiohttp_client, openapi_checker, tmp_path,
                        **{"sockets.transports": "websocket,polling"})
    poll = "/socket.io/?EIO=4&transport=polling"
    opening = await (await server.client.get(poll)).text()
    sid = json.loads(opening[1:])["sid"]
    answer = await server.client.post(f"{poll}&sid={sid}",
                                      data="40" + json.dumps({"token": server.token}))
    assert answer.status == 200
    assert (await (await server.client.get(f"{poll}&sid={sid}")).text()).startswith("40{")
    ws = await server.client.ws_connect(f"{WS}&sid={sid}")
    await ws.send_str("2probe")
    assert await ws.receive_str() == "3probe"
    await ws.send_str("5")  # UPGRADE
    await eventually(lambda: server.eio_sockets[sid].upgraded, 3, "upgraded")
    await ws.send_str('42["task:create",{"title":"over the upgraded socket"}]')
    await ws.send_str('421["task:create",{"title":"acked"}]')
    while True:
        text = await ws.receive_str()
        if text.startswith("431"):
            assert json.loads(text[3:])[0]["ok"] is True
            break
    await ws.close()


async def test_packets_go_out_in_order_and_the_close_comes_last(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    """Without a writer task: acks in the order of their events; a server-side end of
    the session sends its notice, then the Socket.IO DISCONNECT."""
    server = await ours(aiohttp_client, openapi_checker, tmp_path)
    gateway = server.client.server.app[keys.SOCKETS]
    ws, _ = await server.connected()
    for n in range(30):
        await ws.send_str(f'42{n}["task:create",{{"title":"t{n}"}}]')
    acks = []
    while len(acks) < 30:
        text = await ws.receive_str()
        if text.startswith("43"):
            acks.append(int(text[2:text.index("[")]))
    assert acks == list(range(30))
    session = next(iter(gateway.sessions.values()))
    await gateway._end(session, "token_revoked", "this token was revoked")
    tail: list[str] = []
    while not tail or tail[-1] != "41":
        text = await asyncio.wait_for(ws.receive_str(), 5)
        if not text.startswith('42["task:'):
            tail.append(text)
    assert tail[0].startswith('42["session:ended"') and tail[1:] == ["41"], tail
    await ws.close()


def test_session_ids_are_unique_url_safe_and_cost_one_system_call_per_341(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = os.urandom

    def counted(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(random_ids.os, "urandom", counted)
    ids = engineio_lean.SessionIds()
    made = [ids() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(sid) == 20 and re.fullmatch(r"[A-Za-z0-9_-]+", sid) for sid in made)
    assert len(reads) == 3  # 1000 ids / 341 per 4 kB read
