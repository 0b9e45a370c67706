"""Brokers carry committed events from the instance that wrote them to every instance.

Chosen by URL scheme (`memory://` in-process; `redis://` joins later), imported lazily.
The interface is deliberately small:

- `publish(event)` never blocks and never raises: it hands the event to the broker,
  which delivers a scope's events in the order they were published.
- `subscribe(handler)` registers a callback run for every event (on this instance's
  loop); the relay that emits to Socket.IO rooms is such a handler.
- `watch(scope)` / `unwatch(scope)`: this instance has (no longer) a socket for the
  scope; a distributed broker subscribes to what is watched only. `watch` returns
  once events of the scope will be heard.
- `healthy` says whether delivery currently works (the readiness probe reads it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

Event = dict[str, Any]
Handler = Callable[[Event], None]


class Broker(Protocol):
    healthy: bool

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def publish(self, event: Event) -> None: ...
    def subscribe(self, handler: Handler) -> None: ...
    async def watch(self, scope: str) -> None: ...
    def unwatch(self, scope: str) -> None: ...


def broker_from_url(url: str) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker()
    if scheme in {"redis", "rediss"}:
        from .redis import RedisBroker

        return RedisBroker(url)
    raise ValueError(f"no broker backend for scheme {scheme!r}")
