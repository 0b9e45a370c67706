"""The Socket.IO side: connect with a token, client events with acks, live delivery.

One `SocketGateway` per app owns one python-socketio `AsyncServer`. It never
writes tasks itself: socket writes go through the same `TaskService` as REST, and
the events they produce come back through the broker to `relay`, which sends
each event to the sockets of its scope, through each socket's `Feed`
(realtime/feeds.py) so that every socket sees its scopes in seq order, once.

The relay keeps its own membership table (`_members`: scope -> sid -> `Member`, kept
on connect and disconnect; python-socketio's rooms hold only each socket's own sid)
rather than asking python-socketio for a room's participants and looking every one up:
per recipient, the hot loop touches the socket's feed and its `Target` and nothing
else. It takes every event waiting in its queue at once and sends a socket a burst's
consecutive events of one scope in one write (realtime/delivery.py), so a room of N
sockets costs N writes per burst, not per event.

Handlers run inline (`async_handlers=False`): python-socketio then handles a
socket's packets one after another, so a socket's writes are applied in the
order it sent them, and a client flooding events is slowed by TCP instead of
piling up tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import socketio
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

from store import Store, SyncAnswer

from . import engineio_fixes, engineio_lean, scopes, validation, wsfront
from .auth import AuthService, Identity
from .broker import Broker, Event
from .config import Config
from .delivery import Delivery, Outgoing, Target, frames_of
from .errors import ApiError
from .feeds import Feed
from .heads import HeadReader
from .metrics import Metrics
from .ratelimit import RateLimits, Rule, client_address, gcra, retry_after
from .rooms import IndexedManager
from .tasks import TaskService

log = logging.getLogger(__name__)
NAMESPACE = "/"
TASK_EVENTS = ("task:created", "task:updated", "task:deleted")
CLIENT_EVENTS = ("task:create", "task:update", "task:delete", "sync")
UNREADABLE_EVENT = "unreadable:payload"  # what a packet with JSON orjson refuses becomes
REPAIR_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
# Events of one scope published by two instances can cross in Redis; wait this long for
# the missing one before reading the store.
GAP_GRACE = 0.05
DEADLINE_TICK = 0.5  # how often token deadlines are checked (seconds)
RELAY_QUEUE_MAX = 100_000  # events waiting for fan-out on this instance
# Events the relay takes from its queue in one go (one write per socket per scope run);
# bounded so that one pass over a big room does not hold the loop for long.
RELAY_BATCH = 32
DEADLINES_PER_SOCKET = 2  # "expiring" and "expired"
DEADLINE_SLACK = 256  # gone sockets' deadlines tolerated before the heap is compacted


class _OrjsonCodec(engineio_lean.OrjsonDumps):
    """The `json` interface python-socketio calls."""

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as refused:
            # JSON that orjson refuses but the grammar allows: a lone surrogate escape (what
            # JSON.stringify makes of an emoji cut in half), NaN/Infinity, nesting past 1024.
            # Raising would drop the packet and leave the client waiting for its ack, so the
            # event becomes UNREADABLE_EVENT, whose handler acks `invalid` (REST answers the
            # same bytes with a 400). Text that is not JSON at all still raises.
            try:
                json.loads(text)
            except RecursionError:
                pass
            except ValueError:
                raise refused from None
            return [UNREADABLE_EVENT, str(refused)[:200]]


class JsonPacket(sio_packet.Packet):
    """Socket.IO's default (JSON) packet, encoded with orjson; a subclass so that the
    codec is not swapped process-wide on python-socketio's own Packet class."""

    json = _OrjsonCodec


def iso_at(epoch: float) -> str:
    return validation.iso(datetime.fromtimestamp(epoch, UTC))


class Session:
    __slots__ = ("eio_sid", "event_tat", "feeds", "identity", "last_event", "sid", "target",
                 "tasks")

    def __init__(self, sid: str, eio_sid: str, identity: Identity) -> None:
        self.sid = sid
        self.eio_sid = eio_sid
        self.target: Target | None = None  # set once the socket is connected
        self.identity = identity
        self.feeds: dict[str, Feed] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.event_tat = 0.0  # GCRA state of this socket's event budget (ms, monotonic)
        self.last_event = time.monotonic()  # for the idle timeout

    @property
    def user_id(self) -> str:
        return self.identity.user_id


class Member:
    """A connected socket in the relay's table of one scope."""

    __slots__ = ("feed", "session", "target")

    def __init__(self, session: Session, feed: Feed, target: Target) -> None:
        self.session = session
        self.feed = feed
        self.target = target


class SocketGateway:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._accepted = self.metrics.connects.labels("accepted", "")  # once, not per connect
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=IndexedManager(),  # disconnects leave only their own rooms
            async_handlers=False,
            serializer=MsgPackPacket if config.socket_serializer == "msgpack" else JsonPacket,
            transports=list(config.socket_transports),
            cors_allowed_origins=_origin_check(config.allowed_origins),
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_http_buffer_size=config.max_message_bytes,
            logger=False,
            engineio_logger=False,
        )
        engineio_fixes.apply(self.sio.eio)
        engineio_fixes.close_unconnected(self.sio.eio, config.connect_timeout,
                                         self._socketio_connected)
        self.delivery = Delivery(self.sio.eio, config.max_pending_bytes, self._on_slow)
        self.sessions: dict[str, Session] = {}
        self._members: dict[str, dict[str, Member]] = {}  # scope -> sid -> member
        self._by_jti: dict[str, set[str]] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue(RELAY_QUEUE_MAX)
        self._inflight_syncs: dict[tuple[str, int], asyncio.Future[SyncAnswer]] = {}
        self.relay_overflows = 0
        self._relay_task: asyncio.Task[None] | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        self._deadlines: list[tuple[float, int, str, str]] = []
        self._tiebreak = itertools.count()
        self._auth: AuthService | None = None
        self._tasks: TaskService | None = None
        self._store: Store | None = None
        self._heads: HeadReader | None = None
        self._broker: Broker | None = None
        self._limits: RateLimits | None = None
        self._event_rule: Rule | None = None
        self._user_sockets: dict[str, int] = {}  # connected or connecting, per user
        self._socket_total = 0  # the same, for the whole instance
        self._idle_task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.draining = False
        self._admission = asyncio.Semaphore(config.max_connecting)  # paces connect storms
        self.connects_waiting = 0
        self._emptied = asyncio.Event()  # set whenever the last socket goes

        on = self.sio.on
        on("connect", self._on_connect)
        on("disconnect", self._on_disconnect)
        on("task:create", self._acked(self._create))
        on("task:update", self._acked(self._update))
        on("task:delete", self._acked(self._delete))
        on("sync", self._acked(self._sync))
        on(UNREADABLE_EVENT, self._unreadable)
        on("*", self._unknown_event)

    # -- lifetime ------------------------------------------------------------------

    async def start(self, auth: AuthService, tasks: TaskService, store: Store,
                    broker: Broker, limits: RateLimits) -> None:
        self._auth, self._tasks, self._store, self._broker = auth, tasks, store, broker
        self._heads = HeadReader(store)
        self._limits = limits
        self._event_rule = limits.socket_events
        broker.subscribe(self._enqueue)
        self._relay_task = asyncio.create_task(self._relay_forever(), name="socket-relay")
        self._deadline_task = asyncio.create_task(self._watch_deadlines(),
                                                  name="socket-deadlines")
        if self.config.idle_timeout:
            self._idle_task = asyncio.create_task(self._end_idle_sockets(), name="socket-idle")

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            await self._end(session, "server_shutdown", "the server is shutting down")
        for task in (self._relay_task, self._deadline_task, self._idle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.sio.eio.ping_clock.close()

    async def drain(self, spread: float) -> None:
        """Refuse new sockets and ask every open one to reconnect elsewhere.

        Each socket gets `session:ended` {reason: "server_draining", reconnect: true}
        and then its Engine.IO connection is closed (not a Socket.IO disconnect), so
        standard clients reconnect by themselves, through the balancer, to another
        instance, with their cursors. The closes are spread evenly over `spread`
        seconds (stratified jitter: socket i of n at a random point of the i-th of n
        equal slots, in random order), so the other instances absorb the sockets
        gradually. Returns when every socket is gone."""
        self.draining = True
        sessions = list(self.sessions.values())
        random.shuffle(sessions)
        loop = asyncio.get_running_loop()
        start, count = loop.time(), max(1, len(sessions))
        for index, session in enumerate(sessions):
            delay = start + spread * (index + random.random()) / count - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if session.sid not in self.sessions:
                continue
            self._emit(session, "session:ended", {
                "reason": "server_draining", "reconnect": True,
                "message": "this instance is shutting down; reconnect with your cursors"})
            await self.sio.eio.disconnect(session.eio_sid)
        while self.sessions:  # disconnect handlers finish on their own schedule
            self._emptied.clear()
            await self._emptied.wait()

    def _services(self) -> tuple[AuthService, TaskService, Store]:
        if self._auth is None or self._tasks is None or self._store is None:
            raise ApiError("unavailable", "the server is starting")
        return self._auth, self._tasks, self._store

    # -- connect and disconnect ----------------------------------------------------

    def connect_stats(self) -> dict[str, int]:
        """How connects were served: store reads of heads (one per batch), round trips of
        the shared rate limiter (the bench stats)."""
        limiter = self._limits.limiter if self._limits is not None else None
        return {"head_reads": self._heads.reads if self._heads is not None else 0,
                "limiter_round_trips": getattr(limiter, "round_trips", 0)}

    def _socketio_connected(self, eio_sid: str) -> bool:
        return self.sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE) is not None

    async def _admit(self, environ: dict[str, Any]) -> None:
        """Refuse a connection attempt over the address's budget or a full instance."""
        limits = self._limits
        if limits is None:
            raise ApiError("unavailable", "the server is starting")
        address = environ.get(wsfront.ADDRESS)  # computed by a native handshake
        if address is None:
            request = environ.get("aiohttp.request")
            address = client_address(request, limits.trusted) if request is not None else "?"
        wait = await limits.connection(address)
        if wait > 0:
            seconds = retry_after(wait)
            raise ApiError("rate_limited",
                           f"too many connection attempts; retry in {seconds} s",
                           {"retry_after": seconds})
        cap = self.config.max_sockets_per_instance
        if cap and self._socket_total >= cap:
            raise ApiError("unavailable",
                           f"this instance holds its maximum of {cap} sockets; retry later")

    def _reserve(self, user_id: str) -> None:
        """Count a socket against its user's cap (before any await, so concurrent
        connects of one user cannot all pass the check)."""
        cap = self.config.max_sockets_per_user
        count = self._user_sockets.get(user_id, 0)
        if cap and count >= cap:
            raise ApiError("rate_limited",
                           f"this user already has its maximum of {cap} sockets; "
                           "close one first", {"max_sockets": cap})
        self._user_sockets[user_id] = count + 1
        self._socket_total += 1

    def _release(self, user_id: str) -> None:
        self._socket_total -= 1
        count = self._user_sockets.get(user_id, 0) - 1
        if count > 0:
            self._user_sockets[user_id] = count
        else:
            self._user_sockets.pop(user_id, None)

    async def _on_connect(self, sid: str, *args: Any) -> dict[str, Any] | None:
        if self.sio.manager.is_connected(sid, NAMESPACE):
            return _reserved_event("connect")
        environ = args[0] if args and isinstance(args[0], dict) else {}
        auth = args[1] if len(args) > 1 else None
        self.connects_waiting += 1
        try:
            await self._admission.acquire()
        finally:
            self.connects_waiting -= 1
        try:
            await self._connect(sid, environ, auth)
        finally:
            self._admission.release()
        _keep_only_the_request(environ)
        return None

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            if self.draining:
                raise ApiError("unavailable",
                               "this instance is shutting down: connect to another one")
            auth_service, _, _ = self._services()
            await self._admit(environ)
            if not isinstance(auth, dict):
                raise ApiError("unauthorized", "missing token: connect with auth {token}")
            token = auth.get("token")
            if not isinstance(token, str) or not token:
                raise ApiError("unauthorized", "missing token: connect with auth {token}")
            identity = await auth_service.authenticate(token)
            readable = scopes.readable_scopes(identity.user_id)
            cursors = _cursors(auth.get("cursors"), readable)
            self._reserve(identity.user_id)
        except ApiError as exc:
            self.metrics.connects.labels("refused", exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, **_extra(exc.details)}) from None
        try:
            await self._join(sid, identity, readable, cursors)
        except BaseException:
            self._release(identity.user_id)
            raise

    async def _join(self, sid: str, identity: Identity, readable: tuple[str, ...],
                    cursors: dict[str, int]) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        session = Session(sid, eio_sid, identity)
        assert self._broker is not None
        for scope in readable:
            # No python-socketio room per scope: the relay delivers through `_members`
            # (registered below, after the heads are read; anything relayed meanwhile is
            # fetched by the catch-up that every new socket runs from its cursor).
            session.feeds[scope] = Feed(scope, cursor=cursors.get(scope, 0))
            await self._broker.watch(scope)  # from here on this instance hears the scope
        try:
            fresh = [scope for scope in readable if scope not in cursors]
            if fresh:
                # No client state: live from the head as of now, before CONNECT goes
                # out, so every change made after the client sees CONNECT reaches it.
                # (Read with the other sockets connecting now: realtime/heads.py.)
                assert self._heads is not None
                for scope, head in (await self._heads.heads(fresh)).items():
                    session.feeds[scope].cursor = head
            eio_socket = self.sio.eio.sockets.get(eio_sid)
            if eio_socket is None or eio_socket.closing or eio_socket.closed:
                # It went away while we waited: python-socketio will not call
                # disconnect for a socket that never connected, so nothing may stay.
                raise ApiError("unavailable", "the connection closed while connecting")
        except ApiError as exc:  # python-socketio drops the rooms of a refused socket
            for scope in readable:
                self._broker.unwatch(scope)
            self.metrics.connects.labels("refused", exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}) from None
        self._accepted.inc()
        self.sessions[sid] = session
        session.target = target = Target(eio_sid, eio_socket)
        for scope, feed in session.feeds.items():
            self._members.setdefault(scope, {})[sid] = Member(session, feed, target)
        self._by_jti.setdefault(identity.jti, set()).add(sid)
        self._schedule_expiry(session)
        # Catch-up runs after this handler returns, i.e. after CONNECT is queued; until
        # it is done, the feeds hold live events back (Feed.repairing starts True).
        loop = asyncio.get_running_loop()
        for scope in readable:
            feed = session.feeds[scope]
            if scope in cursors:
                self._spawn(session, self._repair(session, feed))
            else:  # most often nothing to read: a callback, not a task per connect
                loop.call_soon(self._flush_or_repair, session, feed)
        return None

    async def _on_disconnect(self, sid: str, *_: Any) -> dict[str, Any] | None:
        if self.sio.manager.is_connected(sid, NAMESPACE):
            return _reserved_event("disconnect")
        session = self.sessions.pop(sid, None)
        if not self.sessions:
            self._emptied.set()
        if session is None:
            return None
        self._release(session.user_id)
        for scope in session.feeds:
            members = self._members.get(scope)
            if members is not None:
                members.pop(sid, None)
                if not members:
                    del self._members[scope]
        sids = self._by_jti.get(session.identity.jti)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_jti[session.identity.jti]
        for task in list(session.tasks):
            task.cancel()
        if self._broker is not None:
            for scope in session.feeds:
                self._broker.unwatch(scope)
        self._compact_deadlines()
        return None

    def _compact_deadlines(self) -> None:
        """Drop the deadlines of gone sockets once they outnumber the live ones: entries are
        otherwise dropped only when they fall due (a token's lifetime, 7 days by default),
        and a stream of short connections would grow the heap all that time."""
        if len(self._deadlines) > 2 * DEADLINES_PER_SOCKET * len(self.sessions) + DEADLINE_SLACK:
            self._deadlines = [d for d in self._deadlines if d[3] in self.sessions]
            heapq.heapify(self._deadlines)

    def _spawn(self, session: Session, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    def _schedule_expiry(self, session: Session) -> None:
        # One heap for all sockets instead of two timer handles per socket (memory).
        expires_at = session.identity.expires_at
        heapq.heappush(self._deadlines, (expires_at - self.config.expiry_notice,
                                         next(self._tiebreak), "expiring", session.sid))
        heapq.heappush(self._deadlines, (expires_at, next(self._tiebreak), "expired",
                                         session.sid))

    async def _watch_deadlines(self) -> None:
        """Warn sockets shortly before their token expires and end them when it does."""
        while True:
            now = time.time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, kind, sid = heapq.heappop(self._deadlines)
                session = self.sessions.get(sid)
                if session is None:
                    continue  # long gone; entries are dropped lazily
                if kind == "expiring":
                    self._spawn(session, self._warn_expiring(session))
                else:
                    self._spawn(session, self._end(session, "token_expired",
                                                   "your token expired; log in again"))
            await asyncio.sleep(DEADLINE_TICK)

    async def _end_idle_sockets(self) -> None:
        """End sockets that sent no event for sockets.idle_timeout (see docs/protocol.md:
        pings do not count, a listening-only tab is idle)."""
        idle = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(idle / 4, 5.0))
            horizon = time.monotonic() - idle
            for session in list(self.sessions.values()):
                if session.last_event < horizon:
                    self._spawn(session, self._end(
                        session, "idle", f"no events for {idle:g} s; reconnect when needed"))

    async def _warn_expiring(self, session: Session) -> None:
        expires_at = session.identity.expires_at
        self._emit(session, "session:expiring", {
            "expires_at": iso_at(expires_at),
            "seconds_left": max(0, round(expires_at - time.time())),
        })

    async def _end(self, session: Session, reason: str, message: str) -> None:
        """Tell the socket why, then disconnect it (the client will not auto-reconnect)."""
        if session.sid not in self.sessions:
            return
        self._emit(session, "session:ended", {"reason": reason, "message": message})
        await self.sio.disconnect(session.sid, namespace=NAMESPACE)

    async def revoke(self, jti: str) -> None:
        for sid in list(self._by_jti.get(jti, ())):
            session = self.sessions.get(sid)
            if session is not None:
                await self._end(session, "token_revoked", "this token was revoked")

    # -- sending -------------------------------------------------------------------

    def encode(self, name: str, data: Any) -> Outgoing:
        if self.sio.packet_class is JsonPacket:
            # What JsonPacket(EVENT, "/", [name, data]).encode() gives, without its walk
            # through the whole event looking for bytes (2.5 % of a fan-out instance's loop):
            # orjson refuses bytes, and then the packet class decides.
            try:
                return Outgoing("2" + orjson.dumps([name, data]).decode())
            except TypeError:
                pass
        return Outgoing(self.sio.packet_class(sio_packet.EVENT, namespace=NAMESPACE,
                                              data=[name, data]).encode())

    def _emit(self, session: Session, name: str, data: Any) -> None:
        self.delivery.send(session.eio_sid, self.encode(name, data))

    def _on_slow(self, eio_sid: str) -> None:
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE)
        session = self.sessions.get(sid) if sid else None
        log.warning("dropped a socket that stopped reading (user %s)",
                    session.user_id if session else "?")
        if session is not None:
            self._spawn(session, self.sio.disconnect(session.sid, namespace=NAMESPACE))

    # -- relay: broker -> rooms ----------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Bounded memory: drop it; every feed's next check against the store (the
            # gap it leaves, or this resync) delivers what it carried.
            self.relay_overflows += 1
            if self.relay_overflows % 1000 == 1:
                log.warning("relay queue full: events dropped, sockets will resync")
            self.resync_all()

    async def _relay_forever(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < RELAY_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            await self.relay_many(batch)
            # A fan-out never suspends by itself; let requests, pings and the sockets'
            # own traffic run between two batches.
            await asyncio.sleep(0)

    async def relay_many(self, events: list[Event]) -> None:
        """Relay events in order; consecutive task events of one scope go out together."""
        index, count = 0, len(events)
        while index < count:
            event = events[index]
            end = index + 1
            scope = event.get("scope")
            if event.get("type") in TASK_EVENTS:
                while (end < count and events[end].get("scope") == scope
                       and events[end].get("type") in TASK_EVENTS):
                    end += 1
            try:
                if end - index > 1:
                    self._fan_out(event["scope"], events[index:end])
                else:
                    await self.relay(event)
            except Exception:
                log.exception("relay failed on %s", event.get("type"))
            index = end

    async def relay(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "control:revoke":
            await self.revoke(event["jti"])
            return
        if kind == "control:resync":
            self.resync_all()
            return
        if kind == "scope:head":
            self.catch_up_to(event["scope"], event["seq"])
            return
        if kind not in TASK_EVENTS:
            return
        self._fan_out(event["scope"], [event])

    def _fan_out(self, scope: str, events: list[Event]) -> None:
        """Send task events of one scope (in the order given) to the scope's sockets, each
        through its feed. Per socket: one check when the socket is due exactly this run of
        seqs (the common case), else the feed decides event by event."""
        for event in events:
            self.metrics.observe_lag(event.get("ts"))
        members = self._members.get(scope)
        if not members:
            return
        first = events[0]["seq"]
        last = first + len(events) - 1
        run = all(event["seq"] == first + n for n, event in enumerate(events))
        before = first - 1
        packets: list[Outgoing] = []
        frames = b""
        deliver = self.delivery.deliver
        delivered = 0
        for member in tuple(members.values()):
            feed = member.feed
            if run and feed.cursor == before and not feed.repairing:
                feed.cursor = last
                if not frames:  # encoded and framed once for every recipient
                    packets = packets or [self.encode(e["type"], e) for e in events]
                    frames = frames_of(packets)
                deliver(member.target, packets, frames)
                delivered += len(events)
                continue
            due: list[Outgoing] = []
            for n, event in enumerate(events):
                verdict = feed.offer(event)
                if verdict == "send":
                    packets = packets or [self.encode(e["type"], e) for e in events]
                    due.append(packets[n])
                elif verdict == "repair":
                    self._spawn(member.session,
                                self._repair(member.session, feed, grace=GAP_GRACE))
            if due:
                deliver(member.target, due)
                delivered += len(due)
        self.delivered += delivered

    def catch_up_to(self, scope: str, head: int) -> None:
        """The scope has committed up to `head`: feeds behind it read the store (a write
        whose event was never published, see TaskService)."""
        for member in tuple(self._members.get(scope, {}).values()):
            feed = member.feed
            if feed.cursor < head:
                self._spawn(member.session, self._catch_up(member.session, feed, head))

    async def _catch_up(self, session: Session, feed: Feed, head: int) -> None:
        await asyncio.sleep(GAP_GRACE)  # the event itself may still be on its way
        if feed.repairing or feed.cursor >= head:
            return
        feed.repairing = True
        await self._repair(session, feed)

    def resync_all(self) -> None:
        """The broker may have lost events: every feed checks the store once."""
        for session in list(self.sessions.values()):
            for feed in session.feeds.values():
                if not feed.repairing:
                    feed.repairing = True
                    self._spawn(session, self._repair(session, feed))

    def _flush_or_repair(self, session: Session, feed: Feed) -> None:
        if self.sessions.get(session.sid) is not session:
            return  # disconnected meanwhile
        self._flush(session, feed)
        if feed.repairing:  # a gap since the head was read: the store fills it
            self._spawn(session, self._repair(session, feed))

    async def _repair(self, session: Session, feed: Feed, grace: float = 0.0) -> None:
        """Fill the feed's gap from the store, then send what was held, in order."""
        if grace:
            await asyncio.sleep(grace)
            self._flush(session, feed)  # the missing event may have arrived
        while feed.repairing:
            while True:
                answer = await self._retrying(lambda: self._shared_sync(feed.scope, feed.cursor))
                self.metrics.sync_changes.labels("catch_up").observe(len(answer.changes))
                if answer.changes or answer.reset:
                    self._emit(session, "sync", answer.to_dict())
                feed.cursor = answer.seq
                if not answer.more:
                    break
            self._flush(session, feed)

    def _flush(self, session: Session, feed: Feed) -> None:
        """Send held events that follow the cursor; end repairing if nothing is missing."""
        while True:
            ready, complete = feed.take_ready()
            for event in ready:
                self.delivery.send(session.eio_sid, self.encode(event["type"], event))
                self.delivered += 1
            if not complete:
                return  # a gap remains: the caller reads the store again
            if not feed.held:
                feed.repairing = False
                return

    async def _shared_sync(self, scope: str, since: int) -> SyncAnswer:
        """One store read for every socket repairing the same scope from the same seq
        (a big room after a Redis reconnection would otherwise read it once per socket)."""
        key = (scope, since)
        pending = self._inflight_syncs.get(key)
        if pending is None:
            _, _, store = self._services()
            pending = asyncio.ensure_future(store.sync(scope, since, self.config.sync_limit_max))
            self._inflight_syncs[key] = pending
            pending.add_done_callback(lambda _: self._inflight_syncs.pop(key, None))
        return await asyncio.shield(pending)

    async def _retrying(self, read: Callable[[], Awaitable[Any]]) -> Any:
        for delay in (*REPAIR_BACKOFF, None):
            try:
                return await read()
            except ApiError as exc:
                if exc.code != "unavailable" or delay is None:
                    raise
                log.warning("store unavailable during socket catch-up; retrying in %ss",
                            delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # -- client events ---------------------------------------------------------------

    def _acked(self, handler: Callable[[Session, dict[str, Any]], Awaitable[dict[str, Any]]]
               ) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def run(sid: str, *args: Any) -> dict[str, Any]:
            try:
                session = self.sessions.get(sid)
                if session is None:
                    raise ApiError("unauthorized", "this socket is not connected")
                self._spend_event(session)
                if len(args) != 1:
                    raise ApiError("invalid", "send exactly one payload object with the event")
                payload = validation.require_object(args[0], "the payload")
                return {"ok": True, **await handler(session, payload)}
            except ApiError as exc:
                return {"ok": False, "error": exc.to_dict()}
            except Exception:
                log.exception("socket event handler failed")
                return {"ok": False, "error": {"code": "internal",
                                               "message": "the server failed to handle this"}}

        return run

    def _spend_event(self, session: Session) -> None:
        """One event from the socket's budget (in process: a socket lives on one
        instance), or `rate_limited` in its ack."""
        now = time.monotonic()
        session.last_event = now
        rule = self._event_rule
        if rule is None:
            return
        new_tat, over = gcra(session.event_tat, now * 1000, rule.interval_ms, rule.window_ms)
        if over > 0:
            seconds = retry_after(over / 1000)
            raise ApiError("rate_limited", f"too many events; retry in {seconds} s",
                           {"retry_after": seconds})
        session.event_tat = new_tat

    async def _unknown_event(self, *args: Any) -> dict[str, Any]:
        # The catch-all is called (event, sid, *data); an event literally named "*" finds
        # it as its own handler and calls it (sid, *data).
        if len(args) >= 2 and isinstance(args[1], str) and args[1] in self.sessions:
            event, sid = args[0], args[1]
        else:
            event, sid = "*", args[0] if args else ""
        session = self.sessions.get(sid)
        if session is not None:
            try:
                self._spend_event(session)
            except ApiError as exc:
                return {"ok": False, "error": exc.to_dict()}
        return {"ok": False, "error": {
            "code": "invalid", "message": f"unknown event {str(event)[:64]!r}",
            "details": {"events": list(CLIENT_EVENTS)}}}

    async def _unreadable(self, sid: str, *args: Any) -> dict[str, Any]:
        reason = args[0] if args and isinstance(args[0], str) else "unreadable JSON"
        return {"ok": False, "error": {
            "code": "invalid", "message": "the event's JSON has a value this server does not "
            "accept (a lone surrogate, NaN or Infinity, or nesting deeper than 1024)",
            "details": {"reason": reason[:200]}}}

    async def _create(self, session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        body = dict(payload)
        mutation_id = validation.mutation_id(body.pop("mutation_id", None))
        client_id, fields = validation.new_task(body)
        _, tasks, _ = self._services()
        task, created = await tasks.create(session.user_id, client_id, fields, mutation_id)
        return {"task": task, "created": created}

    async def _update(self, session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        _check_keys(payload, ("id", "changes", "expected_version", "mutation_id"))
        task_id = validation.task_id(payload.get("id"))
        changes = validation.task_changes(payload.get("changes"))
        _, tasks, _ = self._services()
        task = await tasks.update(
            session.user_id, task_id, changes,
            validation.expected_version(payload.get("expected_version")),
            validation.mutation_id(payload.get("mutation_id")))
        return {"task": task}

    async def _delete(self, session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        _check_keys(payload, ("id", "expected_version", "mutation_id"))
        _, tasks, _ = self._services()
        gone = await tasks.delete(
            session.user_id, validation.task_id(payload.get("id")),
            validation.expected_version(payload.get("expected_version")),
            validation.mutation_id(payload.get("mutation_id")))
        return {"task": gone}

    async def _sync(self, session: Session, payload: dict[str, Any]) -> dict[str, Any]:
        _check_keys(payload, ("scope", "since", "limit"))
        scope = validation.scope(payload.get("scope"))
        since = _non_negative(payload.get("since", 0), "since")
        limit = payload.get("limit", self.config.sync_limit_max)
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
                1 <= limit <= self.config.sync_limit_max):
            raise ApiError("invalid", f"limit must be 1 to {self.config.sync_limit_max}")
        _, tasks, _ = self._services()
        answer = await tasks.sync(session.user_id, scope, since, limit)
        self.metrics.sync_changes.labels("socket_event").observe(len(answer.changes))
        return answer.to_dict()


def _reserved_event(name: str) -> dict[str, Any]:
    """The ack of a client *event* named like a connection handler. python-socketio looks
    client events up in the same table as its own `connect`/`disconnect` calls, so without
    this a client could re-run the connect handler on a live socket (another user's token
    included) or tear down its session while staying connected."""
    return {"ok": False, "error": {
        "code": "invalid", "message": f"{name!r} is a reserved event name",
        "details": {"events": list(CLIENT_EVENTS)}}}


def _keep_only_the_request(environ: dict[str, Any]) -> None:
    """python-socketio keeps the environ of a socket's connect (every HTTP header, as a
    WSGI dict: ~1.5 kB) as long as the socket lives. Once connected, only the request (or
    a native handshake's address) is read again: by `_admit`, if the client connects the
    namespace again on this session."""
    kept = [(key, environ[key]) for key in ("aiohttp.request", wsfront.ADDRESS)
            if key in environ]
    environ.clear()
    environ.update(kept)


def _extra(details: Any) -> dict[str, Any]:
    """What a refusal adds beside its code (retry_after, max_sockets)."""
    return details if isinstance(details, dict) else {}


def _check_keys(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
    fields = validation.Fields()
    validation.reject_unknown(payload, allowed, fields)
    fields.raise_if_any()


def _non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
        raise ApiError("invalid", f"{name} must be a non-negative integer")
    return value


def _cursors(raw: Any, readable: tuple[str, ...]) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 100:
        raise ApiError("invalid", "cursors must be an object of {scope: seq}")
    cursors = {}
    for scope, seq in raw.items():
        validation.scope(scope)
        if scope not in readable:
            raise ApiError("forbidden", f"you may not read {scope}")
        cursors[scope] = _non_negative(seq, f"the cursor of {scope}")
    return cursors


def _origin_check(origins: tuple[str, ...]) -> Callable[[str | None, dict[str, Any]], bool]:
    """python-engineio's origin test: FRONTEND_URL's origins and the server's own (its
    dashboard page). A refused origin gets a 400 before any Engine.IO session exists."""
    allowed = frozenset(origins)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if not origin:  # engine.io also asks when there is no Origin (answer headers)
            return False
        normalized = origin.lower()
        if "*" in allowed or normalized in allowed:
            return True
        host = str(environ.get("HTTP_HOST", "")).lower()
        scheme, _, netloc = normalized.partition("://")
        return scheme in {"http", "https"} and bool(host) and netloc == host

    return check
