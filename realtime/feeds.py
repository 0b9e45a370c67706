"""Per-socket, per-scope delivery state: what each socket has been sent, in seq order.

Every socket keeps, for each scope it reads, the seq of the last change it was
sent (its cursor). A live event is sent only if it is the next one (seq ==
cursor + 1); an older one is a duplicate and is dropped; a newer one means the
socket missed something (a broker drop, a reordering across instances, or the
socket just connected), so the feed switches to *repairing*: live events are
held back, the gap is filled from the store with `sync` pages, then the held
events that are still newer than the cursor are sent in order. This gives every
socket strictly increasing seq per scope with no duplicate and no gap, whatever
the broker does (DESIGN.md 5.2 and 5.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
HELD_MAX = 1000  # past this, held events are dropped and the store fills the gap instead


@dataclass(slots=True)
class Feed:
    scope: str
    cursor: int = 0
    repairing: bool = True  # a new feed holds live events until its catch-up is done
    held: list[Event] = field(default_factory=list)
    overflowed: bool = False

    def offer(self, event: Event) -> str:
        """Decide what to do with a live event: 'send', 'drop', 'hold' or 'repair'.

        'send' advances the cursor; the caller must then send the event. 'repair'
        means the event was held and a repair must start.
        """
        seq = event["seq"]
        if self.repairing:
            self.hold(event)
            return "hold"
        if seq <= self.cursor:
            return "drop"
        if seq == self.cursor + 1:
            self.cursor = seq
            return "send"
        self.repairing = True
        self.hold(event)
        return "repair"

    def hold(self, event: Event) -> None:
        if len(self.held) >= HELD_MAX:
            self.held.clear()
            self.overflowed = True
        self.held.append(event)

    def take_ready(self) -> tuple[list[Event], bool]:
        """Held events that now follow the cursor, in order, advancing the cursor.

        Returns (events to send, complete): complete is False when a gap remains
        (or held events were dropped), i.e. the store must be read again.
        """
        ready: list[Event] = []
        held = sorted(self.held, key=lambda event: event["seq"])
        self.held = []
        for index, event in enumerate(held):
            seq = event["seq"]
            if seq <= self.cursor:
                continue
            if seq != self.cursor + 1:
                self.held = held[index:]
                return ready, False
            self.cursor = seq
            ready.append(event)
        complete = not self.overflowed
        self.overflowed = False
        return ready, complete
