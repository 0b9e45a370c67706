"""The simulated tabs: sockets that track every delivery, and the tracker they report to."""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from datetime import datetime
from typing import Any

import aiohttp

from .check import ScopeTrack
from .client import SioClient
from .stats import LogHistogram
from .users import User

TASK_EVENTS = frozenset(("task:created", "task:updated", "task:deleted"))
TITLE_TAG = "lt "  # titles are "lt <mutation id>": a sync page's change names its write
# One live delivery in this many (of a write of this run) is split into stages at the
# envelope's `ts`: parsing an ISO time costs a few microseconds, too much for every delivery.
STAGE_SAMPLE_EVERY = 8
HALF_MS = 0.0005  # `ts` is truncated to the millisecond: its middle is the unbiased guess


class Tracker:
    """Shared by every socket of the run: deliveries, latencies, correctness tracks."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.sent_at: dict[str, float] = {}  # mutation id -> perf_counter right before send
        self.latency = array("d")  # seconds, one per delivery of a write of this run
        self.latency_at = array("d")  # when it was received (seconds since t0)
        self.histogram = LogHistogram()
        # The sampled deliveries' two stages (seconds), around the envelope's `ts` (the
        # server's commit time, DESIGN.md section 3): client send -> ts, ts -> received.
        self.send_to_ts = array("d")
        self.ts_to_delivery = array("d")
        self._stage_countdown = STAGE_SAMPLE_EVERY
        self.deliveries = 0
        self.by_url: Counter[int] = Counter()  # deliveries to the sockets of each --url
        self.page_deliveries = 0
        self.pages = 0
        self.first_delivery: float | None = None
        self.last_delivery: float | None = None
        self.canon: dict[tuple[str, int], Any] = {}  # (scope, seq) -> the task first sent
        self.content_differs: Counter[str] = Counter()
        self.other_events: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()  # session:ended reasons
        self.running = True  # sockets reconnect while this is set
        self.ws_session: aiohttp.ClientSession | None = None  # for reconnects
        self.ws_urls: list[str] = []  # every instance's, for failing over on reconnect
        self.connect_timeout = 30.0

    def record_latency(self, sent: float, now: float) -> None:
        value = now - sent
        self.latency.append(value)
        self.latency_at.append(now - self.t0)
        self.histogram.add(value)

    def record_stages(self, sent: float, now: float, ts: Any) -> None:
        """Split send -> delivery at the server's `ts`. Client and server must share a
        clock (one machine): `ts` is wall-clock time, `sent` and `now` perf_counter's, so
        they are mapped through the wall clock's offset read now (drift over the few
        milliseconds of one write is nothing)."""
        try:
            committed = datetime.fromisoformat(ts).timestamp() + HALF_MS
        except (TypeError, ValueError):
            return
        committed -= time.time() - time.perf_counter()  # on perf_counter's scale
        self.send_to_ts.append(committed - sent)
        self.ts_to_delivery.append(now - committed)

    def delivered(self, scope: str, task: Any, now: float, origin: Any, url: int,
                  ts: Any = None) -> Any:
        """Count one delivery of `task`; returns the task to keep (shared between sockets).
        `ts`: the live event's commit time (a sync page's changes have none)."""
        self.deliveries += 1
        self.by_url[url] += 1
        if self.first_delivery is None:
            self.first_delivery = now
        self.last_delivery = now
        key = (scope, task["seq"])
        canon = self.canon.get(key)
        if canon is None:
            self.canon[key] = task
            canon = task
        elif canon != task:
            self.content_differs[scope] += 1
            canon = task
        sent = self.sent_at.get(origin) if isinstance(origin, str) else None
        if sent is None:
            title = task.get("title")
            if isinstance(title, str) and title.startswith(TITLE_TAG):
                sent = self.sent_at.get(title[len(TITLE_TAG):])
        if sent is not None:
            self.record_latency(sent, now)
            if ts is not None:
                self._stage_countdown -= 1
                if self._stage_countdown <= 0:
                    self._stage_countdown = STAGE_SAMPLE_EVERY
                    self.record_stages(sent, now, ts)
        return canon


class LoadSocket(SioClient):
    """A simulated tab: one user's socket keeping per-scope tracks and a replica."""

    __slots__ = ("index", "live_at_check", "reconnecting", "reconnects_left", "tracker",
                 "tracks", "url_index", "user", "was_connected", "ws_url")

    def __init__(self, index: int, user: User, url_index: int, ws_url: str,
                 tracker: Tracker, reconnects: int) -> None:
        super().__init__(user.token)
        self.index = index
        self.user = user
        self.url_index = url_index
        self.ws_url = ws_url
        self.tracker = tracker
        self.tracks: dict[str, ScopeTrack] = {}
        self.reconnects_left = reconnects
        self.reconnecting: asyncio.Task[None] | None = None
        self.was_connected = False
        self.live_at_check = False

    @property
    def live(self) -> bool:
        return self.reader is not None and self.closed is None

    def auth(self) -> dict[str, Any]:
        return {"token": self.token,
                "cursors": {scope: track.top for scope, track in self.tracks.items()
                            if track.known_start}}

    def track(self, scope: str, seq: int) -> ScopeTrack:
        track = self.tracks.get(scope)
        if track is not None:
            return track
        if scope.startswith("user:"):
            # Only its own user scope was given a track at start: this is someone else's.
            track = ScopeTrack(scope, start=seq - 1, known_start=False)
            track.note("foreign_scope", f"an event of {scope}, not this user's")
        else:  # a scope we did not know of (a shared board): track it from here on
            track = ScopeTrack(scope, start=seq - 1, known_start=False)
        self.tracks[scope] = track
        return track

    def on_event(self, name: str, data: Any, now: float) -> None:
        tracker = self.tracker
        if name in TASK_EVENTS:
            try:
                scope = data["scope"]
                seq = data["seq"]
                task = data["task"]
                bad = (data["type"] != name or type(seq) is not int or task["seq"] != seq
                       or task["scope"] != scope)
            except (KeyError, TypeError):
                bad, scope, seq = True, None, None
            if bad or not isinstance(scope, str) or not isinstance(seq, int):
                self._malformed(f"{name} {str(data)[:120]}")
                return
            kept = tracker.delivered(scope, task, now, data.get("origin"), self.url_index,
                                     data.get("ts"))
            self.track(scope, seq).event(seq, kept)
        elif name == "sync":
            self._page(data, now)
        else:
            tracker.other_events[name] += 1
            if name == "session:ended" and isinstance(data, dict):
                tracker.ended[str(data.get("reason"))] += 1

    def _page(self, data: Any, now: float) -> None:
        tracker = self.tracker
        try:
            scope, seq, changes = data["scope"], data["seq"], data["changes"]
            reset = bool(data["reset"])
            ok = (isinstance(scope, str) and type(seq) is int and isinstance(changes, list)
                  and all(c["scope"] == scope and type(c["seq"]) is int for c in changes))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            self._malformed(f"sync {str(data)[:120]}")
            return
        tracker.pages += 1
        tracker.page_deliveries += len(changes)
        track = self.track(scope, (changes[0]["seq"] if changes else seq))
        kept = [tracker.delivered(scope, change, now, None, self.url_index) for change in changes]
        track.page(seq, kept, reset)

    def _malformed(self, text: str) -> None:
        track = next(iter(self.tracks.values()), None)
        if track is not None:
            track.note("malformed", text)

    def on_malformed(self, raw: str) -> None:
        self._malformed(raw[:120])

    def on_closed(self) -> None:
        if self.tracker.running and self.reconnects_left > 0 and self.reconnecting is None:
            self.reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        """Connect again with the cursors reached so far (the server sends what was
        missed first); up to `reconnects_left` tries, backing off, while the run lasts.
        A try that fails moves on to the next instance, as a balancer would send a
        client of a dead instance elsewhere."""
        tracker = self.tracker
        try:
            for attempt in range(self.reconnects_left):  # bounded by the tries left
                session = tracker.ws_session
                if session is None or not tracker.running:
                    return
                self.reconnects_left -= 1
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
                self.reader = None
                if await self.connect(session, self.ws_url, tracker.connect_timeout,
                                      self.auth()):
                    return
                if len(tracker.ws_urls) > 1:
                    self.url_index = (self.url_index + 1) % len(tracker.ws_urls)
                    self.ws_url = tracker.ws_urls[self.url_index]
        finally:
            self.reconnecting = None
