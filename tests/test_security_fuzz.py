"""Property-based fuzzing of the Socket.IO surface (DESIGN.md 5.7: bounded).

- Event payloads through a real python-socketio client: any event name, any number of
  arguments, any JSON value, binary attachments, huge and deep values. Every event the
  client can encode gets an ack (or, over the message size limit, the socket is closed),
  and the ack is `{ok: true, ...}` or `{ok: false, error}` with a DESIGN.md code.
- Raw Engine.IO / Socket.IO frames over a plain WebSocket, and raw long-polling bodies:
  random bytes and text, every packet type with malformed tails, bad namespaces, bad JSON,
  binary placeholders and attachment counts, ping/pong/upgrade/close misuse.

The properties hold whatever the server decides to do with a broken session (answer it,
ignore the packet or close the session): the instance never answers a 5xx, never logs an
unhandled error from its own code, a healthy user's socket and REST keep working during and
after, and once the fuzzer's connections are closed every per-connection structure (engine.io
sockets, sessions, rooms, broker interest, binary reassembly buffers, token deadlines) is
back to its baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime import keys
from realtime.app import create_app
from realtime.sockets import SocketGateway

from conftest import Api, OpenAPIChecker, make_config
from socket_clients import Tab
from waiting import eventually

CODES = {"invalid", "unauthorized", "forbidden", "not_found", "conflict", "rate_limited",
         "too_large", "unavailable"}
EVENTS = ("task:create", "task:update", "task:delete", "sync")
MAX_MESSAGE = 64 * 1024
EIO_PATH = "/socket.io/?EIO=4&transport="
FUZZ_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
# Until a broken packet ends its session at once (issue 6, engine.io robustness), stock
# python-engineio leaves such a session to the ping timeout: ~2 s per example here.
RAW_SETTINGS = settings(FUZZ_SETTINGS, max_examples=40)


class WatchCounter:
    """Counts the broker interest sockets hold (watch minus unwatch), per scope."""

    def __init__(self, broker: Any) -> None:
        self.held: dict[str, int] = {}
        watch, unwatch = broker.watch, broker.unwatch

        async def counted_watch(scope: str) -> None:
            self.held[scope] = self.held.get(scope, 0) + 1
            await watch(scope)

        def counted_unwatch(scope: str) -> None:
            self.held[scope] = self.held.get(scope, 0) - 1
            unwatch(scope)

        broker.watch, broker.unwatch = counted_watch, counted_unwatch

    def total(self) -> int:
        return sum(self.held.values())


@dataclass
class Rig:
    """One instance, a healthy user with a live socket, and a user whose socket fuzzes."""

    api: Api
    healthy: Api
    fuzzer: Api
    watch: WatchCounter
    healthy_tab: Tab
    errors: list[logging.LogRecord] = field(default_factory=list)
    tabs: list[Tab] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.api.client.make_url("/"))

    @property
    def gateway(self) -> SocketGateway:
        return self.api.app[keys.SOCKETS]

    def footprint(self) -> dict[str, int]:
        """Everything the server keeps per connection."""
        gateway = self.gateway
        sio = gateway.sio
        rooms = sio.manager.rooms.get("/", {})
        return {
            "engineio sockets": len(sio.eio.sockets),
            "sessions": len(gateway.sessions),
            "sessions by token": sum(len(s) for s in gateway._by_jti.values()),
            "environ": len(sio.environ),
            "binary reassembly": len(sio._binary_packet),
            "direct transports": len(sio.eio.direct_transports),
            "room members": sum(len(members) for members in rooms.values()),
            "broker interest": self.watch.total(),
        }

    async def assert_healthy(self) -> None:
        """The healthy user's socket and REST both answer, and its events still arrive."""
        assert (await self.api.get("/api/health")).status == 200
        scope = f"user:{self.healthy.user['id']}"  # type: ignore[attr-defined]
        ack = await self.healthy_tab.call("sync", {"scope": scope, "since": 0}, timeout=5)
        assert ack["ok"], ack
        assert (await self.healthy.get("/api/tasks", params={"limit": "1"})).status == 200

    async def assert_live_delivery(self) -> None:
        before = len(self.healthy_tab.task_events())
        reply = await self.healthy.post("/api/tasks", json={"title": "still live"})
        assert reply.status == 201
        await self.healthy_tab.wait_for(lambda _: len(self.healthy_tab.task_events()) > before)

    def unexpected_errors(self) -> list[str]:
        """Errors of our own code: logged by it, or raised in it (an unhandled exception in
        a handler, say). What python-engineio and python-socketio raise themselves on a broken
        packet is theirs (issue 6 makes such a packet end the session quietly)."""
        formatter = logging.Formatter()
        return [f"{r.name}: {r.getMessage()}\n"
                + (formatter.formatException(r.exc_info)[-1500:] if r.exc_info else "")
                for r in self.errors
                if r.name.split(".")[0] in ("realtime", "handlers", "store", "aiohttp")
                and not _raised_by_the_socketio_stack(r)]


def _raised_by_the_socketio_stack(record: logging.LogRecord) -> bool:
    if not record.exc_info or record.exc_info[2] is None:
        return False
    innermost = traceback.extract_tb(record.exc_info[2])[-1].filename
    return any(f"{os.sep}{package}{os.sep}" in innermost for package in ("engineio", "socketio"))


class _Collect(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


@pytest.fixture
async def rig(aiohttp_client: Any, tmp_path: Path,
              openapi_checker: OpenAPIChecker) -> AsyncIterator[Rig]:
    # Short pings: a session that a broken packet left open is reaped in about 2 s.
    config = make_config(tmp_path, **{"sockets.transports": "websocket,polling",
                                      "sockets.ping_interval": "1s",
                                      "sockets.ping_timeout": "0.5s",
                                      "sockets.max_message_bytes": MAX_MESSAGE,
                                      "rate_limit.max_requests": 10_000_000})
    app = create_app(config)
    client = await aiohttp_client(app)
    api = Api(client, openapi_checker)
    watch = WatchCounter(app[keys.BROKER])
    healthy, fuzzer = await api.as_new_user(), await api.as_new_user()
    errors: list[logging.LogRecord] = []
    handler = _Collect(errors)
    logging.getLogger().addHandler(handler)
    healthy_tab = await Tab(str(client.make_url("/")), healthy.token or "").connect()
    rig = Rig(api, healthy, fuzzer, watch, healthy_tab, errors)
    try:
        yield rig
    finally:
        logging.getLogger().removeHandler(handler)
        for tab in [healthy_tab, *rig.tabs]:
            await tab.close()


async def back_to_baseline(rig: Rig, baseline: dict[str, int], what: str) -> None:
    try:
        await eventually(lambda: rig.footprint() == baseline, 10, what)
    except AssertionError:
        raise AssertionError(f"{what}: {rig.footprint()} != baseline {baseline}") from None


# -- (a) event payloads through a real client -------------------------------------------

KEYS = st.one_of(st.sampled_from(["id", "title", "description", "status", "priority",
                                  "due_date", "changes", "expected_version", "mutation_id",
                                  "scope", "since", "limit", "cursors", "token", "owner",
                                  "_placeholder", "num", "$gt", "__proto__"]),
                 st.text(max_size=10))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["todo", "done", "high", "2030-01-01", "user:someone", "board:x", "",
                     "\x00", "\ud800"]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                     st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=20)
WITH_BINARY = st.recursive(
    st.one_of(SCALARS, st.binary(max_size=64)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner,
                                                                       max_size=4)),
    max_leaves=8)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"title": value} if i % 2 else [value]
    return value


HUGE = st.one_of(
    st.builds(lambda n: {"title": "t", "description": "d" * n},
              st.sampled_from([9_999, 10_001, 30_000, 2 * MAX_MESSAGE])),
    st.builds(lambda n: {"scope": "user:x", "since": 0, "junk": list(range(n))},
              st.sampled_from([1_000, 20_000])),
    st.builds(deep, st.sampled_from([50, 200, 900])),
)
ARGS = st.one_of(
    st.lists(JSON_VALUES, max_size=3).map(tuple),
    st.lists(WITH_BINARY, min_size=1, max_size=2).map(tuple),
    st.tuples(HUGE),
)
EVENT_NAMES = st.one_of(st.sampled_from([*EVENTS, "connect", "disconnect", "message",
                                         "connect_error", "*", "session:ended"]),
                        st.text(max_size=20))


def encoded_size(args: tuple[Any, ...]) -> int:
    def default(value: Any) -> Any:
        if isinstance(value, bytes):
            return "x" * len(value)
        raise TypeError(type(value))

    return len(json.dumps(list(args), default=default))


def assert_well_formed_ack(event: str, ack: Any) -> None:
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if ack["ok"]:
        assert event in EVENTS, (event, ack)
        return
    error = ack["error"]
    assert error["code"] in CODES, (event, ack)
    assert isinstance(error["message"], str) and error["message"], ack


async def fuzz_tab(rig: Rig) -> Tab:
    """The fuzzing user's socket, reconnected if the last example got it closed."""
    if rig.tabs and rig.tabs[-1].client.connected:
        return rig.tabs[-1]
    tab = await Tab(rig.url, rig.fuzzer.token or "").connect()
    rig.tabs.append(tab)
    return tab


@FUZZ_SETTINGS
@given(event=EVENT_NAMES, args=ARGS)
async def test_any_event_payload_gets_a_well_formed_ack(rig: Rig, event: str,
                                                         args: tuple[Any, ...]) -> None:
    tab = await fuzz_tab(rig)
    if encoded_size(args) > MAX_MESSAGE:
        # Over the message limit: refused, by an error ack or by closing that socket.
        try:
            ack = await tab.client.call(event, args, timeout=5)
        except (TimeoutError, socketio.exceptions.SocketIOError):
            await eventually(lambda: not tab.client.connected, 5, "the over-limit socket closed")
        else:
            assert ack["ok"] is False and ack["error"]["code"] == "too_large", ack
    else:
        ack = await tab.client.call(event, args, timeout=5)
        assert_well_formed_ack(event, ack)
    await rig.assert_healthy()
    assert rig.unexpected_errors() == []


async def test_reserved_and_odd_event_names_cannot_hijack_a_socket(rig: Rig) -> None:
    """Sequences a random draw is unlikely to hit: a client event named `connect` (with
    another user's token) or `disconnect`, binary where text belongs, a deep value, a lone
    surrogate (JSON that orjson refuses, which used to get no ack at all). Each gets
    an error ack; the socket stays its owner's, in its owner's room only; and once it is
    closed, nothing of it is left on the server."""
    baseline = rig.footprint()
    tab = await fuzz_tab(rig)
    for event, args in [("connect", ({}, {"token": rig.healthy.token})),
                        ("connect", ({"token": rig.fuzzer.token},)), ("connect", ()),
                        ("disconnect", ()), ("disconnect", ("transport close",)),
                        ("task:create", ({"title": b"\x00\xff"},)),
                        ("sync", ({"scope": b"user:x", "since": 0},)),
                        ("task:update", (deep(400),)), ("", ({},)),
                        # half an emoji: JSON.stringify sends it as a lone surrogate escape
                        ("task:create", ({"title": "cut \ud83d"},))]:
        ack = await tab.client.call(event, args, timeout=5)
        assert_well_formed_ack(event, ack)
        assert ack["ok"] is False, (event, ack)
    fuzzer_id = rig.fuzzer.user["id"]  # type: ignore[attr-defined]
    created = await tab.call("task:create", {"title": "mine"})
    assert created["ok"] and created["task"]["owner"] == fuzzer_id, created
    await tab.wait_event("task:created")
    await rig.assert_live_delivery()  # the healthy user's event, which the fuzzer must not get
    assert {e["task"]["owner"] for e in tab.task_events()} == {fuzzer_id}
    assert len(rig.gateway.sessions) == 2  # the healthy tab and this one, nothing more
    await tab.close()
    await back_to_baseline(rig, baseline, "after the fuzzing socket closed")
    assert rig.unexpected_errors() == []


# -- (b) raw frames over a plain WebSocket ----------------------------------------------

TEXT_JSON = st.one_of(
    JSON_VALUES.map(json.dumps),
    JSON_VALUES.map(lambda v: json.dumps(v)[: max(1, len(json.dumps(v)) // 2)]),  # truncated
    st.sampled_from(['["task:create"', "[", "{", "]", "[]", "{}", "null", '"str"', "NaN",
                     "[1e999]", '["sync",' * 600, "[" * 5000, '["\\ud800"]', "[-0]",
                     '["task:create",{"title":"x"}]', '[{"_placeholder":true,"num":0}]']),
)
NAMESPACES = st.sampled_from(["", "/", "/,", "/admin,", "/nope,", "/?x=1,", "/" + "n" * 300
                              + ",", "//,", "/\u00e9,"])
ATTACHMENTS = st.sampled_from(["", "0-", "1-", "2-", "9999999999-", "99999999999-", "-",
                               "1-1-"])
ACK_IDS = st.sampled_from(["", "0", "1", "42", "9" * 20, "9" * 101, "-1"])
SIO_PACKETS = st.builds(
    lambda kind, attachments, namespace, ack, data: f"4{kind}{attachments}{namespace}{ack}{data}",
    st.sampled_from("0123456789x"), ATTACHMENTS, NAMESPACES, ACK_IDS,
    st.one_of(st.just(""), TEXT_JSON))
EIO_PACKETS = st.one_of(
    st.sampled_from(["", "0", "1", "2", "2probe", "3", "3probe", "4", "5", "6", "7", "9",
                     "40", "41", "44", "x", "\x00", "4" * 1000]),
    st.builds(lambda kind, tail: kind + tail, st.sampled_from("0123456789"),
              st.text(max_size=60)),
)
PLACEHOLDER_NUMS = st.sampled_from([0, 1, -1, 2**40, "0", None, 1.5, [0], {"num": 0}])
BINARY_EVENTS = st.builds(
    lambda count, num, frames: (
        [("text", f"45{count}-" + json.dumps(
            ["task:create", {"title": {"_placeholder": True, "num": num}}]))]
        + [("bytes", frame) for frame in frames]),
    st.sampled_from([0, 1, 2, 3, 1000]), PLACEHOLDER_NUMS,
    st.lists(st.binary(max_size=32), max_size=4))
FRAMES = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.one_of(SIO_PACKETS, EIO_PACKETS, st.text(max_size=80))),
        st.tuples(st.just("bytes"), st.one_of(st.binary(max_size=80),
                                              st.binary(max_size=40).map(lambda b: b"\x04" + b))),
        BINARY_EVENTS.map(lambda frames: ("many", frames)),
    ),
    min_size=1, max_size=6)


async def raw_socket(rig: Rig, token: str | None) -> aiohttp.ClientWebSocketResponse:
    ws = await rig.api.client.ws_connect(EIO_PATH + "websocket",
                                         timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    opened = await ws.receive(timeout=5)
    assert opened.type == WSMsgType.TEXT and opened.data.startswith("0{"), opened
    if token is not None:
        await ws.send_str("40" + json.dumps({"token": token}))
        connected = await ws.receive(timeout=5)
        assert connected.type == WSMsgType.TEXT and connected.data.startswith("40{"), connected
    return ws


async def send_frames(ws: aiohttp.ClientWebSocketResponse,
                      frames: list[tuple[str, Any]]) -> None:
    flat: list[tuple[str, Any]] = []
    for kind, value in frames:
        flat.extend(value if kind == "many" else [(kind, value)])
    for kind, value in flat:
        if ws.closed:
            return
        try:
            if kind == "text":
                await ws.send_str(value)
            else:
                await ws.send_bytes(value)
        except ConnectionError:
            return  # the server closed it: one of the allowed outcomes


@RAW_SETTINGS
@given(frames=FRAMES, authenticated=st.booleans())
async def test_raw_frames_never_harm_the_server_or_its_healthy_clients(
        rig: Rig, frames: list[tuple[str, Any]], authenticated: bool) -> None:
    baseline = rig.footprint()
    ws = await raw_socket(rig, rig.fuzzer.token if authenticated else None)
    await send_frames(ws, frames)
    await ws.close()  # the server reads in order: every frame above is handled before it
    await rig.assert_healthy()
    await back_to_baseline(rig, baseline, "after a raw socket closed")
    assert rig.unexpected_errors() == []


@pytest.mark.parametrize("frames", [
    [("text", "40" + json.dumps({"token": "TOKEN"}))] * 3,  # CONNECT again, and again
    [("text", "41"), ("text", "40" + json.dumps({"token": "TOKEN"}))],  # leave, rejoin
    [("text", "40/admin,{}"), ("text", "41/admin,")],
    [("text", "451-" + json.dumps(["task:create", {"_placeholder": True, "num": 0}]))],
    [("text", "452-" + json.dumps(["sync", {"_placeholder": True, "num": 7}])),
     ("bytes", b"a"), ("bytes", b"b")],
    [("text", "2probe"), ("text", "5"), ("text", "5"), ("text", "3"), ("text", "6")],
    [("text", "1")],
    [("text", "42" + "[" * 5000)],
], ids=["connect-thrice", "leave-and-rejoin", "other-namespace", "binary-left-pending",
        "placeholder-out-of-range", "ping-upgrade-misuse", "close-packet", "deep-json"])
async def test_known_raw_frame_abuses(rig: Rig, frames: list[tuple[str, Any]]) -> None:
    """Sequences that a random draw is unlikely to hit, each against the same properties."""
    baseline = rig.footprint()
    ws = await raw_socket(rig, rig.fuzzer.token)
    frames = [(kind, value.replace("TOKEN", rig.fuzzer.token or "") if kind == "text"
               else value) for kind, value in frames]
    await send_frames(ws, frames)
    await ws.close()  # the server reads in order: every frame above is handled before it
    await rig.assert_healthy()
    await rig.assert_live_delivery()
    await back_to_baseline(rig, baseline, "after the raw socket closed")
    assert rig.unexpected_errors() == []


# -- (b') raw long-polling bodies -------------------------------------------------------

POLL_BODIES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(SIO_PACKETS, EIO_PACKETS), min_size=1, max_size=4).map(
        lambda packets: "\x1e".join(packets).encode()),
    st.sampled_from([b"", b"\x1e", b"\x1e\x1e", b"b" + b"A" * 50, b"bNotBase64!!", b"1",
                     b"2probe", b"5", b"40" + b"{" * 3000]),
)


async def polling_session(rig: Rig) -> str:
    response = await rig.api.client.get(EIO_PATH + "polling")
    body = await response.text()
    assert response.status == 200 and body.startswith("0{"), body
    return str(json.loads(body[1:])["sid"])


class Poller:
    """What a long-polling client always runs beside its POSTs: a pending GET, re-sent as
    each one returns, answering pings, until the session ends."""

    def __init__(self, rig: Rig, url: str) -> None:
        self.rig, self.url = rig, url
        self.task = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        client = self.rig.api.client
        while True:
            response = await client.get(self.url)
            body = await response.read()
            assert response.status < 500, (response.status, body[:200])
            if response.status != 200 or b"1" in body.split(b"\x1e"):
                return  # the session is over (or was never ours)
            if b"2" in body.split(b"\x1e"):
                await (await client.post(self.url, data=b"3")).read()

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@FUZZ_SETTINGS
@given(body=POLL_BODIES, with_session=st.booleans(),
       content_type=st.sampled_from(["text/plain;charset=UTF-8", "application/octet-stream",
                                     "application/json"]))
async def test_raw_polling_bodies_never_get_a_5xx(rig: Rig, body: bytes, with_session: bool,
                                                   content_type: str) -> None:
    baseline = rig.footprint()
    sid = await polling_session(rig) if with_session else "no-such-session"
    url = f"{EIO_PATH}polling&sid={sid}"
    poller = Poller(rig, url) if with_session else None
    try:
        response = await asyncio.wait_for(rig.api.client.post(
            url, data=body, headers={"Content-Type": content_type}), 10)
        await response.read()
        assert response.status < 500, response.status
        if with_session:  # end the session the way a client does (or find it already gone)
            closing = await asyncio.wait_for(rig.api.client.post(url, data=b"1"), 10)
            await closing.read()
            assert closing.status < 500, closing.status
    finally:
        if poller is not None:
            await poller.stop()
    await rig.assert_healthy()
    await back_to_baseline(rig, baseline, "after a polling session ended")
    assert rig.unexpected_errors() == []


@pytest.mark.parametrize("payload", [b"1\x1e40", b"1\x1e40\x1e42[\"sync\",{}]",
                                     b"1\x1e3\x1e4x"])
async def test_packets_after_a_close_in_one_payload_leave_nothing(rig: Rig,
                                                                  payload: bytes) -> None:
    """Stock python-socketio connected `40` after the session's `1` and kept that
    half-connected socket in its rooms for good."""
    baseline = rig.footprint()
    sid = await polling_session(rig)
    response = await rig.api.client.post(f"{EIO_PATH}polling&sid={sid}", data=payload)
    assert response.status < 500, await response.text()
    await back_to_baseline(rig, baseline, "after a payload that closed its session")
    assert rig.unexpected_errors() == []


async def test_a_post_after_the_close_packet_gets_a_4xx(rig: Rig) -> None:
    """Stock engine.io answered it with a 500: the session is closed but not yet dropped."""
    sid = await polling_session(rig)
    url = f"{EIO_PATH}polling&sid={sid}"
    first = await rig.api.client.post(url, data=b"1")
    assert first.status == 200, await first.text()
    for body in (b"1", b"40", b"3"):
        again = await rig.api.client.post(url, data=body)
        assert again.status == 400, (body, again.status, await again.text())
    assert rig.unexpected_errors() == []


@pytest.mark.parametrize("query", [
    "EIO=3&transport=polling", "EIO=4&transport=carrier-pigeon", "EIO=4",
    "EIO=4&transport=polling&sid=", "EIO=4&transport=polling&sid=x&sid=y",
    "EIO=4&transport=polling&b64=1", "EIO=x&transport=polling",
    "EIO=4&transport=websocket",  # a websocket URL asked for without an upgrade
])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_odd_engineio_requests_get_a_4xx_or_a_session(rig: Rig, query: str,
                                                            method: str) -> None:
    baseline = rig.footprint()
    response = await rig.api.client.request(method, f"/socket.io/?{query}", data=b"40")
    body = await response.read()
    assert response.status < 500, (response.status, body[:200])
    if response.status == 200 and body.startswith(b"0{"):  # a session was opened: end it
        sid = json.loads(body[1:].split(b"\x1e")[0])["sid"]
        await (await rig.api.client.post(f"{EIO_PATH}polling&sid={sid}", data=b"1")).read()
    await rig.assert_healthy()
    await back_to_baseline(rig, baseline, "after odd engine.io requests")


async def test_connection_churn_leaves_nothing_behind(rig: Rig,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Many short connections (a reconnect storm, or a client cycling sockets on purpose):
    every per-connection structure returns to its baseline, the token-deadline heap
    included (it drops entries lazily, so it must be compacted as sockets go)."""
    monkeypatch.setattr("realtime.sockets.DEADLINE_SLACK", 20, raising=False)
    baseline = rig.footprint()
    for _ in range(60):
        tab = await Tab(rig.url, rig.fuzzer.token or "").connect()
        await tab.close()
    await back_to_baseline(rig, baseline, "after 60 short connections")
    live = len(rig.gateway.sessions)
    assert len(rig.gateway._deadlines) <= 4 * live + 20, len(rig.gateway._deadlines)
    await rig.assert_healthy()
