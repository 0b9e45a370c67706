"""Rate limits: one algorithm (GCRA), in process on one machine, in Redis across instances.

GCRA (the generic cell rate algorithm, a token bucket kept as one number per key):
a rule "N per window W" lets a client spend N at once and then one more every W/N.
Per key we store only the theoretical arrival time (TAT) of the next request; a
request at `now` is allowed when `max(TAT, now) + W/N - now <= W`, and then moves
the TAT by W/N. A refused request changes nothing, so a client hammering a closed
door does not push its own reopening further away. Unlike fixed windows it never
allows 2N around a window boundary.

Which store holds the TATs follows the broker URL (`REDIS_URL`): `memory://` keeps
them in this process; `redis://` keeps them in Redis, updated by one Lua script
(atomic, one round trip for every rule of a request, Redis's own clock), so every
instance counts against the same budget. If Redis cannot be reached the limiter
falls back to this instance's own counts (logged, at most once per LOG_EVERY
seconds) and tries Redis again after RETRY_REDIS_AFTER: limits then hold per
instance instead of across them, and requests never wait on a dead Redis.

Leases (rules with `leased`, the connect budget): in Redis an instance may take several
units of one budget in one round trip and hand them to the next requests of that key
itself, with no round trip. A unit is spent in Redis before it is used, and a GCRA
sequence stays conforming when a request is served later than it was counted, so a
lease is never looser than checking every request; units left when the lease expires
are lost, which is stricter. The first request of a key asks for one unit; a key that
keeps asking gets leases that double, up to `Rule.lease_cap` (1/32 of the budget, so a
burst's leftovers waste little of it).

Client addresses (`client_address`): the TCP peer, or, when the peer is one of the
configured trusted proxies, the right-most X-Forwarded-For hop that is not a
trusted proxy. IPv6 clients are counted per /64 (one subscriber's whole network).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from aiohttp import web

from .aio import stop_task
from .config import Config, IPNetwork

log = logging.getLogger(__name__)
SWEEP_EVERY = 30.0  # seconds between two sweeps of expired in-process entries
MAX_KEYS = 1_000_000  # in-process entries kept at most (about 150 bytes each)
MAX_LEASES = 10_000  # leased keys kept at most (a lease is about 300 bytes)
TOLERANCE_MS = 0.001
RETRY_REDIS_AFTER = 1.0  # seconds of local-only limiting after a Redis failure
LOG_EVERY = 30.0
REDIS_TIMEOUT = 0.5  # seconds; a limiter must never hold a request for long
REDIS_POOL = 2  # connections: the batch in flight, and a script load

# KEYS: one bucket per rule; ARGV: (interval_ms, window_ms) per key. Returns 0 when the
# request is allowed (and then spends it from every bucket), else the milliseconds until
# it would be (and then changes nothing).
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tats[i] = tat + interval
  local over = tats[i] - now - window
  if over > 0.001 and over > wait then wait = over end
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  -- at least 1 ms: a tiny interval can vanish in the rounding of a 13-digit now
  local ttl = math.max(1, math.ceil(tats[i] - now))
  redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', ttl)
end
return 0
"""

# KEYS: one bucket; ARGV: interval_ms, window_ms, wanted units. Spends as many units as
# the budget allows now, at most the wanted ones, and returns {granted, ms until one more
# unit would be allowed (0 if every wanted unit was granted)}; granting 0 changes nothing.
LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local n = math.floor((now + window + 0.001 - tat) / interval)
if n > want then n = want end
if n > 0 and tat + n * interval - now - window > 0.001 then n = n - 1 end
if n < 1 then return {0, math.ceil(tat + interval - now - window)} end
local new = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.max(1, math.ceil(new - now)))
if n < want then return {n, math.max(1, math.ceil(new + interval - now - window))} end
return {n, 0}
"""
LEASE_MAX = 32  # units one lease holds at most
LEASE_SECONDS = 1.0  # a lease's units unused this long after it was granted are dropped


@dataclass(frozen=True)
class Rule:
    """`limit` requests per `window_ms`, spent at once or spread out."""

    name: str  # the key namespace: rest, user, auth, connect
    limit: int
    window_ms: int
    leased: bool = False  # in Redis, units may be taken a few at a time (module docstring)

    @property
    def interval_ms(self) -> float:
        return self.window_ms / self.limit

    @property
    def lease_cap(self) -> int:
        return max(1, min(LEASE_MAX, self.limit // 32))


Check = tuple[Rule, str]  # a rule and whose budget (an address, a user id)


def gcra(tat: float, now: float, interval: float, window: float) -> tuple[float, float]:
    """One GCRA step: (the TAT after this request, how long it must wait; <= 0: allowed).

    Milliseconds. Float rounding (N * (W / N) need not be exactly W) is forgiven up to
    TOLERANCE_MS, so the Nth request of a fresh budget is never refused by an ulp."""
    new_tat = max(tat, now) + interval
    over = new_tat - now - window
    return new_tat, over if over > TOLERANCE_MS else 0.0


class Limiter(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def hit(self, checks: Sequence[Check]) -> float:
        """Spend one request from every check's budget if all allow it: 0.0; else the
        seconds until they would (and nothing is spent)."""
        ...


class MemoryLimiter:
    """The TATs in a dict of this process, in milliseconds of the monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="ratelimit-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def hit(self, checks: Sequence[Check]) -> float:
        return self.hit_now(checks)

    def hit_now(self, checks: Sequence[Check]) -> float:
        now = self._clock() * 1000
        tats = self._tats
        wait = 0.0
        spent = []
        for rule, ident in checks:
            key = f"{rule.name}:{ident}"
            new_tat, over = gcra(tats.get(key, now), now, rule.interval_ms, rule.window_ms)
            wait = max(wait, over)
            spent.append((key, new_tat))
        if wait > 0:
            return wait / 1000
        if len(tats) >= self._max_keys:
            self.sweep()
            while len(tats) >= self._max_keys:  # still full: forget the oldest entries
                del tats[next(iter(tats))]
        for key, new_tat in spent:
            tats[key] = new_tat
        return 0.0

    def sweep(self) -> None:
        """Forget every key whose budget is whole again (its TAT has passed)."""
        now = self._clock() * 1000
        for key in [key for key, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    def __len__(self) -> int:
        return len(self._tats)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            self.sweep()


class _Lease:
    """Units of one key's budget spent in Redis and not yet used here, and the callers
    waiting for the next grant (each a future: 0.0 = allowed, else seconds to wait)."""

    __slots__ = ("asked", "expires", "granted", "units", "waiting")

    def __init__(self) -> None:
        self.units = 0
        self.expires = 0.0
        self.granted = 0  # the last grant's size: the next one may double it
        self.waiting: list[asyncio.Future[float]] = []
        self.asked = False  # `waiting` is queued for the next round trip


class RedisLimiter:
    """The TATs in Redis (`<prefix>:rl:<rule>:<who>`), shared by every instance.

    Checks that arrive while a round trip is in flight wait for the next one and go
    together in one pipeline (each its own script call, atomic on its own): one
    connection, one round trip per batch, however many requests arrive at once.
    A leased rule's requests are served from this instance's lease of the key when it
    holds units, else they wait together for one grant (module docstring)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.prefix = options.get("prefix", "taskmaster")  # the broker's, so one namespace
        self._url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self._local = MemoryLimiter()
        self._client: Any = None
        self._script: Any = None
        self._pending: list[tuple[list[str], list[float], asyncio.Future[float]]] = []
        self._leases: dict[str, _Lease] = {}
        self._lease_asks: list[tuple[str, Rule, _Lease]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._skip_until = 0.0
        self._last_log = -math.inf
        self.fallbacks = 0
        self.round_trips = 0

    async def start(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = aioredis.from_url(
            self._url, max_connections=REDIS_POOL, socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(GCRA_LUA)
        self._lease_script = self._client.register_script(LEASE_LUA)
        await self._local.start()
        self._flusher = asyncio.create_task(self._flush_forever(), name="ratelimit-redis")

    async def stop(self) -> None:
        await stop_task(self._flusher)
        for _, _, future in self._pending:
            future.cancel()
        for lease in self._leases.values():
            for future in lease.waiting:
                future.cancel()
        await self._local.stop()
        if self._client is not None:
            await self._client.aclose()

    def key(self, rule: Rule, ident: str) -> str:
        return f"{self.prefix}:rl:{rule.name}:{ident}"

    async def hit(self, checks: Sequence[Check]) -> float:
        if not checks:
            return 0.0
        if time.monotonic() < self._skip_until:
            return self._local.hit_now(checks)
        if len(checks) == 1 and checks[0][0].leased:
            return await self._leased(checks)
        keys = [self.key(rule, ident) for rule, ident in checks]
        args: list[float] = []
        for rule, _ in checks:
            args += [rule.interval_ms, rule.window_ms]
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        self._wake.set()
        return await self._outcome(future, checks)

    async def _outcome(self, future: asyncio.Future[float], checks: Sequence[Check]) -> float:
        """Redis's answer, or this instance's own count when Redis could not be asked."""
        try:
            return await future
        except (OSError, TimeoutError, _RedisError) as exc:
            self._failed(exc)
            return self._local.hit_now(checks)

    async def _leased(self, checks: Sequence[Check]) -> float:
        rule, ident = checks[0]
        key = self.key(rule, ident)
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= MAX_LEASES:
                self._forget_leases()
            lease = self._leases[key] = _Lease()
        if lease.units > 0:
            if time.monotonic() < lease.expires:
                lease.units -= 1
                return 0.0
            lease.units = 0  # too old: dropped (never looser, see the module docstring)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        lease.waiting.append(future)
        if not lease.asked:
            lease.asked = True
            self._lease_asks.append((key, rule, lease))
            self._wake.set()
        return await self._outcome(future, checks)

    def _forget_leases(self) -> None:
        """Drop the leases nobody waits on (bounded memory; their units are lost)."""
        for key in [k for k, lease in self._leases.items() if not lease.waiting]:
            del self._leases[key]

    def _granted(self, lease: _Lease, waiting: list[asyncio.Future[float]],
                 result: Any) -> None:
        """Hand a grant to the callers that asked for it; what is left is the lease."""
        granted, wait_ms = int(result[0]), int(result[1])
        lease.granted = granted
        for future in waiting:
            if future.done():  # its caller gave up: its unit goes to the next one
                continue
            if granted > 0:
                granted -= 1
                future.set_result(0.0)
            else:
                future.set_result(wait_ms / 1000)
        while granted > 0 and lease.waiting:  # those queued for the next grant meanwhile
            future = lease.waiting.pop(0)
            if not future.done():
                granted -= 1
                future.set_result(0.0)
        lease.units = granted
        lease.expires = time.monotonic() + LEASE_SECONDS

    def _failed(self, exc: BaseException) -> None:
        self.fallbacks += 1
        now = time.monotonic()
        self._skip_until = now + RETRY_REDIS_AFTER
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.warning("rate limiter: Redis unavailable (%s: %s); limiting per instance "
                        "until it is back", type(exc).__name__, str(exc)[:200])

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch: list[tuple[list[str], list[float], asyncio.Future[float] | None]] = [
                item for item in self._pending if not item[2].done()]
            self._pending = []
            asks, self._lease_asks = self._lease_asks, []
            leases = []
            for key, rule, lease in asks:
                lease.asked = False
                waiting = [future for future in lease.waiting if not future.done()]
                lease.waiting = []
                if not waiting:
                    continue
                want = len(waiting)
                if lease.granted and time.monotonic() < lease.expires:
                    # asked again soon after the last grant: a larger lease
                    want = max(want, min(rule.lease_cap, 2 * lease.granted))
                leases.append((waiting, lease))
                batch.append(([key], [rule.interval_ms, rule.window_ms, want], None))
            if not batch:
                continue
            try:
                results = await self._run(batch)
            except Exception as exc:  # Redis down or timing out: every caller falls back
                results = [exc] * len(batch)
            checks = len(batch) - len(leases)
            for (_, _, future), result in zip(batch[:checks], results[:checks], strict=True):
                if future is None or future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(_RedisError(result))
                else:
                    future.set_result(int(result) / 1000)
            for (waiting, lease), result in zip(leases, results[checks:], strict=True):
                if isinstance(result, BaseException):
                    lease.granted = 0
                    for future in waiting:
                        if not future.done():
                            future.set_exception(_RedisError(result))
                else:
                    self._granted(lease, waiting, result)

    async def _run(self, batch: list[tuple[list[str], list[float], Any]]) -> list[Any]:
        """One pipeline: a GCRA check per item, a lease request per item without a
        future (they come last)."""
        from redis.exceptions import NoScriptError

        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            for keys, args, future in batch:
                script = self._script if future is not None else self._lease_script
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            self.round_trips += 1
            results: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                await self._client.script_load(GCRA_LUA)  # a restarted or flushed Redis
                await self._client.script_load(LEASE_LUA)
                continue
            return results
        raise AssertionError("unreachable")


class _RedisError(Exception):
    """Why a check could not be made in Redis (the caller falls back to local counts)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")


def limiter_from_url(url: str) -> Limiter:
    """Chosen like the broker: `redis://` / `rediss://` share counts, anything else is local."""
    if urlsplit(url).scheme in {"redis", "rediss"}:
        return RedisLimiter(url)
    return MemoryLimiter()


class RateLimits:
    """The configured rules and the limiter that counts them."""

    def __init__(self, config: Config, limiter: Limiter) -> None:
        self.limiter = limiter
        self.trusted = config.trusted_proxies
        enabled = config.rate_limit_enabled

        def rule(name: str, limit: int, window_ms: int, leased: bool = False) -> Rule | None:
            return Rule(name, limit, window_ms, leased) if enabled and limit > 0 else None

        self.rest = rule("rest", config.rate_limit_max_requests, config.rate_limit_window_ms)
        self.user = rule("user", config.rate_limit_user_max_requests,
                         config.rate_limit_window_ms)
        self.auth = rule("auth", config.rate_limit_auth_max_requests,
                         config.rate_limit_auth_window_ms)
        # Leased: a reconnect storm from one address (a NAT, a load test) costs a round
        # trip per lease rather than per connect.
        self.connect = rule("connect", config.rate_limit_connect_max,
                            config.rate_limit_connect_window_ms, leased=True)
        self.socket_events = rule("socket", config.rate_limit_socket_max_events,
                                  config.rate_limit_socket_window_ms)

    async def request(self, address: str, user_id: str | None, auth_route: bool) -> float:
        """A REST request: its address's budget, its user's, and the login/register one."""
        checks: list[Check] = []
        if self.rest is not None:
            checks.append((self.rest, address))
        if user_id is not None and self.user is not None:
            checks.append((self.user, user_id))
        if auth_route and self.auth is not None:
            checks.append((self.auth, address))
        return await self.limiter.hit(checks) if checks else 0.0

    async def connection(self, address: str) -> float:
        """A Socket.IO connection attempt from this address."""
        if self.connect is None:
            return 0.0
        return await self.limiter.hit([(self.connect, address)])


def retry_after(seconds: float) -> int:
    """Whole seconds for Retry-After: never 0 for a refusal."""
    return max(1, math.ceil(seconds))


def client_address(request: web.BaseRequest, trusted: tuple[IPNetwork, ...]) -> str:
    """Whom to count a request against: see the module docstring."""
    return address_of(request.remote, request.headers.getall("X-Forwarded-For", ()), trusted)


def address_of(remote: str | None, forwarded: Iterable[str],
               trusted: tuple[IPNetwork, ...]) -> str:
    """`client_address` from the peer's address and the X-Forwarded-For header values."""
    peer = remote or "unknown"
    if trusted:
        address = _parse(peer)
        if address is not None and _trusted(address, trusted):
            hops = [hop.strip() for value in forwarded for hop in value.split(",")]
            for hop in reversed(hops):
                hop_address = _parse(hop)
                if hop_address is None:
                    break  # garbage in the chain: trust nothing further left of it
                if not _trusted(hop_address, trusted):
                    return _bucket(hop_address)
    return _peer_bucket(peer)


@functools.lru_cache(maxsize=4096)
def _peer_bucket(peer: str) -> str:
    # Parsing an address costs ~10 us of Python; a busy instance sees few distinct peers.
    address = _parse(peer)
    return _bucket(address) if address is not None else peer


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
             trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in trusted)


def _bucket(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
