"""Socket.IO test clients: python-socketio's AsyncClient and the official Node client,
both keeping a replica of the tasks they were sent and checking seq order as they go."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import socketio

JS_DIR = Path(__file__).parent / "js"
TASK_EVENTS = ("task:created", "task:updated", "task:deleted")


class Replica:
    """What a client knows: per scope, its tasks and cursor, built from events and syncs.

    Records every order violation (a seq that does not increase) instead of raising,
    so a test can assert on `violations` at the end.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.cursors: dict[str, int] = {}  # per scope: last seq the server pushed
        self.synced: dict[str, int] = {}  # per scope: seq of the last sync we asked for
        self.violations: list[str] = []

    def apply(self, event: str, data: Any) -> None:
        if event in TASK_EVENTS:
            scope, seq = data["scope"], data["seq"]
            last = self.cursors.get(scope)
            if last is not None and seq <= last:
                self.violations.append(f"{event} seq {seq} after {last}")
            self.cursors[scope] = seq
            known = self.tasks.get(data["task"]["id"])
            if known is None or known["seq"] < seq:  # a hand-made sync may be ahead
                self.tasks[data["task"]["id"]] = data["task"]
        elif event == "sync":
            self.apply_sync(data)

    def apply_sync(self, answer: dict[str, Any]) -> None:
        scope = answer["scope"]
        if answer["reset"]:
            self.tasks = {k: v for k, v in self.tasks.items() if v["scope"] != scope}
        last = self.cursors.get(scope, 0)
        for change in answer["changes"]:
            if change["seq"] <= last and not answer["reset"]:
                self.violations.append(f"sync change seq {change['seq']} after {last}")
            self.tasks[change["id"]] = change
        self.cursors[scope] = answer["seq"]

    def merge_sync(self, answer: dict[str, Any]) -> None:
        """Merge the answer of a sync the client asked for itself: it may race with live
        events, so keep the newer state of each task and never move the cursor back."""
        for change in answer["changes"]:
            known = self.tasks.get(change["id"])
            if known is None or known["seq"] < change["seq"]:
                self.tasks[change["id"]] = change
        scope = answer["scope"]
        self.synced[scope] = max(self.synced.get(scope, 0), answer["seq"])

    def known_up_to(self, scope: str) -> int:
        return max(self.cursors.get(scope, 0), self.synced.get(scope, 0))

    def live_tasks(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.tasks.items() if not v.get("deleted")}


class _Waiting:
    """An event log that coroutines can wait on, with a deadline."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()

    async def record(self, event: str, data: Any) -> None:
        async with self._changed:
            self.events.append((event, data))
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[tuple[str, Any]]], Any],
                       timeout: float = 5.0) -> Any:
        async def satisfied() -> Any:
            async with self._changed:
                while not (result := predicate(self.events)):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(satisfied(), timeout)

    async def wait_event(self, name: str, timeout: float = 5.0,
                         where: Callable[[Any], bool] = lambda data: True) -> Any:
        def find(events: list[tuple[str, Any]]) -> Any:
            for event, data in events:
                if event == name and where(data):
                    return (data,)
            return None

        return (await self.wait_for(find, timeout))[0]


class Tab(_Waiting):
    """One python-socketio client (a browser tab, say)."""

    def __init__(self, url: str, token: str, *, cursors: dict[str, int] | None = None,
                 transports: tuple[str, ...] = ("websocket",), msgpack: bool = False) -> None:
        super().__init__()
        self.url, self.token, self.cursors = url, token, cursors
        self.transports = list(transports)
        self.client = socketio.AsyncClient(reconnection=False,
                                           serializer="msgpack" if msgpack else "default")
        self.replica = Replica()
        self.connect_error: Any = None

        @self.client.on("*")
        async def any_event(event: str, data: Any = None) -> None:
            self.replica.apply(event, data)
            await self.record(event, data)

        @self.client.on("connect_error")
        async def refused(data: Any) -> None:
            self.connect_error = data
            await self.record("connect_error", data)

        @self.client.on("disconnect")
        async def gone(reason: Any = None) -> None:
            await self.record("disconnect", reason)

    async def connect(self) -> Tab:
        auth: dict[str, Any] = {"token": self.token}
        if self.cursors is not None:
            auth["cursors"] = self.cursors
        await self.client.connect(self.url, auth=auth, transports=self.transports,
                                  wait_timeout=5)
        return self

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        return await self.client.call(event, args[0] if len(args) == 1 else args,
                                      timeout=timeout)

    async def close(self) -> None:
        await self.client.disconnect()

    def task_events(self) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event in TASK_EVENTS]


class NodeTab(_Waiting):
    """The official socket.io-client (Node), driven through tests/js/client.mjs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self.replica = Replica()
        self._refs = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> NodeTab:
        node = shutil.which("node")
        assert node, "node is required for the official-client tests"
        assert (JS_DIR / "node_modules" / "socket.io-client").is_dir(), (
            "run `npm ci --prefix tests/js` (scripts/test does it)")
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "client.mjs"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=JS_DIR)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            report = json.loads(line)
            kind = report.pop("kind")
            if kind == "event":
                self.replica.apply(report["event"], report["data"])
                await self.record(report["event"], report["data"])
            else:
                await self.record(kind, report)

    def _send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def connect(self, url: str, token: str, *, cursors: dict[str, int] | None = None,
                      transports: tuple[str, ...] = ("websocket",),
                      msgpack: bool = False) -> Any:
        self._send({"op": "connect", "url": url, "token": token, "cursors": cursors,
                    "transports": list(transports), "msgpack": msgpack})

        def outcome(events: list[tuple[str, Any]]) -> Any:
            for event, data in events:
                if event in ("connected", "connect_error"):
                    return (event, data)
            return None

        return await self.wait_for(outcome, timeout=10)

    async def call(self, event: str, payload: Any, timeout: float = 10.0) -> Any:
        self._refs += 1
        ref = self._refs
        self._send({"op": "emit", "ref": ref, "event": event, "payload": payload})
        reply = await self.wait_event("ack", timeout, where=lambda data: data["ref"] == ref)
        return reply["ack"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self._send({"op": "close"})
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
