"""What every HTTP answer carries (handlers/protection.py): security headers, CORS from
FRONTEND_URL (REST and Socket.IO), compression; and the password policy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime.app import create_app
from realtime.config import ConfigError, load_config

from conftest import TEST_SECRET, Api, OpenAPIChecker, make_config
from socket_clients import Tab

FRONTEND = "https://app.example.com"


async def serve(aiohttp_client: Any, checker: OpenAPIChecker, tmp_path: Path,
                **overrides: Any) -> Api:
    config = make_config(tmp_path, **{"http.frontend_url": f"{FRONTEND}, http://localhost:3000",
                                      **overrides})
    return Api(await aiohttp_client(create_app(config)), checker)


@pytest.fixture
async def app_api(aiohttp_client: Any, openapi_checker: OpenAPIChecker,
                  tmp_path: Path) -> Api:
    return await serve(aiohttp_client, openapi_checker, tmp_path)


# -- security headers -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/health", "/api/tasks", "/api/no-such-route",
                                  "/not-api-at-all"])
async def test_every_answer_carries_the_security_headers(app_api: Api, path: str) -> None:
    response = await app_api.client.get(path)
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    csp = dict(part.strip().split(" ", 1) for part in
               headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"  # the dashboard's JS is a file: no inline script
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert csp["connect-src"] == "'self'"  # its websocket goes to the same origin
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert "Strict-Transport-Security" not in headers  # only when configured (TLS)
    assert headers["Server"] == "TaskMaster"  # no framework name and version


async def test_hsts_when_configured(aiohttp_client: Any, openapi_checker: OpenAPIChecker,
                                    tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"http.hsts_max_age": 31536000})
    response = await api.client.get("/api/health")
    assert response.headers["Strict-Transport-Security"] == \
        "max-age=31536000; includeSubDomains"


# -- CORS -----------------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin(app_api: Api) -> None:
    response = await app_api.client.options("/api/tasks/abc", headers={
        "Origin": FRONTEND, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, if-match, content-type"})
    assert response.status == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == FRONTEND
    assert "PATCH" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "if-match", "content-type", "x-mutation-id"} <= allowed
    assert "Origin" in headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in headers  # bearer tokens, no cookies


async def test_a_preflight_from_another_origin_gets_no_cors_headers(app_api: Api) -> None:
    response = await app_api.client.options("/api/tasks", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


async def test_cors_headers_on_answers_to_allowed_origins_only(app_api: Api) -> None:
    user = await app_api.as_new_user()
    created = await user.post("/api/tasks", json={"title": "cors"})
    path = f"/api/tasks/{created.body['task']['id']}"
    allowed = await user.get(path, headers={"Origin": FRONTEND})
    assert allowed.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = {h.strip() for h in allowed.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ETag", "Retry-After", "X-Request-Id", "Location"} <= exposed
    error = await user.get("/api/tasks/missing", headers={"Origin": FRONTEND})
    assert error.status == 404
    assert error.headers["Access-Control-Allow-Origin"] == FRONTEND  # errors are readable
    other = await user.get(path, headers={"Origin": "https://evil.example"})
    assert other.status == 200  # a bearer token, not a cookie: the browser is the gate
    assert "Access-Control-Allow-Origin" not in other.headers
    # Origins compare case-insensitively, and the server's own origin is always allowed
    # (its dashboard page).
    upper = await user.get(path, headers={"Origin": FRONTEND.upper()})
    assert upper.headers["Access-Control-Allow-Origin"] == FRONTEND.upper()
    own = f"http://{app_api.client.host}:{app_api.client.port}"
    assert (await user.get(path, headers={"Origin": own})).headers[
        "Access-Control-Allow-Origin"] == own


async def test_socketio_refuses_other_origins(app_api: Api, closing: list[Any]) -> None:
    user = await app_api.as_new_user()
    url = str(app_api.client.make_url("/"))
    allowed = Tab(url, user.token)
    closing.append(allowed)
    await allowed.client.connect(url, auth={"token": user.token}, transports=["websocket"],
                                 headers={"Origin": FRONTEND}, wait_timeout=5)
    assert allowed.client.connected
    refused = Tab(url, user.token)
    closing.append(refused)
    with pytest.raises(Exception):  # noqa: B017 - python-socketio's ConnectionError
        await refused.client.connect(url, auth={"token": user.token},
                                     transports=["websocket"],
                                     headers={"Origin": "https://evil.example"},
                                     wait_timeout=5)
    assert not refused.client.connected
    async with aiohttp.ClientSession() as http:
        answer = await http.get(f"{url}socket.io/?EIO=4&transport=websocket",
                                headers={"Origin": "https://evil.example"})
        assert answer.status == 400
        assert "not an accepted origin" in await answer.text()


@pytest.mark.parametrize("origins", ["*", "https://a.example, *", " * "])
def test_production_refuses_any_origin(origins: str) -> None:
    with pytest.raises(ConfigError, match="FRONTEND_URL"):
        load_config(env={"NODE_ENV": "production", "JWT_SECRET": TEST_SECRET,
                         "FRONTEND_URL": origins}, path=None)


# -- compression ------------------------------------------------------------------------------


async def test_large_rest_answers_are_compressed_when_accepted(app_api: Api) -> None:
    user = await app_api.as_new_user()
    for n in range(20):
        await user.post("/api/tasks", json={"title": f"task number {n}",
                                            "description": "some words " * 20})
    url = str(app_api.client.make_url("/api/tasks"))
    auth = {"Authorization": f"Bearer {user.token}"}
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        plain = await http.get(url, headers={**auth, "Accept-Encoding": "identity"})
        raw = await plain.read()
        assert "Content-Encoding" not in plain.headers and len(raw) > 1024
        zipped = await http.get(url, headers={**auth, "Accept-Encoding": "gzip, br"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in zipped.headers.getall("Vary")
        body = await zipped.read()
        assert gzip.decompress(body) == raw and len(body) < len(raw) / 3
        deflated = await http.get(url, headers={**auth, "Accept-Encoding": "deflate"})
        assert deflated.headers["Content-Encoding"] == "deflate"
        assert zlib.decompress(await deflated.read()) == raw
        refused = await http.get(url, headers={**auth, "Accept-Encoding": "gzip;q=0"})
        assert "Content-Encoding" not in refused.headers
        small = await http.get(str(app_api.client.make_url("/api/auth/me")),
                               headers={**auth, "Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in small.headers  # under compress_min_bytes


async def test_engineio_answers_are_left_alone(aiohttp_client: Any,
                                               openapi_checker: OpenAPIChecker,
                                               tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"sockets.transports": "websocket,polling",
                         "http.compress_min_bytes": 1})
    url = str(api.client.make_url("/socket.io/?EIO=4&transport=polling"))
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        opening = await http.get(url, headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in opening.headers  # under engine.io's own threshold
        assert (await opening.text()).startswith('0{"sid"')


# -- passwords --------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "why"), [
    ("short", "must be 8 to"),
    ("password1", "most common"),
    ("Qwertyuiop", "most common"),
    ("aaaaaaaaaa", "repeated"),
    ("weak.user@example.com", "email"),
    ("WEAK.USER", "email"),
])
async def test_weak_passwords_are_refused_at_registration(app_api: Api, password: str,
                                                          why: str) -> None:
    reply = await app_api.post("/api/auth/register", token=None, json={
        "email": "weak.user@example.com", "password": password, "name": "Weak"})
    assert reply.status == 400
    assert why in reply.error["details"]["fields"]["password"]


async def test_login_does_not_apply_the_policy(app_api: Api) -> None:
    """An account made under an older policy can still log in (and learns nothing)."""
    reply = await app_api.post("/api/auth/login", token=None, json={
        "email": "nobody@example.com", "password": "password1"})
    assert reply.status == 401


def test_the_guide_settings_reach_the_limits() -> None:
    config = load_config(env={"RATE_LIMIT_WINDOW_MS": "60000", "RATE_LIMIT_MAX_REQUESTS": "7",
                              "JWT_SECRET": TEST_SECRET}, path=None)
    from realtime.ratelimit import MemoryLimiter, RateLimits

    limits = RateLimits(config, MemoryLimiter())
    assert limits.rest is not None
    assert (limits.rest.limit, limits.rest.window_ms) == (7, 60000)
    with pytest.raises(ConfigError, match="RATE_LIMIT_MAX_REQUESTS"):
        load_config(env={"RATE_LIMIT_MAX_REQUESTS": "-1"}, path=None)
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_config(env={"TASKMASTER_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"}, path=None)
