"""Live sync over Socket.IO (DESIGN.md sections 3, 4 and 5), with python-socketio clients."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from realtime import keys

from conftest import TEST_SECRET, Api, make_config
from socket_clients import Tab
from waiting import eventually

OpenTab = Callable[..., Any]


@pytest.fixture
async def tabs() -> AsyncIterator[OpenTab]:
    opened: list[Tab] = []

    async def open_tab(url: str, token: str, *, connect: bool = True, **kw: Any) -> Tab:
        tab = Tab(url, token, **kw)
        opened.append(tab)
        return await tab.connect() if connect else tab

    yield open_tab
    for tab in opened:
        await tab.close()


def url_of(api: Api) -> str:
    return str(api.client.make_url("/"))


def scope_of(user_api: Api) -> str:
    return f"user:{user_api.user['id']}"  # type: ignore[attr-defined]


async def create(api: Api, title: str, **extra: Any) -> dict[str, Any]:
    reply = await api.post("/api/tasks", json={"title": title, **extra})
    assert reply.status in (200, 201), reply.body
    return reply.body["task"]  # type: ignore[no-any-return]


async def server_state(api: Api, scope: str) -> dict[str, Any]:
    reply = await api.get("/api/sync", params={"scope": scope, "since": 0})
    assert not reply.body["more"]
    return {c["id"]: c for c in reply.body["changes"]}


def token_for(api: Api, user_id: str, **claims: Any) -> str:
    config = api.app[keys.CONFIG]
    now = int(time.time())
    body = {"sub": user_id, "iat": now, "exp": now + 3600, "jti": f"j{random.random()}",
            "iss": config.jwt_issuer, "aud": config.jwt_audience, **claims}
    return jwt.encode(body, TEST_SECRET, algorithm="HS256")


# -- connect -------------------------------------------------------------------------


@pytest.mark.parametrize(("auth", "message"), [
    (None, "missing token"),
    ({}, "missing token"),
    ({"token": ""}, "missing token"),
    ({"token": "not.a.jwt"}, "invalid token"),
    ({"token": 42}, "missing token"),
])
async def test_connect_without_a_good_token_is_refused_with_the_reason(
        user_api: Api, tabs: OpenTab, auth: Any, message: str) -> None:
    tab = await tabs(url_of(user_api), "unused", connect=False)
    with pytest.raises(Exception, match="failed to connect"):
        await tab.client.connect(url_of(user_api), auth=auth, transports=["websocket"],
                                 wait_timeout=5)
    assert message in tab.connect_error["message"]
    assert tab.connect_error["data"]["code"] == "unauthorized"


async def test_expired_and_revoked_tokens_are_refused_saying_which(user_api: Api,
                                                                    tabs: OpenTab) -> None:
    url = url_of(user_api)
    expired = token_for(user_api, user_api.user["id"], exp=int(time.time()) - 5)
    tab = await tabs(url, expired, connect=False)
    with pytest.raises(Exception, match="failed to connect"):
        await tab.connect()
    assert tab.connect_error["message"] == "token expired"

    assert (await user_api.post("/api/auth/logout")).status == 204
    tab = await tabs(url, user_api.token, connect=False)
    with pytest.raises(Exception, match="failed to connect"):
        await tab.connect()
    assert tab.connect_error["message"] == "token revoked"


async def test_cursors_for_a_scope_the_user_cannot_read_are_refused(api: Api,
                                                                    tabs: OpenTab) -> None:
    alice, bob = await api.as_new_user(), await api.as_new_user()
    tab = await tabs(url_of(api), bob.token, connect=False,
                     cursors={scope_of(alice): 0})
    with pytest.raises(Exception, match="failed to connect"):
        await tab.connect()
    assert tab.connect_error["data"]["code"] == "forbidden"
    for bad in ({"user:x": -1}, {"nonsense": 0}, {scope_of(bob): "3"}, ["user:x"]):
        tab = await tabs(url_of(api), bob.token, connect=False, cursors=bad)
        with pytest.raises(Exception, match="failed to connect"):
            await tab.connect()
        assert tab.connect_error["data"]["code"] in {"invalid", "forbidden"}


# -- live events ---------------------------------------------------------------------


async def test_tabs_of_one_user_see_every_change_live_with_the_envelope(
        user_api: Api, tabs: OpenTab) -> None:
    url, scope = url_of(user_api), scope_of(user_api)
    one, two = await tabs(url, user_api.token), await tabs(url, user_api.token)

    ack = await one.call("task:create", {"title": "from a socket", "mutation_id": "m-1"})
    assert ack["ok"] and ack["created"] and ack["task"]["seq"] == 1
    task_id = ack["task"]["id"]
    rest = await user_api.patch(f"/api/tasks/{task_id}", json={"status": "done"},
                                headers={"X-Mutation-Id": "m-2"})
    assert rest.status == 200
    ack = await two.call("task:delete", {"id": task_id, "mutation_id": "m-3"})
    assert ack["ok"] and ack["task"]["deleted"]

    for tab in (one, two):
        await tab.wait_for(lambda events: len([e for e, _ in events
                                               if e.startswith("task:")]) == 3)
        created, updated, deleted = tab.task_events()
        assert [created["type"], updated["type"], deleted["type"]] == [
            "task:created", "task:updated", "task:deleted"]
        assert [e["seq"] for e in (created, updated, deleted)] == [1, 2, 3]
        assert [e["origin"] for e in (created, updated, deleted)] == ["m-1", "m-2", "m-3"]
        assert all(e["scope"] == scope for e in (created, updated, deleted))
        assert created["task"]["title"] == "from a socket"
        assert updated["task"]["status"] == "done" and updated["task"]["version"] == 2
        assert deleted["task"] == {"id": task_id, "scope": scope, "seq": 3, "version": 3,
                                   "deleted": True}
        assert all(isinstance(e["ts"], str) and e["ts"].endswith("Z")
                   for e in (created, updated, deleted))
        assert tab.replica.violations == []


async def test_a_socket_never_sees_or_touches_another_users_scope(api: Api,
                                                                   tabs: OpenTab) -> None:
    alice, bob = await api.as_new_user(), await api.as_new_user()
    url = url_of(api)
    alice_tab, bob_tab = await tabs(url, alice.token), await tabs(url, bob.token)
    secret = await create(alice, "alice's secret")

    attempts = {
        "sync": await bob_tab.call("sync", {"scope": scope_of(alice), "since": 0}),
        "update": await bob_tab.call("task:update", {"id": secret["id"],
                                                     "changes": {"title": "pwned"}}),
        "delete": await bob_tab.call("task:delete", {"id": secret["id"]}),
        "create-with-her-id": await bob_tab.call("task:create", {"id": secret["id"],
                                                                 "title": "mine now"}),
        "forged-scope-field": await bob_tab.call("task:create", {"title": "x",
                                                                 "scope": scope_of(alice)}),
    }
    assert attempts["sync"]["error"]["code"] == "forbidden"
    assert attempts["update"]["error"]["code"] == "not_found"
    assert attempts["delete"]["error"]["code"] == "not_found"
    assert attempts["create-with-her-id"]["error"]["code"] == "conflict"
    assert attempts["forged-scope-field"]["error"]["code"] == "invalid"
    assert all(not reply["ok"] for reply in attempts.values())

    await create(bob, "bob's own")  # bob's socket does get his own events ...
    await bob_tab.wait_event("task:created")
    await alice_tab.wait_event("task:created")
    # ... and alice's task is untouched, and never reached bob's socket.
    assert (await alice.get(f"/api/tasks/{secret['id']}")).body["task"]["title"] == \
        "alice's secret"
    assert [e["task"]["title"] for e in bob_tab.task_events()] == ["bob's own"]
    assert [e["task"]["title"] for e in alice_tab.task_events()] == ["alice's secret"]


# -- acks and bad packets --------------------------------------------------------------


async def test_every_event_answers_with_an_ack(user_api: Api, tabs: OpenTab) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    scope = scope_of(user_api)
    created = await tab.call("task:create", {"title": "t", "priority": "high",
                                             "due_date": "2026-12-01"})
    assert created["ok"] and created["task"]["due_date"] == "2026-12-01T00:00:00.000Z"
    task_id = created["task"]["id"]
    updated = await tab.call("task:update", {"id": task_id, "changes": {"title": "u"},
                                             "expected_version": 1})
    assert updated == {"ok": True, "task": {**updated["task"], "title": "u", "version": 2}}
    synced = await tab.call("sync", {"scope": scope, "since": 1})
    assert synced["ok"] and synced["seq"] == 2 and not synced["more"]
    assert [c["title"] for c in synced["changes"]] == ["u"]
    await tab.call("task:create", {"title": "second"})
    paged = await tab.call("sync", {"scope": scope, "since": 0, "limit": 1})
    assert paged["more"] and [c["title"] for c in paged["changes"]] == ["u"]
    assert paged["seq"] == 2


@pytest.mark.parametrize(("event", "args", "code"), [
    ("task:create", ({"title": ""},), "invalid"),
    ("task:create", ({"title": {"$gt": ""}},), "invalid"),
    ("task:create", ({"title": "x", "status": "someday"},), "invalid"),
    ("task:create", ("just a string",), "invalid"),
    ("task:create", ([1, 2],), "invalid"),
    ("task:create", ({"title": "x"}, "extra arg"), "invalid"),
    ("task:create", ({"title": "x", "mutation_id": {"a": 1}},), "invalid"),
    ("task:update", ({"id": "nope", "changes": {"title": "x"}},), "not_found"),
    ("task:update", ({"id": "../etc", "changes": {"title": "x"}},), "invalid"),
    ("task:update", ({"id": "abc", "changes": "title=x"},), "invalid"),
    ("task:update", ({"id": "abc", "changes": {}},), "invalid"),
    ("task:update", ({"id": "abc", "changes": {"title": "x"}, "expected_version": "1"},),
     "invalid"),
    ("task:update", ({"id": "abc", "changes": {"owner": "me"}},), "invalid"),
    ("task:delete", ({"id": None},), "invalid"),
    ("task:delete", ({"id": "abc", "extra": 1},), "invalid"),
    ("sync", ({"scope": "user:someone-else", "since": 0},), "forbidden"),
    ("sync", ({"scope": "../x", "since": 0},), "invalid"),
    ("sync", ({"scope": "user:x", "since": -1},), "invalid"),
    ("sync", ({"scope": "user:x", "since": 0, "limit": 0},), "invalid"),
    ("sync", ({"scope": "user:x", "since": 0, "limit": 10**9},), "invalid"),
    ("no-such-event", ({"x": 1},), "invalid"),
])
async def test_bad_payloads_get_a_clear_error_and_the_socket_stays_usable(
        user_api: Api, tabs: OpenTab, event: str, args: tuple[Any, ...], code: str) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    ack = await tab.client.call(event, args if len(args) > 1 else args[0], timeout=5)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert ack["error"]["message"]
    assert (await tab.call("task:create", {"title": "still fine"}))["ok"]


async def test_events_without_ack_or_payload_do_not_harm_the_socket(user_api: Api,
                                                                     tabs: OpenTab) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    await tab.client.emit("task:create", {"title": "fire and forget"})
    await tab.client.emit("task:create")
    await tab.client.emit("unknown")
    ack = await tab.client.call("sync", timeout=5)
    assert ack["error"]["code"] == "invalid"
    await tab.wait_event("task:created")
    assert (await tab.call("task:create", {"title": "after"}))["task"]["seq"] == 2
    assert (await user_api.get("/api/ready")).status == 200


# -- idempotency and per-socket order ----------------------------------------------------


async def test_retried_socket_writes_apply_once(user_api: Api, tabs: OpenTab) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    first = await tab.call("task:create", {"id": "client-chosen-1", "title": "once"})
    again = await tab.call("task:create", {"id": "client-chosen-1", "title": "once"})
    assert first["created"] and not again["created"] and again["task"] == first["task"]
    change = {"id": "client-chosen-1", "changes": {"status": "done"}, "expected_version": 1}
    assert (await tab.call("task:update", change))["ok"]
    retried = await tab.call("task:update", change)
    assert retried["error"]["code"] == "conflict"
    assert retried["error"]["details"]["current"]["version"] == 2
    state = await server_state(user_api, scope_of(user_api))
    assert list(state) == ["client-chosen-1"] and state["client-chosen-1"]["version"] == 2
    await tab.wait_for(lambda events: len(tab.task_events()) == 2)
    assert [e["type"] for e in tab.task_events()] == ["task:created", "task:updated"]


async def test_a_sockets_writes_apply_in_the_order_it_sent_them(user_api: Api,
                                                                tabs: OpenTab) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    task_id = (await tab.call("task:create", {"title": "start"}))["task"]["id"]
    acks: list[Any] = []

    def collect(*ack: Any) -> None:
        acks.append(ack[0])

    for n in range(40):  # sent back to back, without waiting for acks
        await tab.client.emit("task:update", {"id": task_id, "changes": {"title": f"t{n}"}},
                              callback=collect)
    await tab.wait_for(lambda events: len(tab.task_events()) == 41, timeout=10)
    titles = [e["task"]["title"] for e in tab.task_events()[1:]]
    assert titles == [f"t{n}" for n in range(40)]
    assert [a["task"]["version"] for a in acks] == list(range(2, 42))
    assert (await user_api.get(f"/api/tasks/{task_id}")).body["task"]["title"] == "t39"


# -- catch-up ------------------------------------------------------------------------------


async def test_reconnecting_with_a_cursor_gets_exactly_what_was_missed(
        user_api: Api, tabs: OpenTab) -> None:
    url, scope = url_of(user_api), scope_of(user_api)
    tab = await tabs(url, user_api.token)
    keep = await create(user_api, "keep")
    gone = await create(user_api, "gone")
    await tab.wait_for(lambda events: len(tab.task_events()) == 2)
    cursor = tab.replica.cursors[scope]
    await tab.close()

    await user_api.patch(f"/api/tasks/{keep['id']}", json={"title": "kept and changed"})
    await user_api.delete(f"/api/tasks/{gone['id']}")
    new = await create(user_api, "new while away")

    back = await tabs(url, user_api.token, cursors={scope: cursor})
    back.replica.tasks = dict(tab.replica.tasks)
    back.replica.cursors = dict(tab.replica.cursors)
    page = await back.wait_event("sync")
    assert [c["seq"] for c in page["changes"]] == [3, 4, 5]
    assert page["seq"] == 5 and not page["reset"] and not page["more"]
    live = await create(user_api, "live after catch-up")
    await back.wait_event("task:created", where=lambda e: e["task"]["id"] == live["id"])
    names = [event for event, _ in back.events if event in ("sync", "task:created")]
    assert names == ["sync", "task:created"]  # the catch-up came before any live event
    assert back.replica.violations == []
    assert back.replica.tasks == await server_state(user_api, scope)
    assert new["id"] in back.replica.live_tasks()


async def test_without_cursors_a_socket_goes_live_from_now(user_api: Api,
                                                           tabs: OpenTab) -> None:
    await create(user_api, "old")
    tab = await tabs(url_of(user_api), user_api.token)
    await create(user_api, "new")
    event = await tab.wait_event("task:created")
    assert event["task"]["title"] == "new" and event["seq"] == 2
    assert [e for e, _ in tab.events if e == "sync"] == []


async def test_a_cursor_from_another_life_of_the_server_resets(user_api: Api,
                                                               tabs: OpenTab) -> None:
    await create(user_api, "only task")
    scope = scope_of(user_api)
    tab = await tabs(url_of(user_api), user_api.token, cursors={scope: 99})
    page = await tab.wait_event("sync")
    assert page["reset"] and [c["title"] for c in page["changes"]] == ["only task"]


async def test_catch_up_survives_a_server_restart(tmp_path: Path, aiohttp_client: Any,
                                                  openapi_checker: Any,
                                                  tabs: OpenTab) -> None:
    from realtime.app import create_app

    config = make_config(tmp_path)
    first = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await first.as_new_user()
    scope = scope_of(user)
    for n in range(3):
        await create(user, f"before restart {n}")
    await first.client.close()

    second = Api(await aiohttp_client(create_app(config)), openapi_checker, token=user.token)
    tab = await tabs(url_of(second), user.token, cursors={scope: 1})
    page = await tab.wait_event("sync")
    assert [c["title"] for c in page["changes"]] == ["before restart 1", "before restart 2"]


async def test_events_lost_by_the_broker_are_repaired_from_the_store(user_api: Api,
                                                                     tabs: OpenTab) -> None:
    """DESIGN.md 5.6: the broker may drop; seq shows the gap and the server fills it."""
    url, scope = url_of(user_api), scope_of(user_api)
    tab = await tabs(url, user_api.token)
    broker = user_api.app[keys.BROKER]
    real_publish = broker.publish
    dropped: list[int] = []

    def lossy_publish(event: dict[str, Any]) -> None:
        if event.get("seq", 0) % 3 == 0:
            dropped.append(event["seq"])
            return
        real_publish(event)

    broker.publish = lossy_publish  # type: ignore[method-assign]
    for n in range(10):
        await create(user_api, f"t{n}")
    broker.publish = real_publish  # type: ignore[method-assign]
    last = await create(user_api, "last")

    await tab.wait_for(lambda events: tab.replica.cursors.get(scope) == last["seq"])
    assert dropped == [3, 6, 9]
    assert tab.replica.violations == []
    assert tab.replica.tasks == await server_state(user_api, scope)
    assert any(event == "sync" for event, _ in tab.events)


async def test_a_write_that_timed_out_but_committed_still_reaches_the_sockets(
        user_api: Api, tabs: OpenTab) -> None:
    """A SQLite batch that is already running cannot be called back: the caller gives up
    (503), the write commits anyway. Its event was never published; the task service's
    `scope:head` notice makes the sockets read it from the store."""
    url, scope = url_of(user_api), scope_of(user_api)
    tab = await tabs(url, user_api.token)
    store = user_api.app[keys.STORE]
    store.timeout = 0.5
    writer = store._writer  # the test orders the writer's batches
    busy, gate = threading.Event(), threading.Event()

    def hold(db: Any) -> None:
        busy.set()
        gate.wait(10)

    writer.submit(hold, ())
    try:
        await eventually(busy.is_set, 5, "the writer is held")
        attempt = asyncio.ensure_future(
            user_api.post("/api/tasks", json={"title": "ambiguous"}))
        await eventually(lambda: writer._queue.qsize() >= 1, 5, "the create is queued")
        # Runs in the same batch as the create, after it: the create is running when
        # its caller's 0.5 s run out, so it cannot be cancelled, and it commits at ~1 s.
        writer.submit(lambda db: time.sleep(1.0), ())
    finally:
        gate.set()
    reply = await attempt
    assert reply.status == 503 and reply.body["error"]["code"] == "unavailable"
    await tab.wait_for(lambda _: any(
        t["title"] == "ambiguous" for t in tab.replica.tasks.values()), timeout=10)
    assert tab.replica.violations == []
    assert tab.replica.tasks == await server_state(user_api, scope)
    assert user_api.app[keys.TASKS].reconciliations >= 1


async def test_a_retried_create_tells_sockets_about_a_task_they_never_heard_of(
        user_api: Api, tabs: OpenTab) -> None:
    """The first attempt committed but its event was lost (the broker never got it):
    the retry finds the task, answers 200, and the sockets still learn of it."""
    url, scope = url_of(user_api), scope_of(user_api)
    tab = await tabs(url, user_api.token)
    broker = user_api.app[keys.BROKER]
    real_publish = broker.publish
    broker.publish = lambda event: None  # type: ignore[method-assign]
    first = await user_api.post("/api/tasks", json={"id": "retried-1", "title": "once"})
    broker.publish = real_publish  # type: ignore[method-assign]
    assert first.status == 201
    retry = await user_api.post("/api/tasks", json={"id": "retried-1", "title": "once"})
    assert retry.status == 200

    await tab.wait_for(lambda _: "retried-1" in tab.replica.tasks)
    assert tab.replica.tasks == await server_state(user_api, scope)
    assert tab.replica.violations == []


async def test_completeness_under_concurrent_writers_and_reconnects(
        user_api: Api, tabs: OpenTab) -> None:
    """20 writers hammer one scope (REST and sockets; creates, updates, deletes) while a
    client disconnects, reconnects with its cursor and syncs at random moments; in the
    end its state equals the server's exactly, and it never saw seq go backwards."""
    url, scope = url_of(user_api), scope_of(user_api)
    rng = random.Random(11)
    writer_tabs = [await tabs(url, user_api.token) for _ in range(10)]

    async def writer(n: int) -> None:
        mine: list[str] = []
        tab = writer_tabs[n // 2] if n % 2 else None
        for i in range(12):
            roll = rng.random()
            if tab is None:
                if not mine or roll < 0.5:
                    mine.append((await create(user_api, f"w{n}-{i}"))["id"])
                elif roll < 0.8:
                    await user_api.patch(f"/api/tasks/{rng.choice(mine)}",
                                         json={"title": f"w{n}-{i}-changed"})
                else:
                    await user_api.delete(f"/api/tasks/{mine.pop()}")
            elif not mine or roll < 0.5:
                ack = await tab.call("task:create", {"title": f"s{n}-{i}"})
                mine.append(ack["task"]["id"])
            elif roll < 0.8:
                ack = await tab.call("task:update", {"id": rng.choice(mine),
                                                     "changes": {"status": "done"}})
            else:
                ack = await tab.call("task:delete", {"id": mine.pop()})
            await asyncio.sleep(rng.random() / 200)

    # What the client knows across its reconnects: each connection continues the stream
    # from `cursor`; after it closes, what it learnt is merged in (newest seq per task).
    state: dict[str, Any] = {}
    cursor = 0
    violations: list[str] = []

    def learn(client: Tab) -> None:
        nonlocal cursor
        violations.extend(client.replica.violations)
        for task_id, task in client.replica.tasks.items():
            if task_id not in state or state[task_id]["seq"] < task["seq"]:
                state[task_id] = task
        cursor = max(cursor, client.replica.known_up_to(scope))

    async def connect_from_cursor() -> Tab:
        client = await tabs(url, user_api.token, cursors={scope: cursor})
        client.replica.cursors.setdefault(scope, cursor)  # the stream continues from here
        return client

    writing = asyncio.gather(*(writer(n) for n in range(20)))
    reconnects = 0
    while not writing.done():
        client = await connect_from_cursor()
        await asyncio.sleep(rng.random() / 20)
        if rng.random() < 0.5:  # and sometimes sync by hand, too
            answer = await client.call("sync", {"scope": scope, "since": cursor})
            assert answer["ok"]
            client.replica.merge_sync(answer)
        await client.close()
        learn(client)
        reconnects += 1
    await writing
    truth = await server_state(user_api, scope)
    head = max(t["seq"] for t in truth.values())
    final = await connect_from_cursor()
    await final.wait_for(lambda events: final.replica.cursors.get(scope) == head, timeout=10)
    learn(final)
    assert reconnects >= 3
    assert violations == []
    assert state == truth


# -- token lifetime on live sockets ---------------------------------------------------------


async def test_logout_disconnects_that_tokens_sockets_at_once(api: Api,
                                                              tabs: OpenTab) -> None:
    user = await api.as_new_user()
    other_login = await api.post("/api/auth/login", token=None, json={
        "email": user.user["email"], "password": "correct horse"})
    url = url_of(api)
    doomed = await tabs(url, user.token)
    survivor = await tabs(url, other_login.body["token"])
    assert (await user.post("/api/auth/logout")).status == 204
    ended = await doomed.wait_event("session:ended")
    assert ended["reason"] == "token_revoked"
    await doomed.wait_event("disconnect")
    assert not doomed.client.connected
    assert survivor.client.connected
    assert (await survivor.call("task:create", {"title": "still here"}))["ok"]


async def test_sockets_are_warned_then_dropped_when_their_token_expires(
        tmp_path: Path, aiohttp_client: Any, openapi_checker: Any, tabs: OpenTab) -> None:
    from realtime.app import create_app

    config = make_config(tmp_path, **{"auth.jwt_expire": "3s",
                                      "sockets.expiry_notice": "2s"})
    api = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await api.as_new_user()
    tab = await tabs(url_of(api), user.token)
    warning = await tab.wait_event("session:expiring", timeout=5)
    assert 0 <= warning["seconds_left"] <= 2 and warning["expires_at"].endswith("Z")
    ended = await tab.wait_event("session:ended", timeout=5)
    assert ended["reason"] == "token_expired"
    await tab.wait_event("disconnect", timeout=5)
    names = [event for event, _ in tab.events]
    assert names.index("session:expiring") < names.index("session:ended")


async def test_a_burst_of_events_is_answered_in_full_and_the_instance_stays_healthy(
        user_api: Api, tabs: OpenTab) -> None:
    tab = await tabs(url_of(user_api), user_api.token)
    acks: list[Any] = []
    done = asyncio.Event()

    def collect(*ack: Any) -> None:
        acks.append(ack[0])
        if len(acks) == 300:
            done.set()

    for n in range(300):  # back to back, a third of them malformed
        payload: Any = {"title": f"b{n}"} if n % 3 else {"title": {"$gt": ""}}
        await tab.client.emit("task:create", payload, callback=collect)
    await asyncio.wait_for(done.wait(), 20)
    assert sum(1 for a in acks if a["ok"]) == 200
    assert all(a["error"]["code"] == "invalid" for a in acks if not a["ok"])
    assert (await user_api.get("/api/ready")).status == 200
    assert (await tab.call("sync", {"scope": scope_of(user_api), "since": 0}))["seq"] == 200


async def test_sockets_repairing_the_same_gap_share_one_store_read(user_api: Api,
                                                                   tabs: OpenTab) -> None:
    url, scope = url_of(user_api), scope_of(user_api)
    room = [await tabs(url, user_api.token) for _ in range(20)]
    await create(user_api, "before")
    for tab in room:
        await tab.wait_event("task:created")
    store = user_api.app[keys.STORE]
    real_sync, reads = store.sync, []

    async def counting_sync(*args: Any) -> Any:
        reads.append(args)
        return await real_sync(*args)

    store.sync = counting_sync
    try:
        await store.create_task({  # a change the broker never carried
            "id": "silent", "owner": user_api.user["id"], "scope": scope, "title": "silent",
            "description": "", "status": "todo", "priority": "medium", "due_date": None,
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"})
        user_api.app[keys.SOCKETS].resync_all()  # what a Redis reconnection triggers
        for tab in room:
            page = await tab.wait_event("sync")
            assert [c["id"] for c in page["changes"]] == ["silent"]
    finally:
        store.sync = real_sync
    assert len(reads) == 1


async def test_connects_are_admitted_a_few_at_a_time_and_the_rest_wait_their_turn(
        tmp_path: Path, aiohttp_client: Any, openapi_checker: Any, tabs: OpenTab) -> None:
    """sockets.max_connecting paces a reconnect storm: CONNECTs past it queue (they are
    not refused), and go through in turn as the ones in progress finish."""
    from realtime.app import create_app

    config = make_config(tmp_path, **{"sockets.max_connecting": 2})
    api = Api(await aiohttp_client(create_app(config)), openapi_checker)
    user = await api.as_new_user()
    gateway = api.app[keys.SOCKETS]
    auth = api.app[keys.AUTH]
    real_authenticate = auth.authenticate
    gate = asyncio.Event()
    inside = 0

    async def slow_authenticate(token: str) -> Any:
        nonlocal inside
        inside += 1
        await gate.wait()  # the first connects hold their admission slots
        return await real_authenticate(token)

    auth.authenticate = slow_authenticate  # type: ignore[method-assign]
    opening = [asyncio.ensure_future(tabs(url_of(api), user.token)) for _ in range(5)]
    await eventually(lambda: gateway.connects_waiting == 3, 5, "three connects queued")
    assert inside == 2  # only two were let in
    gate.set()
    opened = await asyncio.gather(*opening)
    assert len(gateway.sessions) == 5 and all(tab.client.connected for tab in opened)
    assert gateway.connects_waiting == 0
