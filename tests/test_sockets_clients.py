"""Real clients, every wire format: python-socketio and the official Node socket.io-client,
JSON and msgpack, websocket and long-polling; plus the engine.io work-arounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime.app import create_app

from conftest import Api, OpenAPIChecker, make_config
from socket_clients import NodeTab, Tab

Serve = Callable[..., Awaitable[Api]]


@pytest.fixture
async def serve(tmp_path: Path, aiohttp_client: Any,
                openapi_checker: OpenAPIChecker) -> AsyncIterator[Serve]:
    async def start(**overrides: Any) -> Api:
        # A short ping interval keeps long-polling requests (and closing them) short.
        config = make_config(tmp_path, **{"sockets.ping_interval": "2s", **overrides})
        return Api(await aiohttp_client(create_app(config)), openapi_checker)

    yield start


def url_of(api: Api) -> str:
    return str(api.client.make_url("/"))


@pytest.mark.parametrize(("serializer", "transports"), [
    ("json", ("websocket",)),
    ("msgpack", ("websocket",)),
    ("json", ("polling",)),
    ("msgpack", ("polling",)),
])
async def test_python_and_node_clients_of_one_user_see_each_others_writes(
        serve: Serve, closing: list[Any], serializer: str,
        transports: tuple[str, ...]) -> None:
    api = await serve(**{"sockets.serializer": serializer,
                         "sockets.transports": "websocket,polling"})
    user = await api.as_new_user()
    url, msgpack = url_of(api), serializer == "msgpack"
    py_one = await Tab(url, user.token, transports=transports, msgpack=msgpack).connect()
    closing.append(py_one)
    py_two = await Tab(url, user.token, transports=transports, msgpack=msgpack).connect()
    closing.append(py_two)
    node = await NodeTab.start()
    closing.append(node)
    outcome, detail = await node.connect(url, user.token, transports=transports,
                                         msgpack=msgpack)
    assert outcome == "connected", detail

    from_py = await py_one.call("task:create", {"title": "from python", "mutation_id": "py"})
    from_node = await node.call("task:create", {"title": "from node", "mutation_id": "js"})
    assert from_py["ok"] and from_node["ok"], (from_py, from_node)
    rest = await user.patch(f"/api/tasks/{from_node['task']['id']}",
                            json={"status": "in_progress"})
    assert rest.status == 200

    for client in (py_one, py_two, node):
        await client.wait_for(lambda events, c=client: len(
            [e for e, _ in events if e.startswith("task:")]) == 3, timeout=10)
        titles = [(data["seq"], data["task"]["title"], data["origin"])
                  for event, data in client.events if event.startswith("task:")]
        assert titles == [(1, "from python", "py"), (2, "from node", "js"),
                          (3, "from node", None)]
        assert client.replica.violations == []


async def test_node_client_is_refused_with_a_readable_reason(serve: Serve,
                                                             closing: list[Any]) -> None:
    api = await serve()
    node = await NodeTab.start()
    closing.append(node)
    outcome, detail = await node.connect(url_of(api), "forged.token.value")
    assert outcome == "connect_error"
    assert detail["message"] == "invalid token"
    assert detail["data"] == {"code": "unauthorized"}


async def test_node_client_catches_up_with_cursors(serve: Serve, closing: list[Any]) -> None:
    api = await serve()
    user = await api.as_new_user()
    scope = f"user:{user.user['id']}"
    for n in range(3):
        assert (await user.post("/api/tasks", json={"title": f"t{n}"})).status == 201
    node = await NodeTab.start()
    closing.append(node)
    outcome, _ = await node.connect(url_of(api), user.token, cursors={scope: 1})
    assert outcome == "connected"
    page = await node.wait_event("sync", timeout=10)
    assert [c["title"] for c in page["changes"]] == ["t1", "t2"] and page["seq"] == 3


async def test_polling_carries_a_700_kib_message_whole(serve: Serve,
                                                       closing: list[Any]) -> None:
    """python-engineio's aiohttp driver reads a polling POST with one read(n) and can
    truncate it; our reader takes the whole body. The validation error below names the
    real length, so it proves the server decoded the entire 700 KiB message."""
    api = await serve(**{"sockets.transports": "websocket,polling"})
    user = await api.as_new_user()
    tab = await Tab(url_of(api), user.token, transports=("polling",)).connect()
    closing.append(tab)
    description = "x" * (700 * 1024)  # 700 KiB
    ack = await tab.call("task:create", {"title": "big", "description": description},
                         timeout=20)
    assert ack["error"]["code"] == "invalid"
    assert ack["error"]["details"]["fields"]["description"].startswith("must be 0 to 10000")
    ok = await tab.call("task:create", {"title": "small", "description": "é" * 9000})
    assert ok["ok"] and len(ok["task"]["description"]) == 9000


async def test_a_message_over_the_limit_is_refused_never_cut(serve: Serve,
                                                             closing: list[Any]) -> None:
    api = await serve(**{"sockets.transports": "websocket,polling",
                         "sockets.max_message_bytes": 64 * 1024})
    user = await api.as_new_user()
    for transports in (("polling",), ("websocket",)):
        tab = await Tab(url_of(api), user.token, transports=transports).connect()
        closing.append(tab)
        await tab.client.emit("task:create", {"title": "x" * (100 * 1024)})
        await tab.wait_event("disconnect", timeout=10)
    assert (await user.get("/api/tasks")).body["tasks"] == []
    assert (await api.get("/api/ready")).status == 200


async def test_polling_is_off_unless_configured(serve: Serve) -> None:
    api = await serve()
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{url_of(api)}socket.io/?EIO=4&transport=polling")
        assert response.status == 400


async def test_permessage_deflate_is_declined(serve: Serve) -> None:
    api = await serve()
    url = f"{url_of(api)}socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
        assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        opening = await ws.receive_str()
        assert opening.startswith('0{"sid"')


async def test_a_close_packet_ends_a_pending_long_poll_at_once(serve: Serve) -> None:
    """Stock python-engineio leaves the pending GET hanging for ping_interval +
    ping_timeout (45 s here) after the client's CLOSE; it must return at once."""
    api = await serve(**{"sockets.transports": "websocket,polling",
                         "sockets.ping_interval": "25s"})
    base = f"{url_of(api)}socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        opening = await (await http.get(base)).text()
        sid = opening.split('"sid":"')[1].split('"')[0]
        pending = asyncio.ensure_future(http.get(f"{base}&sid={sid}"))
        await asyncio.sleep(0)  # let the long-poll reach the server first
        closed = await http.post(f"{base}&sid={sid}", data="1",
                                 headers={"Content-Type": "text/plain"})
        assert closed.status == 200
        response = await asyncio.wait_for(pending, timeout=3)
        assert response.status in (200, 400)
