"""The room bookkeeping (realtime/rooms.py): a disconnect touches only its socket's rooms."""

from __future__ import annotations

from typing import Any

import socketio

from realtime.rooms import IndexedManager

NS = "/"


class CountingRooms(dict[Any, Any]):
    """A namespace's room table that counts the rooms every access visits: a lookup
    visits one, any walk over the table (copy, items, iteration...) visits them all."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.visits = 0

    def __getitem__(self, key: Any) -> Any:
        self.visits += 1
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.visits += 1
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.visits += 1
        return super().__contains__(key)

    def _walk(self) -> None:
        self.visits += len(self)

    def copy(self) -> dict[Any, Any]:
        self._walk()
        return dict(self)

    def items(self) -> Any:
        self._walk()
        return super().items()

    def keys(self) -> Any:
        self._walk()
        return super().keys()

    def values(self) -> Any:
        self._walk()
        return super().values()

    def __iter__(self) -> Any:
        self._walk()
        return super().__iter__()


async def leave_all(manager: Any, sids: list[str]) -> int:
    table = CountingRooms(manager.rooms[NS])
    manager.rooms[NS] = table
    for sid in sids:
        manager.pre_disconnect(sid, NS)
        await manager.disconnect(sid, NS)
    return table.visits


async def test_sockets_leaving_visit_only_their_own_rooms() -> None:
    """N disconnects cost O(N) room visits, not O(N^2): each socket is in 3 rooms (the
    namespace's, its own, the shared one). The stock manager visits every room of the
    namespace per disconnect: 1,000 sockets leaving would be ~500,000 visits."""
    manager = IndexedManager()
    sids = await _connected(manager, 1000)
    visits = await leave_all(manager, sids)
    assert NS not in manager.rooms  # every room is gone with its last socket
    assert manager.rooms_of == {}
    assert visits <= 20 * len(sids), f"{visits} room visits for {len(sids)} disconnects"


async def test_the_stock_manager_is_quadratic_here() -> None:
    """The counter sees the stock behaviour (so the test above can fail)."""
    manager = socketio.AsyncManager()
    sids = await _connected(manager, 300)
    assert await leave_all(manager, sids) > 300 * 300 / 2


class CountingSid(str):
    """A sid that counts the comparisons made against it (a list search makes one per
    entry; a set lookup none unless the hash matches)."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingSid.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


async def comparisons_to_find_one_among(manager: Any, pending: int) -> int:
    manager.set_server(socketio.AsyncServer())
    for n in range(pending):  # sockets whose CONNECT waits (admission, a storm)
        await manager.pre_connect(f"eio{n}", NS)
        sid = await manager.connect(f"eio-in-{n}", NS)
        manager.pre_disconnect(sid, NS)  # and sockets on their way out
    probe = CountingSid("not-a-pending-sid")
    CountingSid.comparisons = 0
    manager.is_connected(probe, NS)  # every event a socket sends asks this
    return CountingSid.comparisons


async def test_pending_connects_and_disconnects_are_found_without_a_scan() -> None:
    assert await comparisons_to_find_one_among(IndexedManager(), 2000) <= 2


async def test_the_stock_manager_scans_its_pending_lists() -> None:
    """The counter sees the stock behaviour (so the test above can fail)."""
    assert await comparisons_to_find_one_among(socketio.AsyncManager(), 500) >= 1000


async def test_membership_answers_stay_those_of_the_stock_manager() -> None:
    def shape(manager: Any, sids: list[str]) -> dict[str, Any]:
        """Rooms by what they hold (eio sids), sid rooms by their socket's index."""
        named = {f"sid{sids.index(room)}" if room in sids else str(room):
                 sorted(members.values()) for room, members in manager.rooms[NS].items()}
        joined = {n: sorted(f"sid{sids.index(r)}" if r in sids else r
                            for r in manager.get_rooms(sid, NS))
                  for n, sid in enumerate(sids)}
        return {"rooms": named, "joined": joined}

    shapes = []
    for manager in (IndexedManager(), socketio.AsyncManager()):
        sids = await _connected(manager, 4)
        await manager.enter_room(sids[0], NS, "team:a")
        await manager.enter_room(sids[1], NS, "team:a")
        await manager.leave_room(sids[1], NS, "team:a")
        await manager.leave_room(sids[1], NS, "never:joined")
        await manager.close_room("user:1", NS)
        manager.pre_disconnect(sids[2], NS)
        await manager.disconnect(sids[2], NS)
        shapes.append(shape(manager, sids))
    assert shapes[0] == shapes[1]
    assert shapes[0]["joined"][0] == ["sid0", "team:a"]


async def _connected(manager: Any, sockets: int) -> list[str]:
    manager.set_server(socketio.AsyncServer())
    sids = []
    for n in range(sockets):
        sid = await manager.connect(f"eio{n}", NS)
        await manager.enter_room(sid, NS, "user:1")
        sids.append(sid)
    return sids
