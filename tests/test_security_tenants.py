"""The cross-tenant matrix (DESIGN.md 5.4, isolated): user B attacks user A's tasks and
scope on every REST route and every socket event, with forged ids, forged scopes and forged
tokens. Zero leaks: nothing B receives (response bodies, acks, connect errors, every socket
event) carries A's data; and A's data is unchanged afterwards.

The routes come from the application's router and the OpenAPI document, the events from the
socket gateway's handlers: a route or an event without attacks in this matrix fails the test,
so a new one cannot be missed silently. The matrix that was tried is printed (`pytest -s`)
and written to `tenant-matrix.txt` in the test's tmp dir.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import socketio

from realtime import keys
from realtime.app import create_app

from conftest import Api, OpenAPIChecker, make_config
from mongo_server import mongodb_uri, mongodb_url  # noqa: F401  (fixtures)
from socket_clients import Tab

SOCKET_PATH = "/socket.io/"
NOT_ATTACKABLE = {"connect", "disconnect"}  # handlers python-socketio calls, not client events


@pytest.fixture(params=["sqlite", "mongodb"])
async def api(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path,
              openapi_checker: OpenAPIChecker) -> AsyncIterator[Api]:
    overrides: dict[str, Any] = {"rate_limit.max_requests": 10_000_000}
    if request.param == "mongodb":
        overrides["store.url"] = request.getfixturevalue("mongodb_url")
    client = await aiohttp_client(create_app(make_config(tmp_path, **overrides)))
    yield Api(client, openapi_checker)


@dataclass
class Row:
    surface: str
    attack: str
    outcome: str
    leaks: list[str]


@dataclass
class Tenants:
    """A (the victim, with tasks and a live socket) and B (the attacker)."""

    api: Api
    a: Api
    b: Api
    a_tasks: list[dict[str, Any]]
    a_tab: Tab
    b_spare: str
    b_tabs: list[tuple[str, Tab]] = field(default_factory=list)  # (how it connected, tab)
    rows: list[Row] = field(default_factory=list)
    marker: str = field(default_factory=lambda: f"ALPHA-{uuid.uuid4().hex}")

    @property
    def url(self) -> str:
        return str(self.api.client.make_url("/"))

    @property
    def a_id(self) -> str:
        return str(self.a.user["id"])  # type: ignore[attr-defined]

    @property
    def a_scope(self) -> str:
        return f"user:{self.a_id}"

    @property
    def b_scope(self) -> str:
        return f"user:{self.b.user['id']}"  # type: ignore[attr-defined]

    def leaks_in(self, received: Any) -> list[str]:
        """What of A's is in something B received: A's task content (every title and
        description carries a marker), A's e-mail and token, a task object of A's scope."""
        found: list[str] = []
        secrets = {self.marker: "A's task content",
                   self.a.user["email"]: "A's e-mail",  # type: ignore[attr-defined]
                   self.a.token or "-": "A's token"}

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                if value.get("owner") == self.a_id or value.get("scope") == self.a_scope:
                    found.append(f"an object of A's scope: {str(value)[:80]}")
                for item in value.values():
                    walk(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)
            elif isinstance(value, str | bytes):
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                found.extend(what for secret, what in secrets.items() if secret in text)

        walk(received)
        return found

    def record(self, surface: str, attack: str, outcome: str, received: Any) -> None:
        self.rows.append(Row(surface, attack, outcome, self.leaks_in(received)))

    def render(self) -> str:
        width = [max(len(r.surface) for r in self.rows), max(len(r.attack) for r in self.rows),
                 max(len(r.outcome) for r in self.rows)]
        lines = [f"{'surface':<{width[0]}}  {'attack':<{width[1]}}  "
                 f"{'outcome':<{width[2]}}  leak"]
        for r in self.rows:
            lines.append(f"{r.surface:<{width[0]}}  {r.attack:<{width[1]}}  "
                         f"{r.outcome:<{width[2]}}  {'; '.join(r.leaks) or 'none'}")
        return "\n".join(lines)


def b64_json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def forged_tokens(t: Tenants) -> dict[str, str]:
    """Tokens that claim to be A, made without A's credentials."""
    config = t.api.app[keys.CONFIG]
    now = int(time.time())
    claims = {"sub": t.a_id, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex,
              "iss": config.jwt_issuer, "aud": config.jwt_audience}
    header, _, signature = (t.b.token or "").split(".")
    return {
        "token for A signed with another secret": jwt.encode(claims, "x" * 48,
                                                             algorithm="HS256"),
        "B's token with sub changed to A": f"{header}.{b64_json(claims)}.{signature}",
        "alg none token for A": f"{b64_json({'alg': 'none', 'typ': 'JWT'})}."
                                f"{b64_json(claims)}.",
    }


def outcome_of(reply: Any) -> str:
    if isinstance(reply.body, dict) and "error" in reply.body:
        return f"{reply.status} {reply.body['error']['code']}"
    return str(reply.status)


# -- REST -----------------------------------------------------------------------------

Request = Callable[[Tenants, str | None], Awaitable[Any]]
# route -> [(attack, request(tenants, token) with B's token unless forged, allowed statuses)]
RouteAttacks = list[tuple[str, Request, set[int]]]


def _a_task(t: Tenants, index: int = 0) -> dict[str, Any]:
    return t.a_tasks[index]


def rest_matrix() -> dict[tuple[str, str], RouteAttacks]:
    """Every route, with what B tries on it. Statuses: what B may be answered; a 2xx is
    allowed only where the route legitimately answers B about B (a leak check still runs)."""
    return {
        ("POST", "/api/auth/register"): [
            ("register A's e-mail again (other case)", lambda t, _: t.b.post(
                "/api/auth/register", token=None, json={
                    "email": t.a.user["email"].upper(),  # type: ignore[attr-defined]
                    "password": "another horse", "name": "Mallory"}), {409}),
        ],
        ("POST", "/api/auth/login"): [
            ("log in as A with a wrong password", lambda t, _: t.b.post(
                "/api/auth/login", token=None, json={
                    "email": t.a.user["email"],  # type: ignore[attr-defined]
                    "password": "correct horse!"}), {401}),
            ("log in as A with an operator password", lambda t, _: t.b.post(
                "/api/auth/login", token=None, json={
                    "email": t.a.user["email"],  # type: ignore[attr-defined]
                    "password": {"$ne": ""}}), {400}),
        ],
        ("GET", "/api/auth/me"): [
            ("read me with B's token", lambda t, token: t.b.get("/api/auth/me", token=token),
             {200}),
        ],
        ("POST", "/api/auth/logout"): [
            # B's spare login (B's main token must live on for the rest of the matrix).
            ("B logs out its own other session", lambda t, token: t.b.post(
                "/api/auth/logout", token=t.b_spare if token == t.b.token else token), {204}),
        ],
        ("GET", "/api/tasks"): [
            ("list", lambda t, token: t.b.get("/api/tasks", token=token), {200}),
            ("search A's words", lambda t, token: t.b.get(
                "/api/tasks", token=token, params={"q": t.marker}), {200}),
            ("filter by A's status and due dates", lambda t, token: t.b.get(
                "/api/tasks", token=token, params={"status": "todo",
                                                   "due_after": "2000-01-01"}), {200}),
            ("page with a cursor forged from A's task", lambda t, token: t.b.get(
                "/api/tasks", token=token, params={"cursor": base64.urlsafe_b64encode(
                    orjson.dumps(["created", "0", _a_task(t)["id"]])).decode().rstrip("=")}),
             {200, 400}),
            ("owner filter in the query", lambda t, token: t.b.get(
                "/api/tasks", token=token, params={"owner": t.a_id}), {400}),
        ],
        ("POST", "/api/tasks"): [
            ("create with A's task id", lambda t, token: t.b.post(
                "/api/tasks", token=token, json={"id": _a_task(t)["id"], "title": "mine"}),
             {409}),
            ("create with A's deleted task id", lambda t, token: t.b.post(
                "/api/tasks", token=token, json={"id": _a_task(t, 2)["id"], "title": "x"}),
             {409}),
            ("create into A's scope", lambda t, token: t.b.post(
                "/api/tasks", token=token, json={"title": "x", "scope": t.a_scope,
                                                 "owner": t.a_id}), {400}),
        ],
        ("GET", "/api/tasks/stats"): [
            ("stats", lambda t, token: t.b.get("/api/tasks/stats", token=token), {200}),
        ],
        ("GET", "/api/tasks/{task_id}"): [
            ("read A's task", lambda t, token: t.b.get(
                f"/api/tasks/{_a_task(t)['id']}", token=token), {404}),
            ("read A's deleted task", lambda t, token: t.b.get(
                f"/api/tasks/{_a_task(t, 2)['id']}", token=token), {404}),
        ],
        ("PATCH", "/api/tasks/{task_id}"): [
            ("update A's task", lambda t, token: t.b.patch(
                f"/api/tasks/{_a_task(t)['id']}", token=token, json={"title": "pwned"}),
             {404}),
            ("update A's task with its right version", lambda t, token: t.b.patch(
                f"/api/tasks/{_a_task(t)['id']}", token=token, json={"title": "pwned"},
                headers={"If-Match": f'"{_a_task(t)["version"]}"'}), {404}),
            ("update A's task with a wrong version (conflict oracle)", lambda t, token:
             t.b.patch(f"/api/tasks/{_a_task(t)['id']}", token=token,
                       json={"status": "done"}, headers={"If-Match": '"99"'}), {404}),
        ],
        ("DELETE", "/api/tasks/{task_id}"): [
            ("delete A's task", lambda t, token: t.b.delete(
                f"/api/tasks/{_a_task(t, 1)['id']}", token=token), {404}),
            ("delete A's task with a wrong version (conflict oracle)", lambda t, token:
             t.b.delete(f"/api/tasks/{_a_task(t, 1)['id']}", token=token,
                        headers={"If-Match": '"99"'}), {404}),
        ],
        ("GET", "/api/sync"): [
            ("sync A's scope", lambda t, token: t.b.get(
                "/api/sync", token=token, params={"scope": t.a_scope, "since": "0"}), {403}),
            ("sync A's scope from a later seq", lambda t, token: t.b.get(
                "/api/sync", token=token, params={"scope": t.a_scope, "since": "2",
                                                  "limit": "1"}), {403}),
            ("sync a board named after A", lambda t, token: t.b.get(
                "/api/sync", token=token, params={"scope": f"board:{t.a_id}"}), {403}),
            ("sync A's scope, upper case", lambda t, token: t.b.get(
                "/api/sync", token=token, params={"scope": t.a_scope.upper()}), {400}),
        ],
        ("GET", "/api/health"): [
            ("read health", lambda t, token: t.b.get("/api/health", token=token), {200}),
        ],
        ("GET", "/api/ready"): [
            ("read readiness", lambda t, token: t.b.get("/api/ready", token=token), {200}),
        ],
        ("GET", "/api/openapi.json"): [
            ("read the document", lambda t, token: t.b.get("/api/openapi.json", token=token),
             {200}),
        ],
        ("GET", "/metrics"): [  # counts by route template and reason, never ids or text
            ("read the metrics", lambda t, token: t.b.get("/metrics", token=token), {200}),
        ],
    }


def served_routes(api: Api) -> set[tuple[str, str]]:
    routes = set()
    for route in api.app.router.routes():
        path = route.resource.canonical if route.resource is not None else "?"
        if route.method in ("HEAD", "OPTIONS") or path.startswith(SOCKET_PATH):
            continue
        if (route.resource.name or "").startswith("dashboard-"):
            continue  # the page's static files: the same bytes for everyone, no user data
        routes.add((route.method, path))
    return routes


def documented_routes(checker: OpenAPIChecker) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in checker.document["paths"].items()
            for method in item if method != "parameters"}


def requires_token(checker: OpenAPIChecker, method: str, path: str) -> bool:
    return bool(checker.document["paths"][path][method.lower()].get("security"))


async def run_rest_matrix(t: Tenants, checker: OpenAPIChecker) -> None:
    matrix = rest_matrix()
    forged = forged_tokens(t)
    for (method, path), attacks in matrix.items():
        surface = f"{method} {path}"
        for attack, request, allowed in attacks:
            reply = await request(t, t.b.token)
            t.record(surface, attack, outcome_of(reply), reply.body)
            assert reply.status in allowed, (surface, attack, reply.status, reply.body)
        if requires_token(checker, method, path):
            # Every forged identity on every route that needs one: refused before anything.
            request = attacks[0][1]
            for name, token in forged.items():
                reply = await request(t, token)
                t.record(surface, name, outcome_of(reply), reply.body)
                assert reply.status == 401, (surface, name, reply.body)


# -- sockets -------------------------------------------------------------------------

SocketAttack = tuple[str, str, Callable[[Tenants], Any], set[str]]


def socket_matrix() -> list[SocketAttack]:
    """(event, attack, payload, error codes B may get). Every event also runs with each
    forged token, on connect, in run_connect_attacks."""
    return [
        ("task:create", "create with A's task id",
         lambda t: {"id": _a_task(t)["id"], "title": "mine"}, {"conflict"}),
        ("task:create", "create into A's scope",
         lambda t: {"title": "x", "scope": t.a_scope}, {"invalid"}),
        ("task:create", "create as A",
         lambda t: {"title": "x", "owner": t.a_id}, {"invalid"}),
        ("task:update", "update A's task",
         lambda t: {"id": _a_task(t)["id"], "changes": {"title": "pwned"}}, {"not_found"}),
        ("task:update", "update A's task, right version",
         lambda t: {"id": _a_task(t)["id"], "changes": {"title": "pwned"},
                    "expected_version": _a_task(t)["version"]}, {"not_found"}),
        ("task:update", "update A's task, wrong version (conflict oracle)",
         lambda t: {"id": _a_task(t)["id"], "changes": {"status": "done"},
                    "expected_version": 99}, {"not_found"}),
        ("task:update", "move A's task to B's scope",
         lambda t: {"id": _a_task(t)["id"], "changes": {"scope": t.b_scope}}, {"invalid"}),
        ("task:delete", "delete A's task",
         lambda t: {"id": _a_task(t, 1)["id"]}, {"not_found"}),
        ("task:delete", "delete A's task, wrong version (conflict oracle)",
         lambda t: {"id": _a_task(t, 1)["id"], "expected_version": 99}, {"not_found"}),
        ("sync", "sync A's scope", lambda t: {"scope": t.a_scope, "since": 0},
         {"forbidden"}),
        ("sync", "sync A's scope, one page",
         lambda t: {"scope": t.a_scope, "since": 1, "limit": 1}, {"forbidden"}),
        ("sync", "sync a board named after A",
         lambda t: {"scope": f"board:{t.a_id}", "since": 0}, {"forbidden"}),
        ("unreadable:payload", "the unreadable-JSON event, naming A's scope",
         lambda t: {"scope": t.a_scope}, {"invalid"}),
        ("*", "join A's room", lambda t: {"room": t.a_scope}, {"invalid"}),
        ("*", "subscribe to A's scope", lambda t: {"scope": t.a_scope}, {"invalid"}),
    ]


ALIASES = {"*": ("join", "subscribe", "enter_room")}


async def run_socket_matrix(t: Tenants) -> None:
    tab = await Tab(t.url, t.b.token or "").connect()
    t.b_tabs.append(("B's own socket", tab))
    for event, attack, payload, codes in socket_matrix():
        for name in ALIASES.get(event, (event,)):
            ack = await tab.call(name, payload(t))
            outcome = "ok" if ack.get("ok") else f"refused: {ack['error']['code']}"
            t.record(f"socket {name}", attack, outcome, ack)
            assert not ack["ok"] and ack["error"]["code"] in codes, (name, attack, ack)


async def run_connect_attacks(t: Tenants) -> None:
    """Connect as B naming A's scope in cursors, or as A with forged tokens; then use
    whatever got through (nothing should) on every event."""
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("cursor for A's scope", {"token": t.b.token, "cursors": {t.a_scope: 0}}),
        ("cursors for B's and A's scopes",
         {"token": t.b.token, "cursors": {t.b_scope: 0, t.a_scope: 0}}),
        ("cursor for a board named after A",
         {"token": t.b.token, "cursors": {f"board:{t.a_id}": 0}}),
        ("cursor with A's scope in upper case",
         {"token": t.b.token, "cursors": {t.a_scope.upper(): 0}}),
        *[(name, {"token": token, "cursors": {t.a_scope: 0}})
          for name, token in forged_tokens(t).items()],
        *[(name + ", no cursors", {"token": token}) for name, token in forged_tokens(t).items()],
    ]
    for attack, auth in attempts:
        tab = Tab(t.url, "unused")
        t.b_tabs.append((f"connect: {attack}", tab))
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await tab.client.connect(t.url, auth=auth, transports=["websocket"], wait_timeout=5)
        refusal = tab.connect_error
        outcome = (f"refused: {refusal['data']['code']}" if refusal is not None
                   else "connected")
        t.record("socket connect", attack, outcome, refusal)
        assert refusal is not None and refusal["data"]["code"] in {
            "forbidden", "invalid", "unauthorized"}, (attack, refusal)
        assert not tab.client.connected


async def snapshot_of_a(t: Tenants) -> Any:
    listing = await t.a.get("/api/tasks", params={"limit": "200"})
    synced = await t.a.get("/api/sync", params={"scope": t.a_scope, "since": "0"})
    stats = await t.a.get("/api/tasks/stats")
    me = await t.a.get("/api/auth/me")
    assert {r.status for r in (listing, synced, stats, me)} == {200}
    return listing.body, synced.body, stats.body, me.body


@pytest.fixture
async def tenants(api: Api) -> AsyncIterator[Tenants]:
    a, b = await api.as_new_user(), await api.as_new_user()
    marker = f"ALPHA-{uuid.uuid4().hex}"
    tasks = []
    for i in range(3):
        reply = await a.post("/api/tasks", json={
            "title": f"{marker} title {i}", "description": f"{marker} secret {i}",
            "due_date": "2030-01-01"})
        assert reply.status == 201
        tasks.append(reply.body["task"])
    gone = await a.delete(f"/api/tasks/{tasks[2]['id']}")
    assert gone.status == 200
    own = await b.post("/api/tasks", json={"title": "B's own task"})
    assert own.status == 201
    spare = await api.post("/api/auth/login", token=None, json={
        "email": b.user["email"], "password": "correct horse"})  # type: ignore[attr-defined]
    assert spare.status == 200
    a_tab = await Tab(str(api.client.make_url("/")), a.token or "").connect()
    t = Tenants(api, a, b, tasks, a_tab, spare.body["token"], marker=marker)
    try:
        yield t
    finally:
        for tab in [a_tab, *(tab for _, tab in t.b_tabs)]:
            await tab.close()


async def test_the_matrix_covers_every_route_and_every_event(
        api: Api, openapi_checker: OpenAPIChecker) -> None:
    served, documented = served_routes(api), documented_routes(openapi_checker)
    api_routes = {(method, path) for method, path in served if path.startswith("/api/")}
    # Every API route is in the document (so schemathesis fuzzes it too), and back; the
    # document's few routes outside /api/ (/metrics) are served too.
    outside = {route for route in documented if not route[1].startswith("/api/")}
    assert outside <= served, f"documented but not served: {outside - served}"
    assert api_routes == documented - outside, (
        f"served but not documented: {api_routes - documented}; "
        f"documented but not served: {documented - outside - api_routes}")
    missing = served - set(rest_matrix())
    assert not missing, f"routes without a cross-tenant attack: {missing}"
    handled = set(api.app[keys.SOCKETS].sio.handlers["/"]) - NOT_ATTACKABLE
    attacked = {event for event, *_ in socket_matrix()}
    assert handled <= attacked, f"socket events without an attack: {handled - attacked}"


async def test_user_b_never_reads_or_changes_user_a(tenants: Tenants, tmp_path: Path,
                                                     openapi_checker: OpenAPIChecker) -> None:
    t = tenants
    # The leak detector finds what it must (else "no leak" below would prove nothing).
    assert t.leaks_in(t.a_tasks[0]) and t.leaks_in([{"x": t.a.user["email"]}])  # type: ignore[attr-defined]
    assert not t.leaks_in({"task": {"scope": t.b_scope, "title": "B's own task"}})
    before = await snapshot_of_a(t)

    await run_connect_attacks(t)
    await run_socket_matrix(t)
    await run_rest_matrix(t, openapi_checker)

    # A writes after every attack: no socket of B's may hear it, while A's own socket does.
    canary = await t.a.post("/api/tasks", json={"title": f"{t.marker} canary"})
    assert canary.status == 201
    await t.a_tab.wait_event("task:created",
                             where=lambda e: e["task"]["id"] == canary.body["task"]["id"])
    # B's live socket hears B's own next write (so the relay has passed A's canary by then).
    control = await t.b.post("/api/tasks", json={"title": "B's control"})
    b_live = [tab for _, tab in t.b_tabs if tab.client.connected]
    assert b_live, "B's socket was lost during the matrix"
    for tab in b_live:
        await tab.wait_event("task:created",
                             where=lambda e: e["task"]["id"] == control.body["task"]["id"])
    for label, tab in t.b_tabs:
        names = sorted({event for event, _ in tab.events})
        t.record("socket events", f"all B received ({label})",
                 f"{len(tab.events)}: {', '.join(names)}", tab.events)

    report = t.render()
    print("\ncross-tenant matrix:\n" + report)
    (tmp_path / "tenant-matrix.txt").write_text(report + "\n")
    leaks = [r for r in t.rows if r.leaks]
    assert not leaks, "leaks:\n" + "\n".join(f"{r.surface} / {r.attack}: {r.leaks}"
                                            for r in leaks)
    after = await snapshot_of_a(t)
    # A's data is as it was, except for A's own canary.
    listing, synced, stats, me = after
    canary_id = canary.body["task"]["id"]
    assert [x for x in listing["tasks"] if x["id"] != canary_id] == before[0]["tasks"]
    assert [c for c in synced["changes"] if c["id"] != canary_id] == before[1]["changes"]
    assert stats["total"] == before[2]["total"] + 1
    assert me == before[3]
    # A's socket saw A's canary and nothing else: B changed nothing of A's.
    assert [e["task"]["id"] for e in t.a_tab.task_events()] == [canary_id]
    assert (await t.a.get("/api/auth/me")).status == 200  # A's token survived B's logouts
