"""The dashboard's routes (handlers/dashboard.py) and the socket origin check, over real HTTP
in-process. The page itself is driven in a real browser in test_dashboard_browser.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from handlers.dashboard import CONTENT_SECURITY_POLICY, DEFAULT_DIR
from realtime.app import create_app

from conftest import make_config

CLIENT_FILE = DEFAULT_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js"
HANDSHAKE = "/socket.io/?EIO=4&transport=websocket"


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    return await aiohttp_client(create_app(make_config(tmp_path)))


async def test_the_page_and_its_files(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    html = await page.text()
    assert '<script type="module" src="/app.js"></script>' in html
    assert "style=" not in html and "<style" not in html and " on" + "click" not in html
    for name, kind in (("/app.js", "text/javascript"), ("/live.js", "text/javascript"),
                       ("/app.css", "text/css"), ("/favicon.svg", "image/svg+xml")):
        reply = await client.get(name)
        assert reply.status == 200, name
        assert reply.content_type == kind, name
        assert reply.headers["Cache-Control"] == "no-cache"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_no_script_or_stylesheet_uses_inner_html_or_eval() -> None:
    for path in DEFAULT_DIR.glob("*.js"):
        # the code without its comments (which may name what the code avoids)
        text = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(",
                          "new Function", "document.write", ".style."):
            assert forbidden not in text, f"{path.name} uses {forbidden}"


async def test_a_second_request_revalidates(client: TestClient) -> None:
    first = await client.get("/app.js")
    etag = first.headers["ETag"]
    again = await client.get("/app.js", headers={"If-None-Match": etag})
    assert again.status == 304


async def test_the_socket_io_client_comes_from_node_modules(client: TestClient) -> None:
    assert CLIENT_FILE.is_file(), "npm ci in web/ (scripts/test does it)"
    reply = await client.get("/vendor/socket.io.esm.min.js")
    assert reply.status == 200
    assert reply.content_type == "text/javascript"
    assert await reply.read() == CLIENT_FILE.read_bytes()


@pytest.mark.parametrize("path", [
    "/vendor/socket.io.min.js", "/vendor/..%2fpackage.json", "/vendor/%2e%2e/package.json",
    "/package.json", "/package-lock.json", "/..%2fpyproject.toml", "/%2e%2e/pyproject.toml",
    "/node_modules/socket.io-client/package.json", "/index.html.js", "/APP.JS",
    "/" + "a" * 70 + ".js", "/missing.js", "/app.js/x",
])
async def test_nothing_else_is_served(client: TestClient, path: str) -> None:
    reply = await client.get(path)
    assert reply.status == 404, path
    assert (await reply.json())["error"]["code"] == "not_found"


async def test_without_the_client_installed_the_vendor_file_is_a_clear_404(
        aiohttp_client: Any, tmp_path: Path) -> None:
    web = tmp_path / "web"
    shutil.copytree(DEFAULT_DIR, web, ignore=shutil.ignore_patterns("node_modules"))
    config = make_config(tmp_path, **{"http.dashboard_dir": str(web)})
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/")).status == 200
    reply = await client.get("/vendor/socket.io.esm.min.js")
    assert reply.status == 404
    assert "npm ci" in (await reply.json())["error"]["message"]


async def test_the_dashboard_can_be_turned_off(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, **{"http.dashboard": False})))
    for path in ("/", "/app.js", "/vendor/socket.io.esm.min.js"):
        assert (await client.get(path)).status == 404
    assert (await client.get("/api/health")).status == 200


async def test_missing_dashboard_files_are_a_404_not_a_crash(
        aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"http.dashboard_dir": str(tmp_path / "nowhere")})
    client = await aiohttp_client(create_app(config))
    reply = await client.get("/")
    assert reply.status == 404
    assert "not installed" in (await reply.json())["error"]["message"]


# -- the socket origin check: the server's own page, FRONTEND_URL, nothing else -----------


async def handshake_status(client: TestClient, origin: str, host: str | None = None) -> int:
    headers = {"Origin": origin}
    if host:
        headers["Host"] = host
    try:
        ws = await client.ws_connect(HANDSHAKE, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_sockets_accept_the_own_origin_and_frontend_url_only(
        aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"http.frontend_url": "https://app.example.com"})
    client = await aiohttp_client(create_app(config))
    own = f"http://{client.host}:{client.port}"
    assert await handshake_status(client, own) == 101
    assert await handshake_status(client, "https://app.example.com") == 101
    assert await handshake_status(client, "https://evil.example.com") == 400
    assert await handshake_status(client, own, host="other.example.com") == 400
