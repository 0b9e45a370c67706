"""Rate limits and socket caps (realtime/ratelimit.py, handlers/protection.py, sockets.py):
REST per address, per user and stricter on login/register; socket events per socket;
connection attempts per address; sockets per user and per instance; all shared across
instances through Redis, and falling back to per-instance counts when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime import keys
from realtime.app import create_app
from realtime.ratelimit import (
    GCRA_LUA,
    MemoryLimiter,
    RedisLimiter,
    Rule,
    client_address,
    limiter_from_url,
)

from conftest import TEST_SECRET, Api, OpenAPIChecker, make_config
from processes import Instance
from redis_server import free_port, shared_redis_url
from socket_clients import Tab
from waiting import eventually

STRICT_OFF = {"rate_limit.max_requests": 1_000_000, "rate_limit.user_max_requests": 1_000_000,
              "rate_limit.auth_max_requests": 1_000_000}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def serve(aiohttp_client: Any, checker: OpenAPIChecker, tmp_path: Path,
                **overrides: Any) -> Api:
    return Api(await aiohttp_client(create_app(make_config(tmp_path, **overrides))), checker)


def assert_limited(reply: Any) -> int:
    assert reply.status == 429, (reply.status, reply.body)
    assert reply.error["code"] == "rate_limited"
    seconds = int(reply.headers["Retry-After"])
    assert seconds >= 1
    assert reply.error["details"]["retry_after"] == seconds
    return seconds


# -- the algorithm ------------------------------------------------------------------------


async def test_gcra_allows_the_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rule = Rule("t", 5, 10_000)  # 5 per 10 s: one more every 2 s
    for _ in range(5):
        assert await limiter.hit([(rule, "a")]) == 0
    wait = await limiter.hit([(rule, "a")])
    assert wait == pytest.approx(2.0)
    assert await limiter.hit([(rule, "b")]) == 0  # another key has its own budget
    clock.now += 1.0
    assert await limiter.hit([(rule, "a")]) == pytest.approx(1.0)  # a refusal spends nothing
    clock.now += 1.0
    assert await limiter.hit([(rule, "a")]) == 0
    assert await limiter.hit([(rule, "a")]) > 0
    clock.now += 10.0  # a whole window later the whole burst is back, never more
    for _ in range(5):
        assert await limiter.hit([(rule, "a")]) == 0
    assert await limiter.hit([(rule, "a")]) > 0


@pytest.mark.parametrize("limit", [1, 3, 7])
@pytest.mark.parametrize("window_ms", [60_000, 900_000])
@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_a_budget_of_n_allows_exactly_n(limit: int, window_ms: int, where: str) -> None:
    """Whatever the float rounding of window / limit on a real clock."""
    limiter = MemoryLimiter() if where == "memory" else RedisLimiter(shared_redis_url())
    await limiter.start()
    try:
        rule = Rule("t", limit, window_ms)
        results = [await limiter.hit([(rule, "a")]) for _ in range(limit + 1)]
        assert results[:limit] == [0] * limit
        assert results[limit] > 0
    finally:
        await limiter.stop()


async def test_several_budgets_are_spent_together_or_not_at_all() -> None:
    limiter = MemoryLimiter(FakeClock())
    wide, narrow = Rule("wide", 100, 1000), Rule("narrow", 1, 1000)
    assert await limiter.hit([(wide, "a"), (narrow, "a")]) == 0
    for _ in range(3):
        assert await limiter.hit([(wide, "a"), (narrow, "a")]) > 0
    # The refused requests did not spend from the wide budget: 99 remain.
    for _ in range(99):
        assert await limiter.hit([(wide, "a")]) == 0
    assert await limiter.hit([(wide, "a")]) > 0


async def test_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock, max_keys=100)
    rule = Rule("t", 1, 1000)
    for n in range(1000):
        await limiter.hit([(rule, str(n))])
    assert len(limiter) <= 100
    clock.now += 2
    limiter.sweep()
    assert len(limiter) == 0


async def test_the_redis_script_is_the_same_algorithm() -> None:
    url = shared_redis_url()
    limiter = limiter_from_url(url)
    assert isinstance(limiter, RedisLimiter)
    await limiter.start()
    try:
        rule = Rule("t", 3, 60_000)
        assert [await limiter.hit([(rule, "a")]) for _ in range(3)] == [0, 0, 0]
        wait = await limiter.hit([(rule, "a")])
        assert 15 < wait <= 20  # one more every 20 s
        assert await limiter.hit([(rule, "b")]) == 0
        assert limiter.fallbacks == 0
        ttl = await limiter._client.pttl(limiter.key(rule, "a"))
        assert 0 < ttl <= 60_000  # keys expire once the budget is whole again
    finally:
        await limiter.stop()
    assert "TIME" in GCRA_LUA  # Redis's clock: instances with skewed clocks agree


async def test_redis_checks_arriving_together_share_round_trips() -> None:
    """A burst costs few round trips on one connection, and a budget far above the load
    (the test and bench settings: an interval that vanishes beside a 13-digit clock)
    works in Redis instead of erroring into the fallback."""
    limiter = RedisLimiter(shared_redis_url())
    await limiter.start()
    try:
        huge = Rule("t", 10**9, 900_000)
        results = await asyncio.gather(*(limiter.hit([(huge, f"a{n % 7}")])
                                         for n in range(300)))
        assert results == [0] * 300
        assert limiter.fallbacks == 0
        assert limiter.round_trips <= 30, limiter.round_trips
    finally:
        await limiter.stop()


@pytest.mark.parametrize("limit", [1, 3, 7, 100])
async def test_a_leased_budget_of_n_allows_exactly_n(limit: int) -> None:
    """Leases are never looser than checking every request, and requests one after the
    other (the lease growing each time) lose nothing at the end of the budget."""
    limiter = RedisLimiter(shared_redis_url())
    await limiter.start()
    try:
        rule = Rule("c", limit, 3_600_000, leased=True)  # nothing refills during the test
        results = [await limiter.hit([(rule, "a")]) for _ in range(limit + 2)]
        assert results[:limit] == [0] * limit
        assert all(wait > 0 for wait in results[limit:]), results[limit:]
        assert limiter.fallbacks == 0
        if limit == 100:  # the leases grew: fewer round trips than requests
            assert limiter.round_trips < 60, limiter.round_trips
    finally:
        await limiter.stop()


async def test_leases_of_two_instances_never_exceed_the_budget() -> None:
    url = shared_redis_url()
    limiters = [RedisLimiter(url), RedisLimiter(url)]
    for limiter in limiters:
        await limiter.start()
    try:
        rule = Rule("c", 640, 3_600_000, leased=True)  # leases of up to 20 units
        allowed = 0
        for _ in range(25):  # waves of concurrent requests on both instances
            results = await asyncio.gather(*(limiter.hit([(rule, "a")])
                                             for limiter in limiters for _ in range(20)))
            allowed += results.count(0)
        # 1,000 requests: never more than the budget; at most two leases' leftovers lost
        assert 640 - 2 * rule.lease_cap <= allowed <= 640, allowed
        trips = sum(limiter.round_trips for limiter in limiters)
        assert trips < 200, trips  # 1,000 requests, about one round trip per wave
    finally:
        for limiter in limiters:
            await limiter.stop()


async def test_a_lone_leased_request_spends_one_unit() -> None:
    url = shared_redis_url()
    leasing, exact = RedisLimiter(url), RedisLimiter(url)
    await leasing.start()
    await exact.start()
    try:
        leased = Rule("c", 640, 3_600_000, leased=True)
        assert await leasing.hit([(leased, "a")]) == 0
        checked = Rule("c", 640, 3_600_000)  # the same bucket, one request at a time
        results = [await exact.hit([(checked, "a")]) for _ in range(640)]
        assert results[:639] == [0] * 639 and results[639] > 0
    finally:
        await leasing.stop()
        await exact.stop()


async def test_an_expired_lease_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.ratelimit as ratelimit

    monkeypatch.setattr(ratelimit, "LEASE_SECONDS", 0.0)
    limiter = RedisLimiter(shared_redis_url())
    await limiter.start()
    try:
        rule = Rule("c", 640, 60_000, leased=True)
        for _ in range(10):
            assert await limiter.hit([(rule, "a")]) == 0
        assert limiter.round_trips == 10  # each lease was dropped unused: asked again
    finally:
        await limiter.stop()


@pytest.mark.parametrize("leased", [False, True])
async def test_an_unreachable_redis_falls_back_to_local_counts(
        caplog: pytest.LogCaptureFixture, leased: bool) -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
    await limiter.start()
    try:
        rule = Rule("t", 2, 60_000, leased)
        with caplog.at_level(logging.WARNING, logger="realtime.ratelimit"):
            results = [await limiter.hit([(rule, "a")]) for _ in range(3)]
        assert results[:2] == [0, 0] and results[2] > 0  # still limited, per instance
        assert limiter.fallbacks >= 1
        lines = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(lines) == 1  # one line, not one per request
    finally:
        await limiter.stop()


# -- client addresses -----------------------------------------------------------------------


class FakeRequest:
    def __init__(self, remote: str, forwarded: list[str] | None = None) -> None:
        self.remote = remote
        from multidict import CIMultiDict

        self.headers = CIMultiDict([("X-Forwarded-For", v) for v in forwarded or []])


def test_x_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    import ipaddress

    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    spoofed = FakeRequest("203.0.113.9", ["1.2.3.4"])
    assert client_address(spoofed, ()) == "203.0.113.9"  # type: ignore[arg-type]
    assert client_address(spoofed, proxies) == "203.0.113.9"  # type: ignore[arg-type]
    via_proxy = FakeRequest("10.0.0.2", ["1.2.3.4, 198.51.100.7, 10.0.0.3"])
    # The right-most hop that is not a proxy: what the client put first is not believed.
    assert client_address(via_proxy, proxies) == "198.51.100.7"  # type: ignore[arg-type]
    garbage = FakeRequest("10.0.0.2", ["198.51.100.7, not-an-ip"])
    assert client_address(garbage, proxies) == "10.0.0.2"  # type: ignore[arg-type]
    v6 = FakeRequest("2001:db8:1:2:3:4:5:6")
    assert client_address(v6, ()) == "2001:db8:1:2::/64"  # type: ignore[arg-type]


# -- REST -------------------------------------------------------------------------------


async def test_rest_requests_are_limited_per_address(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.max_requests": 5,
                         "rate_limit.window_ms": 60_000})
    statuses = [(await api.get("/api/tasks", token=None)).status for _ in range(5)]
    assert statuses == [401] * 5  # refused for another reason, but counted
    seconds = assert_limited(await api.get("/api/tasks", token=None))
    assert 1 <= seconds <= 12  # one more every 12 s
    # The probes a balancer polls are not limited.
    assert (await api.get("/api/ready")).status == 200
    assert (await api.get("/api/health")).status == 200


async def test_a_trusted_proxy_separates_its_clients(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.max_requests": 2,
                         "http.trusted_proxies": "127.0.0.1"})

    def by(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    for _ in range(2):
        assert (await api.get("/api/tasks", token=None, headers=by("198.51.100.1"))).status \
            == 401
    assert_limited(await api.get("/api/tasks", token=None, headers=by("198.51.100.1")))
    assert (await api.get("/api/tasks", token=None, headers=by("198.51.100.2"))).status == 401


async def test_an_untrusted_peer_cannot_dodge_by_forging_x_forwarded_for(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.max_requests": 2})
    for n in range(2):
        await api.get("/api/tasks", token=None, headers={"X-Forwarded-For": f"10.9.9.{n}"})
    assert_limited(await api.get("/api/tasks", token=None,
                                 headers={"X-Forwarded-For": "10.9.9.99"}))


async def test_rest_requests_are_limited_per_user(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.user_max_requests": 3})
    alice, bob = await api.as_new_user(), await api.as_new_user()
    assert (await alice.post("/api/tasks", json={"title": "one"})).status == 201
    assert (await alice.get("/api/tasks")).status == 200
    assert (await alice.get("/api/auth/me")).status == 200
    assert_limited(await alice.get("/api/tasks"))
    assert_limited(await alice.post("/api/tasks", json={"title": "two"}))
    assert (await bob.get("/api/tasks")).status == 200  # same address, own budget
    # A forged token does not spend Alice's budget (only verified tokens name a user).
    assert (await api.get("/api/tasks", token="forged.token.value")).status == 401
    tasks = (await bob.get("/api/tasks")).body["tasks"]
    assert tasks == []


async def test_login_and_register_are_stricter(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.auth_max_requests": 3})
    user = await api.as_new_user(email="strict@example.com")
    wrong = {"email": "strict@example.com", "password": "wrong horse"}
    assert (await api.post("/api/auth/login", token=None, json=wrong)).status == 401
    assert (await api.post("/api/auth/login", token=None, json=wrong)).status == 401
    assert_limited(await api.post("/api/auth/login", token=None, json={
        "email": "strict@example.com", "password": "correct horse"}))
    assert_limited(await api.post("/api/auth/register", token=None, json={
        "email": "new@example.com", "password": "correct horse", "name": "New"}))
    # The rest of the API is not under the login budget.
    assert (await user.get("/api/tasks")).status == 200


async def test_every_limit_can_be_turned_off(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"rate_limit.enabled": False, "rate_limit.max_requests": 1,
                         "rate_limit.auth_max_requests": 1, "rate_limit.connect_max": 1,
                         "rate_limit.socket_max_events": 1})
    for _ in range(3):
        assert (await api.get("/api/tasks", token=None)).status == 401


# -- sockets --------------------------------------------------------------------------------


def url_of(api: Api) -> str:
    return str(api.client.make_url("/"))


async def test_socket_events_are_limited_per_socket(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        closing: list[Any]) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"rate_limit.socket_max_events": 3,
                         "rate_limit.socket_window_ms": 60_000})
    user = await api.as_new_user()
    scope = f"user:{user.user['id']}"  # type: ignore[attr-defined]
    first = await Tab(url_of(api), user.token).connect()
    second = await Tab(url_of(api), user.token).connect()
    closing.extend([first, second])
    assert (await first.call("task:create", {"title": "a"}))["ok"]
    assert (await first.call("sync", {"scope": scope, "since": 0}))["ok"]
    assert (await first.call("no:such:event", {}))["error"]["code"] == "invalid"
    for event, payload in (("task:create", {"title": "b"}), ("no:such:event", {})):
        ack = await first.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "rate_limited", ack
        assert 1 <= ack["error"]["details"]["retry_after"] <= 20
    assert (await second.call("sync", {"scope": scope, "since": 0}))["ok"]  # its own budget
    tasks = (await user.get("/api/tasks")).body["tasks"]
    assert [t["title"] for t in tasks] == ["a"]  # the refused create did nothing
    assert first.client.connected  # refused events, not a dropped socket


async def test_connection_attempts_are_limited_per_address(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        closing: list[Any]) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"rate_limit.connect_max": 2})
    user = await api.as_new_user()
    refused = Tab(url_of(api), "not-a-token")
    closing.append(refused)
    with pytest.raises(Exception):  # noqa: B017 - python-socketio's ConnectionError
        await refused.connect()  # refused for its token, but counted
    closing.append(await Tab(url_of(api), user.token).connect())
    third = Tab(url_of(api), user.token)
    closing.append(third)
    with pytest.raises(Exception):  # noqa: B017
        await third.connect()
    assert third.connect_error["message"].startswith("too many connection attempts")
    assert third.connect_error["data"]["code"] == "rate_limited"
    assert third.connect_error["data"]["retry_after"] >= 1


async def test_sockets_are_capped_per_user_and_per_instance(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        closing: list[Any]) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"sockets.max_per_user": 2, "sockets.max_per_instance": 3})
    alice, bob = await api.as_new_user(), await api.as_new_user()
    tabs = [await Tab(url_of(api), alice.token).connect() for _ in range(2)]
    closing.extend(tabs)
    extra = Tab(url_of(api), alice.token)
    closing.append(extra)
    with pytest.raises(Exception):  # noqa: B017
        await extra.connect()
    assert extra.connect_error["data"] == {"code": "rate_limited", "max_sockets": 2}
    closing.append(await Tab(url_of(api), bob.token).connect())  # the instance's third
    full = Tab(url_of(api), bob.token)
    closing.append(full)
    with pytest.raises(Exception):  # noqa: B017
        await full.connect()
    assert full.connect_error["data"]["code"] == "unavailable"
    assert "maximum of 3 sockets" in full.connect_error["message"]
    # Closing a socket frees its place at once.
    await tabs[0].close()
    gateway = api.app[keys.SOCKETS]
    await eventually(lambda: len(gateway.sessions) <= 2, 5, "the closed socket's place freed")
    closing.append(await Tab(url_of(api), alice.token).connect())


# -- across instances -------------------------------------------------------------------------


async def test_two_apps_sharing_redis_share_the_budgets(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        closing: list[Any]) -> None:
    limits = {**STRICT_OFF, "rate_limit.user_max_requests": 3, "rate_limit.connect_max": 2,
              "broker.url": shared_redis_url()}
    first = await serve(aiohttp_client, openapi_checker, tmp_path, **limits)
    second = Api(await aiohttp_client(create_app(first.app[keys.CONFIG])), openapi_checker)
    user = await first.as_new_user()
    second.token = user.token
    for _ in range(3):
        assert (await user.get("/api/tasks")).status == 200
    assert_limited(await second.get("/api/tasks"))  # the second enforces what the first counted
    closing.append(await Tab(url_of(first), user.token).connect())
    closing.append(await Tab(url_of(first), user.token).connect())
    late = Tab(url_of(second), user.token)
    closing.append(late)
    with pytest.raises(Exception):  # noqa: B017
        await late.connect()
    assert late.connect_error["data"]["code"] == "rate_limited"


def test_two_serve_processes_sharing_redis_share_the_budgets(tmp_path: Path) -> None:
    """Real `taskmaster serve` processes: what one counted, the other enforces."""
    env = {"TASKMASTER_STORE_URL": f"sqlite:///{tmp_path}/shared.db",
           "REDIS_URL": shared_redis_url(), "JWT_SECRET": TEST_SECRET,
           "RATE_LIMIT_MAX_REQUESTS": "4", "RATE_LIMIT_WINDOW_MS": "60000"}
    instances = [Instance(tmp_path, env, name=f"rl{i}") for i in range(2)]
    try:
        for instance in instances:
            instance.start(wait=False)
        for instance in instances:
            instance.wait_until("/api/ready", 200)  # probes are not limited
        assert [instances[0].status("/api/tasks") for _ in range(4)] == [401] * 4
        assert instances[1].status("/api/tasks") == 429
        assert instances[0].status("/api/tasks") == 429
    finally:
        for instance in instances:
            instance.stop()


async def test_retry_after_is_honest(aiohttp_client: Any, openapi_checker: OpenAPIChecker,
                                     tmp_path: Path) -> None:
    """After waiting what Retry-After said, the request goes through."""
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.max_requests": 2,
                         "rate_limit.window_ms": 1000})
    await api.get("/api/tasks", token=None)
    await api.get("/api/tasks", token=None)
    seconds = assert_limited(await api.get("/api/tasks", token=None))
    assert seconds == 1
    await asyncio.sleep(seconds)
    assert (await api.get("/api/tasks", token=None)).status == 401


async def test_the_limiter_costs_microseconds_in_memory() -> None:
    """The per-request cost the README states: measured, with a generous bound."""
    limiter = MemoryLimiter()
    rules = [(Rule("rest", 10**9, 1000), "127.0.0.1"), (Rule("user", 10**9, 1000), "u1")]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(20_000):
        await limiter.hit(rules)
    per_request = (loop.time() - start) / 20_000
    assert per_request < 200e-6, per_request  # generous: a shared, busy CI machine


async def test_http_client_sees_retry_after_on_a_raw_request(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{**STRICT_OFF, "rate_limit.auth_max_requests": 1})
    url = str(api.client.make_url("/api/auth/login"))
    body = {"email": f"{uuid.uuid4().hex}@example.com", "password": "whatever1"}
    async with aiohttp.ClientSession() as http:
        first = await http.post(url, json=body)
        assert first.status == 401
        second = await http.post(url, json=body)
        assert second.status == 429 and second.headers["Retry-After"].isdigit()
        assert "X-Request-Id" in second.headers
        assert (await second.json())["error"]["code"] == "rate_limited"


async def test_an_idle_timeout_ends_sockets_that_send_nothing(
        aiohttp_client: Any, openapi_checker: OpenAPIChecker, tmp_path: Path,
        closing: list[Any]) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path,
                      **{"sockets.idle_timeout": "2s", "sockets.ping_interval": "1s"})
    user = await api.as_new_user()
    scope = f"user:{user.user['id']}"  # type: ignore[attr-defined]
    quiet = await Tab(url_of(api), user.token).connect()
    busy = await Tab(url_of(api), user.token).connect()
    closing.extend([quiet, busy])

    async def keep_busy() -> None:
        while True:
            assert (await busy.call("sync", {"scope": scope, "since": 0}))["ok"]
            await asyncio.sleep(0.5)

    chatter = asyncio.create_task(keep_busy())
    try:
        ended = await quiet.wait_event("session:ended", timeout=8)
        assert ended["reason"] == "idle"
        await quiet.wait_event("disconnect", timeout=5)
        assert busy.client.connected  # pings do not count as activity, events do
    finally:
        chatter.cancel()


async def test_no_idle_timeout_by_default(aiohttp_client: Any,
                                          openapi_checker: OpenAPIChecker,
                                          tmp_path: Path) -> None:
    api = await serve(aiohttp_client, openapi_checker, tmp_path)
    assert api.app[keys.CONFIG].idle_timeout == 0
    assert api.app[keys.SOCKETS]._idle_task is None
