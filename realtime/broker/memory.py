"""In-process broker: one instance, no network.

Delivery contract: every subscriber gets every published event exactly once, in
publish order, synchronously inside `publish` (so an event is handed to the relay
before the write that produced it is acknowledged). A subscriber that raises is
logged and does not stop delivery to the others.
"""

from __future__ import annotations

import logging

from . import Event, Handler

log = logging.getLogger(__name__)


class MemoryBroker:
    def __init__(self) -> None:
        self.healthy = False
        self._handlers: list[Handler] = []
        self.published = 0

    async def start(self) -> None:
        self.healthy = True

    async def stop(self) -> None:
        self.healthy = False
        self._handlers.clear()

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def watch(self, scope: str) -> None:
        """Every event is heard in-process; nothing to subscribe to."""

    def unwatch(self, scope: str) -> None:
        pass

    def publish(self, event: Event) -> None:
        self.published += 1
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("broker subscriber failed on %s", event.get("type"))
