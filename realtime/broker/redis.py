"""Redis pub/sub broker: events travel between instances through Redis.

Delivery contract (at most once between instances, like Redis pub/sub itself):
- An event published here is handed to this instance's subscribers at once and
  in publish order, whether Redis is up or not (local sockets stay live).
- Other instances receive it if they were subscribed to its shard when Redis
  delivered it. Redis may drop (a restart, a slow subscriber cut off): the
  per-socket seq feeds detect the gap on the next event of the scope and repair
  it from the store, and after every (re)subscription this broker emits
  `{"type": "control:resync"}` locally so that every feed checks the store, since
  events may have been published while it was deaf.

Layout: a scope's events go to channel `<prefix>:ev:<shard>`, shard = crc32(scope)
mod `shards`; an instance subscribes only to the shards of scopes it has sockets
for (`watch`/`unwatch`), so it neither receives nor decodes traffic for other
users, unlike python-socketio's single-channel AsyncRedisManager. Control
messages (revocations) go to `<prefix>:control`, which every instance hears.
With `?pubsub=sharded` the broker uses SPUBLISH/SSUBSCRIBE (Redis 7 sharded
pub/sub; each shard channel carries a `{hash tag}` so it lives on one cluster
slot). Publishing runs on one task that drains a bounded queue and pipelines
everything pending into one round trip; past the bound the oldest events are
dropped (and counted), which the seq feeds repair as above.

URL: `redis://host:port/db?prefix=tm&shards=64&pubsub=classic|sharded&queue=100000`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..aio import stop_task
from . import Event, Handler

log = logging.getLogger(__name__)
BACKOFF_START, BACKOFF_CAP = 0.1, 5.0
OPTIONS = {"prefix", "shards", "pubsub", "queue"}


class RedisBroker:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - OPTIONS
        if unknown:
            raise ValueError(f"unknown redis broker option(s): {', '.join(sorted(unknown))}")
        self.prefix = options.get("prefix", "taskmaster")
        self.shards = int(options.get("shards", "64"))
        self.sharded = options.get("pubsub", "classic") == "sharded"
        if options.get("pubsub", "classic") not in {"classic", "sharded"}:
            raise ValueError("redis broker pubsub must be classic or sharded")
        if not 1 <= self.shards <= 16384:
            raise ValueError("redis broker shards must be 1 to 16384")
        self._url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self._queue_max = int(options.get("queue", "100000"))
        self.instance = uuid.uuid4().hex[:12]
        self.healthy = False
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0
        self._handlers: list[Handler] = []
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_ready = asyncio.Event()
        self._interest: dict[str, int] = {}  # shard channel -> number of watched scopes
        self._subscribed: set[str] = set()
        self._changed = asyncio.Event()
        self._synced = asyncio.Condition()
        self._client: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- channels ------------------------------------------------------------------

    def channel_of(self, scope: str) -> str:
        shard = zlib.crc32(scope.encode()) % self.shards
        # The {hash tag} pins a shard channel to one cluster slot for SSUBSCRIBE.
        return f"{self.prefix}:ev:{{{shard}}}"

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}:control"

    # -- lifetime ------------------------------------------------------------------

    async def start(self) -> None:
        self._client = aioredis.from_url(
            self._url, socket_connect_timeout=2, socket_timeout=5,
            retry=Retry(NoBackoff(), 0), max_connections=4,
            # CLIENT LIST tells whose connections these are (the prefix, this instance).
            client_name=f"taskmaster:{self.prefix}:{self.instance}")
        self._tasks = [asyncio.create_task(self._publish_forever(), name="redis-publish"),
                       asyncio.create_task(self._listen_forever(), name="redis-listen")]

    async def stop(self) -> None:
        self.healthy = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await stop_task(task)  # a cancel can be lost in get_message's timeout
        if self._client is not None:
            await self._client.aclose()
        self._handlers.clear()

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    # -- interest ------------------------------------------------------------------

    async def watch(self, scope: str) -> None:
        """Make sure this instance hears `scope`; returns once subscribed (or at once
        while Redis is down: the resubscription's resync covers the gap)."""
        channel = self.channel_of(scope)
        self._interest[channel] = self._interest.get(channel, 0) + 1
        if channel in self._subscribed or not self.healthy:
            return
        self._changed.set()
        async with self._synced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait_for(
                    lambda: channel in self._subscribed or not self.healthy), 5)

    def unwatch(self, scope: str) -> None:
        channel = self.channel_of(scope)
        count = self._interest.get(channel, 0) - 1
        if count > 0:
            self._interest[channel] = count
        else:
            self._interest.pop(channel, None)
            self._changed.set()

    # -- publishing ----------------------------------------------------------------

    def publish(self, event: Event) -> None:
        self._deliver_locally(event)
        scope = event.get("scope")
        channel = self.channel_of(scope) if isinstance(scope, str) else self.control_channel
        if len(self._outbox) >= self._queue_max:
            self._outbox.popleft()
            self.dropped += 1
        self._outbox.append((channel, orjson.dumps({"from": self.instance, "event": event})))
        self._outbox_ready.set()

    async def _publish_forever(self) -> None:
        backoff = BACKOFF_START
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch, self._outbox = self._outbox, deque()
                try:
                    assert self._client is not None
                    async with self._client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            control = channel == self.control_channel
                            pipe.execute_command("PUBLISH" if control else command,
                                                 channel, payload)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    log.warning("redis publish failed (%s); retrying in %.1fs", exc, backoff)
                    batch.extend(self._outbox)  # keep the order: the failed batch first
                    excess = len(batch) - self._queue_max
                    for _ in range(max(0, excess)):
                        batch.popleft()
                    self.dropped += max(0, excess)
                    self._outbox = batch
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_CAP)
                    continue
                backoff = BACKOFF_START
                self.published += len(batch)

    # -- receiving -----------------------------------------------------------------

    def _deliver_locally(self, event: Event) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("broker subscriber failed on %s", event.get("type"))

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_START
        while True:
            assert self._client is not None
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.control_channel)
                self._subscribed = set()
                await self._reconcile(pubsub)
                await self._set_health(True)
                # Anything published while we were not subscribed is lost to us:
                # every local feed re-checks the store.
                self._deliver_locally({"type": "control:resync"})
                backoff = BACKOFF_START
                await self._receive(pubsub)
            except (RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("redis subscription lost (%s); reconnecting", exc)
                await self._set_health(False)
                self.reconnects += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _set_health(self, healthy: bool) -> None:
        self.healthy = healthy
        if not healthy:
            self._subscribed = set()
        await self._notify_synced()

    async def _notify_synced(self) -> None:
        async with self._synced:
            self._synced.notify_all()

    async def _reconcile(self, pubsub: Any) -> None:
        wanted = set(self._interest)
        add, remove = wanted - self._subscribed, self._subscribed - wanted
        if add:
            await (pubsub.ssubscribe(*add) if self.sharded else pubsub.subscribe(*add))
        if remove:
            await (pubsub.sunsubscribe(*remove) if self.sharded else pubsub.unsubscribe(*remove))
        self._subscribed = (self._subscribed | add) - remove
        await self._notify_synced()

    async def _receive(self, pubsub: Any) -> None:
        last_heard = time.monotonic()
        pinged = False
        while True:
            if self._changed.is_set():
                self._changed.clear()
                await self._reconcile(pubsub)
            message = await pubsub.get_message(timeout=0.05)  # smessages arrive here too
            now = time.monotonic()
            if message is None:
                # Find a half-open connection: ping after 5 s of silence, give up when
                # the answer has not come 5 s later.
                if now - last_heard > 10 and pinged:
                    raise ConnectionError("no answer from redis to a ping")
                if now - last_heard > 5 and not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            last_heard, pinged = now, False
            if message["type"] not in ("message", "smessage"):
                continue
            try:
                envelope = orjson.loads(message["data"])
            except orjson.JSONDecodeError:
                log.warning("ignored a malformed message on %s", message.get("channel"))
                continue
            if not isinstance(envelope, dict) or envelope.get("from") == self.instance:
                continue  # our own events were delivered locally at publish time
            event = envelope.get("event")
            if isinstance(event, dict):
                self.received += 1
                self._deliver_locally(event)
