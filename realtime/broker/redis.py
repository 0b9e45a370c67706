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
slot). Publishing runs on one task that drains a bounded queue and writes
everything pending, in publish order, as one batch of commands on its own connection
(publisher.py), one round trip; past the bound the oldest events are dropped (and
counted), which the seq feeds repair as above. While Redis is down the queue waits,
retried with a capped backoff; a batch that failed is sent again whole (Redis may have
run part of it: a receiver may get an event twice, which the seq feeds skip).

Both connections are bare asyncio streams parsed by hiredis (connection.py), not
redis-py's client: on the fan-out benchmark's hot path its overhead outweighed the work.

URL: `redis://host:port/db?prefix=tm&shards=64&pubsub=classic|sharded&queue=100000`;
`redis://user:password@...` authenticates (ACL; `:password@` the default user), and
`rediss://` connects with TLS (the default context: certificate and host name checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections import deque
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson
from redis.connection import parse_url

from ..aio import stop_task
from . import Event, Handler
from .publisher import PublisherConnection
from .subscriber import SubscriberConnection

log = logging.getLogger(__name__)
BACKOFF_START, BACKOFF_CAP = 0.1, 5.0
CONNECT_TIMEOUT = 2.0  # seconds to connect, authenticate and name a connection
PUBLISH_TIMEOUT = 5.0  # seconds for Redis to answer a batch of publishes
KEEPER_TICK = 1.0  # seconds between two looks at the subscription's silence
PING_AFTER, PING_ANSWER_WITHIN = 5.0, 5.0  # seconds
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
        parse_url(self._url)  # a malformed URL fails here, not in the connecting tasks
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
        self._tasks = [asyncio.create_task(self._publish_forever(), name="redis-publish"),
                       asyncio.create_task(self._listen_forever(), name="redis-listen")]

    async def stop(self) -> None:
        self.healthy = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await stop_task(task)  # a cancel can be lost in a timeout
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

    @property
    def _client_name(self) -> str:
        """What CLIENT LIST shows for this broker's connections: whose they are."""
        return f"taskmaster:{self.prefix}:{self.instance}"

    def _command_of(self, channel: str) -> str:
        sharded = self.sharded and channel != self.control_channel
        return "SPUBLISH" if sharded else "PUBLISH"

    async def _publish_forever(self) -> None:
        backoff = BACKOFF_START
        pub: PublisherConnection | None = None
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready.clear()
                while self._outbox:
                    batch, self._outbox = self._outbox, deque()
                    try:
                        if pub is None:  # (re)connect on the first batch to send
                            pub = PublisherConnection(self._url, self._client_name,
                                                      self._command_of)
                            async with asyncio.timeout(CONNECT_TIMEOUT):
                                await pub.open()
                        async with asyncio.timeout(PUBLISH_TIMEOUT):
                            await pub.publish(batch)
                    except (OSError, TimeoutError) as exc:  # PublisherError: an OSError
                        if pub is not None:  # out of step with its replies, if open
                            pub.close()
                            pub = None
                        backoff = await self._publish_failed(batch, exc, backoff)
                        continue
                    backoff = BACKOFF_START
                    self.published += len(batch)
        finally:
            if pub is not None:
                pub.close()

    async def _publish_failed(self, batch: deque[tuple[str, bytes]], exc: Exception,
                              backoff: float) -> float:
        """Put the failed batch back in front of the queue, within its bound (the oldest
        dropped and counted), wait `backoff`; returns the next backoff."""
        log.warning("redis publish failed (%s); retrying in %.1fs", exc, backoff)
        batch.extend(self._outbox)  # keep the order: the failed batch first
        excess = len(batch) - self._queue_max
        for _ in range(max(0, excess)):
            batch.popleft()
        self.dropped += max(0, excess)
        self._outbox = batch
        await asyncio.sleep(backoff)
        return min(backoff * 2, BACKOFF_CAP)

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
            sub = SubscriberConnection(self._url, self._client_name + ":sub")
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await sub.open()
                sub.send("SUBSCRIBE", self.control_channel)
                self._subscribed = set()
                await self._reconcile(sub)
                await self._set_health(True)
                # Anything published while we were not subscribed is lost to us:
                # every local feed re-checks the store.
                self._deliver_locally({"type": "control:resync"})
                backoff = BACKOFF_START
                await self._receive(sub)
            except (OSError, TimeoutError) as exc:  # SubscriberError: an OSError
                if self.healthy:
                    log.warning("redis subscription lost (%s); reconnecting", exc)
                await self._set_health(False)
                self.reconnects += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
            finally:
                sub.close()

    async def _set_health(self, healthy: bool) -> None:
        self.healthy = healthy
        if not healthy:
            self._subscribed = set()
        await self._notify_synced()

    async def _notify_synced(self) -> None:
        async with self._synced:
            self._synced.notify_all()

    async def _reconcile(self, sub: SubscriberConnection) -> None:
        wanted = set(self._interest)
        add, remove = wanted - self._subscribed, self._subscribed - wanted
        if add:
            sub.send("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", *add)
        if remove:
            sub.send("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", *remove)
        self._subscribed = (self._subscribed | add) - remove
        await self._notify_synced()

    async def _receive(self, sub: SubscriberConnection) -> None:
        """Read and dispatch on one task; subscription changes and the keep-alive ping
        on another (a read waits for data as long as it takes, with no timeout per read).
        Whichever ends first (a failure) ends the other."""
        heard = [time.monotonic()]
        reader = asyncio.ensure_future(self._read_forever(sub, heard))
        keeper = asyncio.ensure_future(self._keep(sub, heard))
        try:
            done, _ = await asyncio.wait({reader, keeper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # its failure
        finally:
            reader.cancel()
            keeper.cancel()
            for task in (reader, keeper):
                await stop_task(task)

    async def _keep(self, sub: SubscriberConnection, heard: list[float]) -> None:
        """Send subscription changes; find a half-open connection: ping after 5 s of
        silence, give up when the answer has not come 5 s later."""
        pinged = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPER_TICK):
                    await self._changed.wait()
            if self._changed.is_set():
                self._changed.clear()
                await self._reconcile(sub)
            silence = time.monotonic() - heard[0]
            if silence <= PING_AFTER:
                pinged = False
            elif not pinged:
                sub.send("PING")  # answered in the message stream
                pinged = True
            elif silence > PING_AFTER + PING_ANSWER_WITHIN:
                raise ConnectionError("no answer from redis to a ping")

    async def _read_forever(self, sub: SubscriberConnection, heard: list[float]) -> None:
        own = b'{"from":"' + self.instance.encode() + b'"'
        while True:
            replies = await sub.read()
            heard[0] = time.monotonic()
            for reply in replies:
                if not isinstance(reply, list) or len(reply) != 3 or \
                        reply[0] not in (b"message", b"smessage"):
                    continue  # subscription confirmations, the ping's answer
                payload = reply[2]
                if payload.startswith(own):
                    continue  # our own events were delivered locally at publish time
                self._on_payload(reply[1], payload)

    def _on_payload(self, channel: bytes, payload: bytes) -> None:
        try:
            envelope = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("ignored a malformed message on %s", channel[:100])
            return
        if not isinstance(envelope, dict) or envelope.get("from") == self.instance:
            return
        event = envelope.get("event")
        if isinstance(event, dict):
            self.received += 1
            self._deliver_locally(event)
