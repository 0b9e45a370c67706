"""Health, readiness, the OpenAPI document and the plumbing every response shares."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handlers.openapi import openapi_document
from realtime import keys

from conftest import Api

SOCKET_IO_PATH = "/socket.io/"


async def test_health(api: Api) -> None:
    before = datetime.now(UTC)
    reply = await api.get("/api/health", token=None)
    assert reply.status == 200
    body = reply.body
    assert body["status"] == "ok"
    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs((stamp - before).total_seconds()) < 5
    assert isinstance(body["uptime"], int | float) and 0 <= body["uptime"] < 600
    assert body["store"] == "up"
    assert body["broker"] == "up"
    assert body["memory"]["rss_bytes"] > 1 << 20


async def test_ready(api: Api) -> None:
    reply = await api.get("/api/ready", token=None)
    assert reply.status == 200
    assert reply.body == {"ready": True, "store": "up", "broker": "up", "draining": False}


async def test_not_ready_and_unavailable_when_the_store_is_gone(user_api: Api) -> None:
    await user_api.app[keys.STORE].close()
    ready = await user_api.get("/api/ready", token=None)
    assert ready.status == 503
    assert ready.body == {"ready": False, "store": "down", "broker": "up", "draining": False}
    health = await user_api.get("/api/health", token=None)
    assert health.status == 200  # alive, and says what is wrong
    assert health.body["store"] == "down"
    tasks = await user_api.get("/api/tasks")
    assert tasks.status == 503
    assert tasks.error["code"] == "unavailable"


async def test_not_ready_when_the_broker_is_down(api: Api) -> None:
    api.app[keys.BROKER].healthy = False
    reply = await api.get("/api/ready", token=None)
    assert reply.status == 503
    assert reply.body == {"ready": False, "store": "up", "broker": "down", "draining": False}


async def test_openapi_document_is_3_1(api: Api) -> None:
    reply = await api.get("/api/openapi.json", token=None)
    assert reply.status == 200
    assert reply.body["openapi"].startswith("3.1.")
    assert reply.body == openapi_document()
    assert {"title", "version"} <= set(reply.body["info"])


async def test_openapi_documents_every_route_the_app_registers(api: Api) -> None:
    document = (await api.get("/api/openapi.json", token=None)).body
    registered = set()
    for route in api.app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path == SOCKET_IO_PATH:  # the Socket.IO transport, not a REST operation
            continue
        if (route.resource.name or "").startswith("dashboard-"):  # the page's static files
            continue
        registered.add((route.method.lower(), path))
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item if method in {"get", "post", "put", "patch", "delete"}
    }
    assert registered == documented
    assert ("get", "/api/tasks/{task_id}") in registered  # the comparison saw real routes


async def test_unknown_route_and_wrong_method(api: Api) -> None:
    missing = await api.get("/api/nothing-here", token=None)
    assert missing.status == 404
    assert missing.error["code"] == "not_found"
    wrong = await api.request("PUT", "/api/tasks", token=None)
    assert wrong.status == 405
    assert "GET" in wrong.headers["Allow"] and "POST" in wrong.headers["Allow"]
    assert wrong.error["code"] == "invalid"


@pytest.mark.parametrize(("sent", "echoed"), [
    ("req-123.abc_DEF", True), ("x" * 65, False), ("has space", False), ("", False)])
async def test_request_id(api: Api, sent: str, echoed: bool) -> None:
    reply = await api.get("/api/health", token=None, headers={"X-Request-Id": sent})
    returned = reply.headers["X-Request-Id"]
    assert (returned == sent) is echoed
    assert returned


async def test_shared_headers_on_success_and_error(api: Api) -> None:
    for path in ("/api/health", "/api/auth/me"):
        reply = await api.get(path, token=None)
        assert reply.headers["Cache-Control"] == "no-store"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Content-Type"].startswith("application/json")
