"""python-socketio's room bookkeeping, with a disconnect that costs what the socket has.

Stock `BaseManager.basic_disconnect` copies the namespace's whole room table and tests
every room for the leaving socket. Every socket has a room of its own (its sid room), so
with N sockets one disconnect visits N rooms and N sockets leaving (a deploy, a drain, a
Redis blip that makes every client reconnect) cost O(N^2): about 25 % of a 10 s profile
window when 5,000 sockets closed (BENCHMARKS.md, issue 5, bottleneck 6). `get_rooms` has
the same scan.

`IndexedManager` keeps, beside the stock table, the set of rooms each socket is in, kept
current by the only two methods that change membership (`basic_enter_room`,
`basic_leave_room`), so a disconnect leaves exactly the socket's own rooms. The stock
table (`rooms[namespace][room][sid] = eio_sid`) is left as it is: everything else in
python-socketio reads it.

The sockets connecting and disconnecting (`pending_connect`, `pending_disconnect`) are
lists in the stock manager, searched by every connect, every `is_connected` (each event
a socket sends) and every disconnect: a storm of N connects queued behind admission made
that O(N^2). Here they are insertion-ordered sets with the list methods stock uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import socketio

Room = str | None  # None is the namespace's "every connected socket" room


class SidList:
    """The list operations python-socketio uses on its pending sids, each O(1)."""

    __slots__ = ("_sids",)

    def __init__(self, sids: Iterable[str] = ()) -> None:
        self._sids = dict.fromkeys(sids)

    def append(self, sid: str) -> None:
        self._sids[sid] = None

    def remove(self, sid: str) -> None:
        del self._sids[sid]  # KeyError where a list raises ValueError: callers check first

    def __contains__(self, sid: object) -> bool:
        return sid in self._sids

    def __len__(self) -> int:
        return len(self._sids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sids)


class PendingSids(dict[str, SidList]):
    """namespace -> SidList; stock code stores a new `[]` here, which becomes one."""

    def __setitem__(self, namespace: str, sids: Iterable[str]) -> None:
        super().__setitem__(namespace, sids if isinstance(sids, SidList) else SidList(sids))


class IndexedManager(socketio.AsyncManager):
    def __init__(self) -> None:
        super().__init__()
        self.pending_connect = PendingSids()
        self.pending_disconnect = PendingSids()
        # namespace -> sid -> the rooms that sid is in (its own sid room and None included).
        # A tuple rather than a set: a socket is in 3 rooms or so, and a set of 3 costs
        # 216 bytes per socket against 64; membership changes are rare and O(rooms).
        self.rooms_of: dict[str, dict[str, tuple[Room, ...]]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Room,
                         eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # may raise: not in
        by_sid = self.rooms_of.setdefault(namespace, {})
        joined = by_sid.get(sid, ())
        if room not in joined:
            by_sid[sid] = (*joined, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Room) -> None:
        super().basic_leave_room(sid, namespace, room)
        by_sid = self.rooms_of.get(namespace, {})
        joined = by_sid.get(sid)
        if joined is None or room not in joined:
            return
        rest = tuple(other for other in joined if other != room)
        if rest:
            by_sid[sid] = rest
            return
        del by_sid[sid]
        if not by_sid:
            del self.rooms_of[namespace]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        for room in self.rooms_of.get(namespace, {}).get(sid, ()):
            self.basic_leave_room(sid, namespace, room)
        # What the stock method does besides leaving rooms (no room scan is left in it:
        # the socket is in none now, so its loop finds nothing to leave; we skip it anyway).
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        joined = self.rooms_of.get(namespace, {}).get(sid, ())
        return [room for room in joined if room is not None]
