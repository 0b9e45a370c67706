"""TaskService.create_many: the write path for a batch of creates (realtime/tasks.py).

One store call commits the batch; only then, and in the batch's order, the broker
publishes an event per created task; an item that failed publishes nothing and reports
its own error."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from realtime.broker.memory import MemoryBroker
from realtime.errors import ApiError, unavailable
from realtime.tasks import NewTask, TaskIds, TaskService
from store.base import CreateOutcome, Task
from store.sqlite import SQLiteStore

FIELDS = {"description": "", "status": "todo", "priority": "medium", "due_date": None}


def item(user: str, title: str, client_id: str | None = None,
         mutation_id: str | None = None) -> NewTask:
    return NewTask(user, {**FIELDS, "title": title}, client_id, mutation_id)


class Recorder:
    """A broker subscriber that also looks, at publish time, at what the file holds (a
    connection of its own: it sees only committed rows)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.events: list[dict[str, Any]] = []
        self.committed_when_published: list[bool] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["type"] == "task:created":
            row = self.db.execute("SELECT seq FROM tasks WHERE id = ?",
                                  (event["task"]["id"],)).fetchone()
            self.committed_when_published.append(row == (event["seq"],))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[TaskService, Recorder]]:
    store = SQLiteStore(f"sqlite:///{tmp_path}/b.db")
    await store.open()
    broker = MemoryBroker()
    await broker.start()
    recorder = Recorder(tmp_path / "b.db")
    broker.subscribe(recorder)
    tasks = TaskService(store, broker)
    yield tasks, recorder
    await tasks.close()
    await broker.stop()
    await store.close()
    recorder.db.close()


async def test_events_follow_the_commit_in_the_batchs_order(
        service: tuple[TaskService, Recorder]) -> None:
    tasks, recorder = service
    outcomes = await tasks.create_many([
        item("alice", "a1", mutation_id="m-1"), item("bob", "b1"), item("alice", "a2"),
        item("alice", "a3", mutation_id="m-3")])
    assert [(e["type"], e["scope"], e["seq"], e["task"]["title"], e["origin"])
            for e in recorder.events] == [
        ("task:created", "user:alice", 1, "a1", "m-1"),
        ("task:created", "user:bob", 1, "b1", None),
        ("task:created", "user:alice", 2, "a2", None),
        ("task:created", "user:alice", 3, "a3", "m-3")]
    assert recorder.committed_when_published == [True] * 4
    assert [o[0] for o in outcomes if not isinstance(o, ApiError)] == [
        e["task"] for e in recorder.events]
    assert len({e["ts"] for e in recorder.events}) == 1  # one commit, one time


async def test_a_failed_item_reports_its_error_and_publishes_nothing(
        service: tuple[TaskService, Recorder]) -> None:
    tasks, recorder = service
    await tasks.create("bob", "bobs", {**FIELDS, "title": "bob's"})
    recorder.events.clear()
    outcomes = await tasks.create_many([
        item("alice", "a1"), item("alice", "not hers", client_id="bobs"),
        item("bob", "retried", client_id="bobs"), item("alice", "a2")])
    conflict = outcomes[1]
    assert isinstance(conflict, ApiError) and conflict.code == "conflict"
    assert [(e["type"], e["scope"], e["seq"]) for e in recorder.events] == [
        ("task:created", "user:alice", 1),
        ("scope:head", "user:bob", 1),  # a retried create re-announces its seq
        ("task:created", "user:alice", 2)]


class FailingStore:
    """Answers every batch with `unavailable`, as a store that timed out would."""

    def __init__(self) -> None:
        self.calls: list[Sequence[Task]] = []

    async def create_tasks(self, tasks: Sequence[Task]) -> list[CreateOutcome]:
        self.calls.append(tasks)
        raise unavailable("the store did not answer in time")


async def test_a_store_failure_is_every_items_error_and_their_scopes_reconcile() -> None:
    broker = MemoryBroker()
    events: list[dict[str, Any]] = []
    broker.subscribe(events.append)
    store = FailingStore()
    tasks = TaskService(store, broker)  # a stand-in store: create_tasks is all it uses
    try:
        outcomes = await tasks.create_many([item("alice", "a"), item("bob", "b"),
                                            item("alice", "c")])
        assert [o.code for o in outcomes if isinstance(o, ApiError)] == ["unavailable"] * 3
        assert events == [] and len(store.calls) == 1
        # The batch may have committed: each scope's head is read and announced once back.
        assert set(tasks._reconciling) == {"user:alice", "user:bob"}
    finally:
        await tasks.close()


async def test_an_empty_batch_does_nothing(service: tuple[TaskService, Recorder]) -> None:
    tasks, recorder = service
    assert await tasks.create_many([]) == []
    assert recorder.events == []


def test_new_task_ids_are_random_uuid4s_in_their_usual_form() -> None:
    new_id = TaskIds()
    ids = [new_id() for _ in range(1000)]  # several reads of the random pool
    assert len(set(ids)) == 1000
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
