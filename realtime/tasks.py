"""The task service: the one write path, used by REST handlers and socket events alike.

validate (the caller, via `validation`) -> the store commits and assigns seq ->
the broker publishes the event -> each instance's relay emits it to the room.
Nothing here knows about HTTP or Socket.IO, and nothing else publishes task events
(but the benchmark-only `POST /api/_bench/publish`, which measures the delivery engine
without the store).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from store import Store, SyncAnswer, Task, TaskQuery
from store.base import SORT_FIELDS, CreateOutcome, sort_key

from . import scopes
from .broker import Broker
from .errors import ApiError, not_found
from .ids import RandomBytes
from .validation import iso

log = logging.getLogger(__name__)
# After a write failed as `unavailable`, how long to keep trying to read the scope's head
# (seconds between attempts); past the last, the next change or reconnect repairs.
RECONCILE_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 10.0, 10.0, 30.0, 30.0, 60.0, 60.0)
RECONCILE_MAX_SCOPES = 10_000  # pending reconciliations; past it, one broker-wide resync


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ListRequest:
    status: str | None = None
    priority: str | None = None
    due_before: str | None = None
    due_after: str | None = None
    terms: tuple[str, ...] = ()
    sort: str = "-created"
    limit: int = 50
    cursor: str | None = None


def encode_cursor(sort: str, task: Task) -> str:
    raw = orjson.dumps([sort, sort_key(task, sort), task["id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, key, task_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError("invalid", "cursor is not one this server issued") from None
    if kind != sort:
        raise ApiError("invalid", "cursor belongs to another sort order; start again without it")
    if not isinstance(task_id, str) or not isinstance(key, str | int) or isinstance(key, bool):
        raise ApiError("invalid", "cursor is not one this server issued")
    return key, task_id


class TaskIds:
    """Random (version 4) UUIDs in their usual text form, cut from a 4 kB read of
    os.urandom: one system call per 256 ids, and about 2 instead of 6 us per id."""

    def __init__(self) -> None:
        self._random = RandomBytes(4096)

    def __call__(self) -> str:
        raw = bytearray(self._random.take(16))
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_task_document(user_id: str, client_id: str | None, fields: dict[str, Any],
                      now: str, new_id: Callable[[], str]) -> dict[str, Any]:
    """The document of a task being created in the user's personal scope."""
    return {"id": client_id or new_id(), "owner": user_id,
            "scope": scopes.personal_scope(user_id), **fields,
            "created_at": now, "updated_at": now}


def task_event(kind: str, task: Task, origin: str | None, ts: str) -> dict[str, Any]:
    """The event of a committed change to `task` (DESIGN.md's envelope)."""
    return {"type": kind, "scope": task["scope"], "seq": task["seq"], "task": task,
            "origin": origin, "ts": ts}


@dataclass(frozen=True)
class NewTask:
    """One create of `TaskService.create_many`: validated fields, as `create` takes them."""
    user_id: str
    fields: dict[str, Any]
    client_id: str | None = None
    mutation_id: str | None = None


class TaskService:
    """Writes and reads of tasks.

    A write that fails as `unavailable` (the store timed out, say) may still have
    committed: a SQLite batch already running, a MongoDB commit whose answer was lost.
    Its event was then never published. So after such a failure the service reads the
    scope's head once the store answers again and publishes a `scope:head` notice;
    every socket whose cursor is behind it repairs from the store. A retried create that
    finds the task already there publishes the same notice, since the first attempt's
    event may never have gone out. Notices are cheap and idempotent: a feed that is
    up to date ignores them.
    """

    def __init__(self, store: Store, broker: Broker,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.broker = broker
        self._clock = clock
        self._new_id = TaskIds()
        self._reconciling: dict[str, asyncio.Task[None]] = {}
        self._resync_pending: asyncio.Task[None] | None = None
        self.reconciliations = 0

    async def close(self) -> None:
        pending = [*self._reconciling.values(), self._resync_pending]
        for task in pending:
            if task is not None:
                task.cancel()
        for task in pending:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _now(self) -> str:
        return iso(self._clock())

    def _publish(self, kind: str, task: Task, origin: str | None, ts: str) -> None:
        self.broker.publish(task_event(kind, task, origin, ts))

    def _publish_head(self, scope: str, seq: int) -> None:
        self.broker.publish({"type": "scope:head", "scope": scope, "seq": seq})

    async def _guarded(self, scopes_written: tuple[str, ...], write: Awaitable[Any]) -> Any:
        try:
            return await write
        except ApiError as exc:
            if exc.code == "unavailable":
                for scope in scopes_written:
                    self._reconcile(scope)
            raise

    def _reconcile(self, scope: str) -> None:
        if scope in self._reconciling:
            return
        if len(self._reconciling) >= RECONCILE_MAX_SCOPES:
            if self._resync_pending is None:
                self._resync_pending = asyncio.ensure_future(self._resync_when_back(scope))
            return
        task = asyncio.ensure_future(self._publish_head_when_back(scope))
        self._reconciling[scope] = task
        task.add_done_callback(lambda _: self._reconciling.pop(scope, None))

    async def _head_when_back(self, scope: str) -> int | None:
        for delay in RECONCILE_BACKOFF:
            await asyncio.sleep(delay)
            try:
                return await self.store.settled_head(scope)
            except ApiError:
                continue
        log.warning("scope %s: store still unavailable; its sockets repair on the next "
                    "change or reconnect", scope)
        return None

    async def _publish_head_when_back(self, scope: str) -> None:
        head = await self._head_when_back(scope)
        if head is not None:
            self.reconciliations += 1
            self._publish_head(scope, head)

    async def _resync_when_back(self, scope: str) -> None:
        try:
            if await self._head_when_back(scope) is not None:
                self.reconciliations += 1
                self.broker.publish({"type": "control:resync"})
        finally:
            self._resync_pending = None

    # -- writes ------------------------------------------------------------------

    async def create(self, user_id: str, client_id: str | None, fields: dict[str, Any],
                     mutation_id: str | None = None) -> tuple[Task, bool]:
        now = self._now()
        task = new_task_document(user_id, client_id, fields, now, self._new_id)
        stored, created = await self._guarded(
            (task["scope"],), self.store.create_task(task))
        self._announce_create(stored, created, mutation_id, now)
        return stored, created

    def _announce_create(self, stored: Task, created: bool, mutation_id: str | None,
                         now: str) -> None:
        if created:
            self._publish("task:created", stored, mutation_id, now)
        else:  # a retry: its first attempt may have committed without its event going out
            self._publish_head(stored["scope"], stored["seq"])

    async def create_many(self, items: Sequence[NewTask]) -> list[CreateOutcome]:
        """`create` for each item, in order, through one store call: the store commits them
        together and assigns each scope's seqs in this order, then their events are published
        in the same order. Each item's outcome is its own ((task, created) or the ApiError it
        failed with); nothing is published before the commit, and nothing of an item that
        failed. Costs far less per task than as many `create`s (one handoff to the store,
        one transaction, a few statements for the lot)."""
        now = self._now()
        tasks = [new_task_document(item.user_id, item.client_id, item.fields, now, self._new_id)
                 for item in items]
        if not tasks:
            return []
        written = tuple(dict.fromkeys(task["scope"] for task in tasks))
        try:
            outcomes = await self._guarded(written, self.store.create_tasks(tasks))
        except ApiError as exc:
            return [exc] * len(tasks)
        for item, task, outcome in zip(items, tasks, outcomes, strict=True):
            if isinstance(outcome, ApiError):
                if outcome.code == "unavailable":
                    self._reconcile(task["scope"])
                continue
            stored, created = outcome
            self._announce_create(stored, created, item.mutation_id, now)
        return outcomes

    async def update(self, user_id: str, task_id: str, changes: dict[str, Any],
                     expected_version: int | None = None,
                     mutation_id: str | None = None) -> Task:
        now = self._now()
        writable = scopes.writable_scopes(user_id)
        task, changed = await self._guarded(writable, self.store.update_task(
            writable, task_id, changes, expected_version, now))
        if changed:
            self._publish("task:updated", task, mutation_id, now)
        return task

    async def delete(self, user_id: str, task_id: str, expected_version: int | None = None,
                     mutation_id: str | None = None) -> Task:
        now = self._now()
        writable = scopes.writable_scopes(user_id)
        gone = await self._guarded(writable, self.store.delete_task(
            writable, task_id, expected_version, now))
        self._publish("task:deleted", gone, mutation_id, now)
        return gone

    # -- reads -------------------------------------------------------------------

    async def get(self, user_id: str, task_id: str) -> Task:
        task = await self.store.get_task(scopes.readable_scopes(user_id), task_id)
        if task is None:
            raise not_found()
        return task

    async def list(self, user_id: str, request: ListRequest) -> tuple[list[Task], str | None]:
        descending = request.sort.startswith("-")
        sort = request.sort[1:] if descending else request.sort
        if sort not in SORT_FIELDS:
            raise ApiError("invalid", "sort must be one of " +
                           ", ".join(f"{f}, -{f}" for f in SORT_FIELDS))
        after = decode_cursor(request.cursor, sort) if request.cursor else None
        query = TaskQuery(
            scopes=scopes.readable_scopes(user_id), status=request.status,
            priority=request.priority, due_before=request.due_before,
            due_after=request.due_after, terms=request.terms, sort=sort,
            descending=descending, limit=request.limit + 1, after=after,
        )
        tasks = await self.store.list_tasks(query)
        more = len(tasks) > request.limit
        tasks = tasks[: request.limit]
        return tasks, encode_cursor(sort, tasks[-1]) if more else None

    async def stats(self, user_id: str) -> dict[str, Any]:
        now = self._clock()
        return await self.store.task_stats(
            scopes.readable_scopes(user_id), iso(now), iso(now + timedelta(days=7)))

    async def sync(self, user_id: str, scope: str, since: int, limit: int) -> SyncAnswer:
        if scope not in scopes.readable_scopes(user_id):
            raise ApiError("forbidden", "you may not read this scope")
        return await self.store.sync(scope, since, limit)
