"""Shared fixtures: a configured app served over real HTTP, and an API client that
checks every response it sees against the OpenAPI document."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from handlers.openapi import openapi_document
from realtime.app import create_app
from realtime.config import Config, load_config
from realtime.runner import FrontRunner


def _restore_hypothesis_reports() -> None:
    """schemathesis (tests/test_security_schema.py) swaps hypothesis' example printer, process
    wide, for one that prints nothing (a speed-up for huge schemas), which blanks the
    falsifying example of every property test in the suite. Put hypothesis' own back."""
    import schemathesis.generation.hypothesis.builder  # noqa: F401  (makes the swap first)
    from hypothesis import core
    from hypothesis.vendor import pretty

    core.RepresentationPrinter = pretty.RepresentationPrinter


_restore_hypothesis_reports()
CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = "test-secret-" + "x" * 40
FAST_HASHING = {"auth.password_time_cost": 1, "auth.password_memory_kib": 1024}
# The suite registers many users and opens many sockets from 127.0.0.1: every limit stays
# on (its code runs in every test) but far above what a test does. The rate-limit tests
# (tests/test_limits.py) set strict ones.
GENEROUS_LIMITS: dict[str, Any] = {
    "rate_limit.max_requests": 1_000_000_000, "rate_limit.user_max_requests": 1_000_000_000,
    "rate_limit.auth_max_requests": 1_000_000_000, "rate_limit.connect_max": 1_000_000_000,
    "rate_limit.socket_max_events": 1_000_000_000, "sockets.max_per_user": 100_000,
}


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    values = {
        "store.url": f"sqlite:///{tmp_path}/taskmaster.db",
        "auth.jwt_secret": TEST_SECRET,
        "broker.url": "memory://",
        **FAST_HASHING,
        **GENEROUS_LIMITS,
        **overrides,
    }
    return load_config(env={}, path=None, overrides=values)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


# -- OpenAPI response checking ------------------------------------------------------


class OpenAPIChecker:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.routes = []
        for template, item in document["paths"].items():
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append((re.compile(f"^{pattern}$"), item))
        self.seen: set[tuple[str, str, str]] = set()

    def check(self, method: str, path: str, status: int, body: Any,
              content_type: str) -> None:
        item = next((item for pattern, item in self.routes if pattern.match(path)), None)
        if item is None:
            if status == 404:
                return  # unknown routes are not in the document, by definition
            raise AssertionError(f"{method} {path} is not in the OpenAPI document")
        operation = item.get(method.lower())
        if operation is None:
            assert status == 405, f"{method} {path} answered {status} but is undocumented"
            schema = self.document["components"]["schemas"]["Error"]
        else:
            responses = operation["responses"]
            documented = responses.get(str(status)) or responses.get("default")
            assert documented is not None, (
                f"{method} {path} answered {status}, which the document does not list")
            self.seen.add((method.upper(), path_template(item, self.document), str(status)))
            content = documented.get("content")
            if content is None:
                assert body in (None, b"", ""), f"{status} should have no body"
                return
            if "text/plain" in content:
                assert content_type == "text/plain" and isinstance(body, str | bytes)
                return
            assert content_type == "application/json", content_type
            schema = content["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator(
            {**schema, "components": self.document["components"]})
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method} {path} {status} breaks the document: {errors[0]}"


def path_template(item: dict[str, Any], document: dict[str, Any]) -> str:
    for template, candidate in document["paths"].items():
        if candidate is item:
            return template
    return "?"


@pytest.fixture(scope="session")
def openapi_checker() -> OpenAPIChecker:
    return OpenAPIChecker(openapi_document())


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, self.body
        return self.body["error"]


@dataclass
class Api:
    """A thin client over the real HTTP server that validates every reply."""

    client: TestClient
    checker: OpenAPIChecker
    token: str | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[no-any-return]

    async def request(self, method: str, path: str, *, json: Any = None,
                      data: bytes | str | None = None, token: str | None = "default",
                      headers: dict[str, str] | None = None,
                      params: Any = None) -> Reply:
        headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, path, json=json, data=data,
                                             headers=headers, params=params)
        raw = await response.read()
        body: Any = None
        if raw and response.content_type == "text/plain":  # /metrics, checked below
            body = raw.decode()
        elif raw:
            assert response.content_type == "application/json", (response.content_type, raw)
            body = await response.json()
        self.checker.check(method, response.url.path, response.status, body,
                           response.content_type)
        assert response.status != 500, body
        return Reply(response.status, body, response.headers)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    async def register(self, email: str | None = None, password: str = "correct horse",
                       name: str = "Tester") -> dict[str, Any]:
        email = email or f"user{next(self._ids)}-{id(self)}@example.com"
        reply = await self.post("/api/auth/register", token=None,
                                json={"email": email, "password": password, "name": name})
        assert reply.status == 201, reply.body
        return reply.body  # type: ignore[no-any-return]

    async def as_new_user(self, **kw: Any) -> Api:
        """Another client of the same server, logged in as a fresh user."""
        other = Api(self.client, self.checker, _ids=self._ids)
        result = await other.register(**kw)
        other.token = result["token"]
        other.user = result["user"]  # type: ignore[attr-defined]
        return other


AppFactory = Callable[..., Any]


class FrontTestServer(TestServer):
    """The app served the way `taskmaster serve` serves it: realtime/wsfront.py in front of
    every connection (websocket connects served natively, the rest by aiohttp)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return FrontRunner(self.app, **kwargs)


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Callable[..., Awaitable[TestClient]]:
    """pytest-aiohttp's, with apps served by FrontTestServer."""

    async def serve(app_or_server: Any, *, server_kwargs: dict[str, Any] | None = None,
                    **kwargs: Any) -> TestClient:
        if isinstance(app_or_server, web.Application):
            app_or_server = FrontTestServer(app_or_server, **(server_kwargs or {}))
        client: TestClient = await aiohttp_client(app_or_server, **kwargs)
        return client

    return serve


@pytest.fixture
async def api(aiohttp_client: Any, config: Config,
              openapi_checker: OpenAPIChecker) -> AsyncIterator[Api]:
    client = await aiohttp_client(create_app(config))
    yield Api(client, openapi_checker)


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Clients (socket tabs, Node clients) a test opened; closed when it ends."""
    opened: list[Any] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
async def user_api(api: Api) -> Api:
    """An Api logged in as a fresh user."""
    return await api.as_new_user()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for tests that talk to real server processes."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
