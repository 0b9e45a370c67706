"""The persistence contract (store/base.py), run against every backend.

Every test runs on SQLite and on MongoDB (SecantusDB here, or the server named by
MONGODB_URI); on MongoDB through two store instances sharing one database, as two
server instances would.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime.errors import ApiError
from store import Store, TaskQuery, store_from_url

from mongo_server import TwoInstances, mongodb_uri, mongodb_url  # noqa: F401  (fixtures)

# sqlite answers short reads on the event loop (store/sqlite_inline.py); sqlite-threads
# sends every read through the reader threads: both paths must keep the contract.
BACKENDS = ["sqlite", "sqlite-threads", "mongodb"]
T0 = "2026-01-01T00:00:00.000Z"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Any
    if request.param == "mongodb":  # two instances sharing a fresh database per test
        backend = TwoInstances(request.getfixturevalue("mongodb_url"))
    elif request.param == "sqlite-threads":
        backend = store_from_url(f"sqlite:///{tmp_path}/contract.db?inline_read_ms=0")
    else:
        backend = store_from_url(f"sqlite:///{tmp_path}/contract.db")
    await backend.open()
    yield backend
    await backend.close()


def ts(n: int) -> str:
    """A timestamp n minutes after T0 (n < 60*24)."""
    return f"2026-01-01T{n // 60:02d}:{n % 60:02d}:00.000Z"


def new_task(task_id: str, owner: str = "u1", minute: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id, "owner": owner, "scope": f"user:{owner}", "title": f"task {task_id}",
        "description": "", "status": "todo", "priority": "medium", "due_date": None,
        "created_at": ts(minute), "updated_at": ts(minute), **fields,
    }


async def make(store: Store, task_id: str, **kw: Any) -> dict[str, Any]:
    task, created = await store.create_task(new_task(task_id, **kw))
    assert created
    return task


# -- users and tokens ----------------------------------------------------------------


async def test_users_are_unique_by_email(store: Store) -> None:
    user = {"id": "u1", "email": "a@example.com", "name": "A", "password_hash": "h",
            "created_at": T0}
    assert await store.create_user(user) == user
    assert await store.user_by_email("a@example.com") == user
    assert await store.user_by_id("u1") == user
    assert await store.user_by_id("nobody") is None
    with pytest.raises(ApiError) as caught:
        await store.create_user({**user, "id": "u2"})
    assert caught.value.code == "conflict"
    assert await store.user_by_id("u2") is None
    await store.set_password_hash("u1", "h2")
    assert await store.user_by_email("a@example.com") == {**user, "password_hash": "h2"}


async def test_revocations_are_kept_until_they_expire(store: Store) -> None:
    await store.revoke_token("j1", expires_at=1000.0)
    await store.revoke_token("j2", expires_at=5000.0)
    await store.revoke_token("j1", expires_at=1000.0)  # twice is fine
    assert await store.is_revoked("j1") and await store.is_revoked("j2")
    assert not await store.is_revoked("j3")
    assert await store.revocations(now_epoch=500.0) == {"j1": 1000.0, "j2": 5000.0}
    assert await store.revocations(now_epoch=2000.0) == {"j2": 5000.0}
    await store.purge(tombstones_before=T0, now_epoch=2000.0)
    assert not await store.is_revoked("j1")
    assert await store.is_revoked("j2")


# -- seq and version -----------------------------------------------------------------


async def test_seq_counts_per_scope_and_version_per_task(store: Store) -> None:
    a1 = await make(store, "a1", owner="a")
    b1 = await make(store, "b1", owner="b")
    a2 = await make(store, "a2", owner="a")
    assert (a1["seq"], a2["seq"], b1["seq"]) == (1, 2, 1)
    assert a1["version"] == 1 and a1["deleted"] is False
    updated, changed = await store.update_task(["user:a"], "a1", {"title": "new"}, None, ts(1))
    assert changed and updated["version"] == 2 and updated["seq"] == 3
    assert updated["updated_at"] == ts(1) and updated["created_at"] == ts(0)
    gone = await store.delete_task(["user:a"], "a1", None, ts(2))
    assert gone == {"id": "a1", "scope": "user:a", "seq": 4, "version": 3, "deleted": True}
    assert (await make(store, "b2", owner="b"))["seq"] == 2


async def test_create_is_idempotent_for_the_same_owner(store: Store) -> None:
    first = await make(store, "t1", title="original")
    again, created = await store.create_task(new_task("t1", title="retried"))
    assert not created and again == first
    with pytest.raises(ApiError) as caught:
        await store.create_task(new_task("t1", owner="intruder"))
    assert caught.value.code == "conflict"
    answer = await store.sync("user:u1", 0, 100)
    assert [c["id"] for c in answer.changes] == ["t1"] and answer.seq == 1
    assert (await store.sync("user:intruder", 0, 100)).changes == []


async def test_create_tasks_commits_a_batch_in_order_with_an_outcome_per_item(
        store: Store) -> None:
    await make(store, "kept", owner="a")
    await make(store, "theirs", owner="b")
    batch = [
        new_task("a1", owner="a"), new_task("b1", owner="b"),
        new_task("kept", owner="a", title="a retry"),  # already there: (task, False)
        new_task("theirs", owner="a"),  # someone else's id: a conflict, for this item only
        new_task("a2", owner="a"), new_task("a1", owner="a"),  # a retry within the batch
        new_task("a1", owner="b"),  # the id taken earlier in the same batch
        new_task("a3", owner="a", description="Café menu"),
    ]
    outcomes = await store.create_tasks(batch)
    assert len(outcomes) == len(batch)
    assert [o.code if isinstance(o, ApiError) else (o[0]["id"], o[0]["seq"], o[1])
            for o in outcomes] == [
        ("a1", 2, True), ("b1", 2, True), ("kept", 1, False), "conflict",
        ("a2", 3, True), ("a1", 2, False), "conflict", ("a3", 4, True)]
    first = outcomes[0]
    assert not isinstance(first, ApiError)
    assert first[0] == {**batch[0], "version": 1, "seq": 2, "deleted": False}
    # Committed as answered: sync sees the scope's changes in seq order, nothing else.
    answer = await store.sync("user:a", 0, 100)
    assert [(c["id"], c["seq"]) for c in answer.changes] == [
        ("kept", 1), ("a1", 2), ("a2", 3), ("a3", 4)]
    assert answer.seq == 4 and await store.head("user:b") == 2
    found = await store.list_tasks(TaskQuery(scopes=("user:a",), terms=("cafe",)))
    assert [t["id"] for t in found] == ["a3"]  # the search index holds the batch too
    assert await store.create_tasks([]) == []


async def test_create_tasks_keeps_many_scopes_apart(store: Store) -> None:
    batch = [new_task(f"t{n}", owner=f"u{n % 7}") for n in range(150)]
    outcomes = await store.create_tasks(batch)
    seqs: dict[str, list[int]] = {}
    for outcome in outcomes:
        assert not isinstance(outcome, ApiError)
        task, created = outcome
        assert created
        seqs.setdefault(task["scope"], []).append(task["seq"])
    assert all(found == list(range(1, len(found) + 1)) for found in seqs.values())
    assert await store.heads([f"user:u{n}" for n in range(7)]) == {
        f"user:u{n}": len(range(n, 150, 7)) for n in range(7)}


async def test_a_deleted_id_cannot_be_created_again(store: Store) -> None:
    await make(store, "t1")
    await store.delete_task(["user:u1"], "t1", None, ts(1))
    with pytest.raises(ApiError) as caught:
        await store.create_task(new_task("t1"))
    assert caught.value.code == "conflict"


async def test_update_without_effect_changes_nothing(store: Store) -> None:
    task = await make(store, "t1", title="same")
    again, changed = await store.update_task(["user:u1"], "t1", {"title": "same"}, None, ts(5))
    assert not changed and again == task
    assert (await store.sync("user:u1", 0, 10)).seq == 1


async def test_expected_version_applies_once(store: Store) -> None:
    await make(store, "t1")
    updated, _ = await store.update_task(["user:u1"], "t1", {"status": "done"}, 1, ts(1))
    assert updated["version"] == 2
    with pytest.raises(ApiError) as caught:
        await store.update_task(["user:u1"], "t1", {"status": "done"}, 1, ts(2))
    assert caught.value.code == "conflict"
    assert caught.value.details["current"] == updated
    with pytest.raises(ApiError) as caught:
        await store.delete_task(["user:u1"], "t1", 1, ts(2))
    assert caught.value.code == "conflict"
    assert (await store.get_task(["user:u1"], "t1")) == updated


async def test_tasks_outside_the_callers_scopes_do_not_exist(store: Store) -> None:
    await make(store, "t1", owner="a")
    assert await store.get_task(["user:b"], "t1") is None
    for attempt in (
        store.update_task(["user:b"], "t1", {"title": "x"}, None, ts(1)),
        store.delete_task(["user:b"], "t1", None, ts(1)),
        store.update_task(["user:a"], "missing", {"title": "x"}, None, ts(1)),
    ):
        with pytest.raises(ApiError) as caught:
            await attempt
        assert caught.value.code == "not_found"
    assert (await store.get_task(["user:a"], "t1"))["title"] == "task t1"
    assert await store.list_tasks(TaskQuery(scopes=("user:b",))) == []


async def test_deleted_tasks_are_gone_except_from_sync(store: Store) -> None:
    await make(store, "t1", title="secret plan", description="details")
    await store.delete_task(["user:u1"], "t1", None, ts(1))
    assert await store.get_task(["user:u1"], "t1") is None
    assert await store.list_tasks(TaskQuery(scopes=("user:u1",))) == []
    assert await store.list_tasks(TaskQuery(scopes=("user:u1",), terms=("secret",))) == []
    for attempt in (store.update_task(["user:u1"], "t1", {"title": "x"}, None, ts(2)),
                    store.delete_task(["user:u1"], "t1", None, ts(2))):
        with pytest.raises(ApiError) as caught:
            await attempt
        assert caught.value.code == "not_found"
    changes = (await store.sync("user:u1", 0, 10)).changes
    assert changes == [{"id": "t1", "scope": "user:u1", "seq": 2, "version": 2,
                        "deleted": True}]


# -- listing -------------------------------------------------------------------------


async def test_filters(store: Store) -> None:
    await make(store, "a", status="done", priority="high", due_date=ts(10))
    await make(store, "b", status="todo", priority="high", due_date=ts(20))
    await make(store, "c", status="todo", priority="low")
    await make(store, "other", owner="u2", status="done", priority="high")

    async def ids(**kw: Any) -> set[str]:
        return {t["id"] for t in await store.list_tasks(TaskQuery(scopes=("user:u1",), **kw))}

    assert await ids() == {"a", "b", "c"}
    assert await ids(status="todo") == {"b", "c"}
    assert await ids(priority="high") == {"a", "b"}
    assert await ids(status="todo", priority="high") == {"b"}
    assert await ids(due_before=ts(15)) == {"a"}
    assert await ids(due_after=ts(15)) == {"b"}
    assert await ids(due_after=ts(5), due_before=ts(25)) == {"a", "b"}


async def test_search_matches_word_prefixes_without_accents(store: Store) -> None:
    await make(store, "a", title="Buy coffee beans", description="at the Café")
    await make(store, "b", title="Write report", description="quarterly numbers")
    await make(store, "c", title="Coffee with Ana")
    await make(store, "d", owner="u2", title="coffee elsewhere")

    async def ids(*terms: str) -> set[str]:
        query = TaskQuery(scopes=("user:u1",), terms=terms)
        return {t["id"] for t in await store.list_tasks(query)}

    assert await ids("coffee") == {"a", "c"}
    assert await ids("cof") == {"a", "c"}
    assert await ids("cafe") == {"a"}
    assert await ids("coffee", "ana") == {"c"}
    assert await ids("quarter") == {"b"}
    assert await ids("nothing") == set()
    await store.update_task(["user:u1"], "b", {"title": "Coffee report"}, None, ts(1))
    assert await ids("coffee") == {"a", "b", "c"}


@pytest.mark.parametrize("sort", ["created", "updated", "due", "priority"])
@pytest.mark.parametrize("descending", [False, True])
async def test_keyset_pages_cover_everything_in_order(store: Store, sort: str,
                                                      descending: bool) -> None:
    rng = random.Random(7)
    for n in range(23):
        due = ts(rng.randrange(100)) if n % 3 else None
        await make(store, f"t{n:02d}", minute=rng.randrange(50),
                   priority=rng.choice(["low", "medium", "high"]), due_date=due)
    from realtime.tasks import sort_key

    seen: list[dict[str, Any]] = []
    after = None
    for _ in range(10):
        page = await store.list_tasks(TaskQuery(scopes=("user:u1",), sort=sort,
                                                descending=descending, limit=5, after=after))
        seen.extend(page)
        if len(page) < 5:
            break
        after = (sort_key(page[-1], sort), page[-1]["id"])
    assert sorted(t["id"] for t in seen) == [f"t{n:02d}" for n in range(23)]
    keys = [(sort_key(t, sort), t["id"]) for t in seen]
    assert keys == sorted(keys, reverse=descending)
    if sort == "due":
        undated = [t["due_date"] is None for t in seen]
        assert undated == sorted(undated, reverse=descending)  # no due date sorts last


async def test_stats(store: Store) -> None:
    now, week_end = ts(100), ts(100 + 60)
    await make(store, "overdue", due_date=ts(50))
    await make(store, "done-late", status="done", due_date=ts(50))
    await make(store, "soon", priority="high", due_date=ts(120))
    await make(store, "later", status="in_progress", priority="low", due_date=ts(500))
    await make(store, "undated", priority="high")
    await make(store, "gone", due_date=ts(50))
    await store.delete_task(["user:u1"], "gone", None, ts(1))
    await make(store, "not-mine", owner="u2", due_date=ts(50))
    stats = await store.task_stats(["user:u1"], now, week_end)
    assert stats == {
        "total": 5,
        "by_status": {"todo": 3, "in_progress": 1, "done": 1},
        "by_priority": {"low": 1, "medium": 2, "high": 2},
        "overdue": 1, "due_this_week": 1,
    }


# -- sync ----------------------------------------------------------------------------


async def test_sync_pages_through_latest_states(store: Store) -> None:
    for n in range(5):
        await make(store, f"t{n}")
    await store.update_task(["user:u1"], "t0", {"title": "moved to the end"}, None, ts(1))
    answer = await store.sync("user:u1", 0, 3)
    assert [c["id"] for c in answer.changes] == ["t1", "t2", "t3"]
    assert answer.more and answer.seq == 4 and not answer.reset
    answer = await store.sync("user:u1", answer.seq, 3)
    assert [(c["id"], c["seq"]) for c in answer.changes] == [("t4", 5), ("t0", 6)]
    assert not answer.more and answer.seq == 6
    answer = await store.sync("user:u1", 6, 3)
    assert answer.changes == [] and answer.seq == 6 and not answer.more


async def test_head_is_the_latest_seq(store: Store) -> None:
    assert await store.head("user:u1") == 0
    await make(store, "t1")
    await store.update_task(["user:u1"], "t1", {"title": "x"}, None, ts(1))
    await make(store, "t2", owner="u2")
    assert await store.head("user:u1") == 2 and await store.head("user:u2") == 1


async def test_settled_head_comes_after_the_writes_already_under_way(store: Store) -> None:
    """Writes in flight when settled_head is asked for are counted, not raced."""
    one = getattr(store, "instances", [store])[0]  # one store object (one instance)
    assert await one.settled_head("user:u1") == 0
    writes = [asyncio.ensure_future(make(one, f"t{n}")) for n in range(8)]
    await asyncio.sleep(0)  # every write has been handed to the store
    head = await one.settled_head("user:u1")
    await asyncio.gather(*writes)
    assert head == 8 == await one.head("user:u1")


async def test_sync_of_an_unknown_scope_is_empty(store: Store) -> None:
    answer = await store.sync("user:nobody", 0, 10)
    assert answer.to_dict() == {"scope": "user:nobody", "seq": 0, "changes": [],
                                "more": False, "reset": False}


async def test_a_cursor_ahead_of_the_server_resets(store: Store) -> None:
    await make(store, "t1")
    answer = await store.sync("user:u1", 99, 10)
    assert answer.reset and [c["id"] for c in answer.changes] == ["t1"] and answer.seq == 1


async def test_purged_tombstones_reset_older_cursors(store: Store) -> None:
    await make(store, "keep")                                     # seq 1
    await make(store, "old")                                      # seq 2
    await store.delete_task(["user:u1"], "old", None, ts(10))     # seq 3
    await make(store, "new")                                      # seq 4
    await make(store, "young")                                    # seq 5
    await store.delete_task(["user:u1"], "young", None, ts(30))   # seq 6
    assert await store.purge(tombstones_before=ts(20), now_epoch=0) == 1
    stale = await store.sync("user:u1", 2, 10)
    assert stale.reset
    assert {c["id"] for c in stale.changes} == {"keep", "new", "young"}
    fresh = await store.sync("user:u1", 3, 10)
    assert not fresh.reset and [c["id"] for c in fresh.changes] == ["new", "young"]
    assert fresh.changes[-1]["deleted"] is True


async def check_concurrent_sync(store: Store, seed: int) -> None:
    """20 writers create, update and delete in one scope while readers keep syncing
    from their cursors; each reader's replica must equal the final state, and the
    seqs handed out must be exactly 1..N with no gap and no repeat."""
    scope = "user:u1"
    rng = random.Random(seed)
    seqs: list[int] = []
    done = asyncio.Event()

    async def writer(w: int) -> None:
        mine: list[str] = []
        for i in range(15):
            action = rng.random()
            if not mine or action < 0.5:
                task = await make(store, f"w{w}-{i}")
                mine.append(task["id"])
            elif action < 0.8:
                task, _ = await store.update_task([scope], rng.choice(mine),
                                                  {"title": f"v{i}"}, None, ts(i))
            else:
                task = await store.delete_task([scope], mine.pop(), None, ts(i))
            seqs.append(task["seq"])

    async def reader() -> dict[str, Any]:
        replica: dict[str, Any] = {}
        cursor = 0
        while True:
            finished = done.is_set()
            answer = await store.sync(scope, cursor, rng.choice([1, 3, 50]))
            for change in answer.changes:
                assert change["seq"] > cursor
                replica[change["id"]] = change
            cursor = answer.seq
            if finished and not answer.more:
                return replica
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.gather(*(writer(w) for w in range(20)))
    done.set()
    replicas = await asyncio.gather(*readers)

    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    truth = {c["id"]: c for c in (await store.sync(scope, 0, 10_000)).changes}
    for replica in replicas:
        assert replica == truth, "a reader missed a committed change"


async def test_concurrent_writers_never_hide_a_change_from_sync(store: Store) -> None:
    """DESIGN.md 5.3: a change committed before a sync answer began is never missing."""
    await check_concurrent_sync(store, seed=3)


async def test_the_concurrency_check_catches_seq_allocated_before_commit(
        tmp_path: Path) -> None:
    """The check above can fail: a store that takes seq in one transaction and writes
    the task in a later one (the trap of DESIGN.md 5.3) is caught by it."""
    from store import sqlite

    class SeqBeforeCommit(sqlite.SQLiteStore):
        async def create_task(self, task: dict[str, Any]) -> tuple[dict[str, Any], bool]:
            seq = await self._write(sqlite._next_seq, task["scope"])
            await asyncio.sleep(random.random() / 500)  # a slow writer
            return await self._write(_insert_at, task, seq), True

    def _insert_at(db: Any, task: dict[str, Any], seq: int) -> dict[str, Any]:
        db.execute(
            "INSERT INTO tasks(id, owner, scope, title, description, status, priority, prio, "
            "due_date, due_key, created_at, updated_at, version, seq) "
            "VALUES (?, ?, ?, ?, '', 'todo', 'medium', 1, NULL, '~', ?, ?, 1, ?)",
            (task["id"], task["owner"], task["scope"], task["title"], task["created_at"],
             task["updated_at"], seq))
        return {**task, "version": 1, "seq": seq, "deleted": False}

    broken = SeqBeforeCommit(f"sqlite:///{tmp_path}/broken.db")
    await broken.open()
    try:
        with pytest.raises(AssertionError, match="missed a committed change"):
            for seed in range(5):
                await check_concurrent_sync(broken, seed)
                broken_path = tmp_path / f"broken{seed}.db"
                await broken.close()
                broken = SeqBeforeCommit(f"sqlite:///{broken_path}")
                await broken.open()
    finally:
        await broken.close()


async def test_heads_reads_many_scopes_in_one_call(store: Store) -> None:
    await make(store, "t1")
    await store.update_task(["user:u1"], "t1", {"title": "x"}, None, ts(1))
    await make(store, "t2", owner="u2")
    assert await store.heads(["user:u1", "user:u2", "user:none"]) == {
        "user:u1": 2, "user:u2": 1, "user:none": 0}
    assert await store.heads([]) == {}
    many = [f"user:x{n}" for n in range(1200)] + ["user:u1"]  # past one query's parameters
    heads = await store.heads(many)
    assert len(heads) == 1201 and heads["user:u1"] == 2 and heads["user:x7"] == 0
