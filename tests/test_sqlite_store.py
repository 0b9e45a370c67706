"""What is particular to the SQLite backend: group commit, schema upgrade, failures."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime.errors import ApiError
from store import TaskQuery
from store.sqlite import SQLiteStore

from test_store_contract import new_task
from waiting import eventually, poll_until


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_concurrent_writes_share_commits_and_keep_seq_order(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/g.db") as store:
        results = await asyncio.gather(
            *(store.create_task(new_task(f"t{n}")) for n in range(200)),
            store.create_task(new_task("t7")),  # a duplicate id inside the same batches
        )
        seqs = sorted(task["seq"] for task, created in results if created)
        assert seqs == list(range(1, 201))
        assert sum(1 for _, created in results if not created) == 1
        commits, writes = store.group_commits
        assert writes == 201 and commits < writes  # they were grouped


async def test_a_failing_write_rolls_back_only_itself(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/f.db") as store:
        await store.create_task(new_task("mine", owner="a"))
        outcomes = await asyncio.gather(
            store.create_task(new_task("x1")),
            store.create_task(new_task("mine", owner="b")),  # conflict: someone else's id
            store.create_task(new_task("x2")),
            return_exceptions=True)
        assert isinstance(outcomes[1], ApiError) and outcomes[1].code == "conflict"
        assert outcomes[0][0]["seq"] == 1 and outcomes[2][0]["seq"] == 2
        assert await store.head("user:b") == 0  # the failed write took no seq


async def _queued_behind_a_gate(store: SQLiteStore, *calls: Any) -> list[Any]:
    """Run the store calls so that they all wait in the writer's queue together: the writer
    is held inside a transaction until every one of them is queued."""
    writer = store._writer
    assert writer is not None
    entered, gate = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> bool:
        entered.set()
        return gate.wait(10)

    held = writer.submit(hold, ())
    assert entered.wait(10)
    running = [asyncio.ensure_future(call) for call in calls]
    await eventually(lambda: writer._queue.qsize() == len(calls), 10, "writes queued")
    gate.set()
    assert held.result(10) is True
    return list(await asyncio.gather(*running, return_exceptions=True))


async def test_queued_creates_run_as_one_call_in_order(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/m.db") as store:
        assert store._writer is not None
        results = await _queued_behind_a_gate(
            store, *(store.create_task(new_task(f"t{n}")) for n in range(5)),
            store.create_tasks([new_task("t5"), new_task("t1"), new_task("o1", owner="o")]),
            store.create_task(new_task("t6")))
        assert [task["seq"] for task, _ in results[:5]] == [1, 2, 3, 4, 5]
        batch = results[5]
        assert [(task["id"], task["seq"], created) for task, created in batch] == [
            ("t5", 6, True), ("t1", 2, False), ("o1", 1, True)]
        assert results[6][0]["seq"] == 7
        assert store._writer.merged == 7 and store._writer.merge_fallbacks == 0
        assert store.group_commits == (2, 8)  # the gate's transaction, then all of these
        answer = await store.sync("user:u1", 0, 100)
        assert [c["id"] for c in answer.changes] == [f"t{n}" for n in range(7)]


async def test_a_merged_call_that_fails_is_run_again_call_by_call(tmp_path: Path) -> None:
    """One caller's bad item fails that caller alone; the others' writes all commit, with
    their seqs in order and no gap."""
    async with opened(f"sqlite:///{tmp_path}/x.db") as store:
        assert store._writer is not None
        results = await _queued_behind_a_gate(
            store, store.create_task(new_task("a")),
            store.create_tasks([new_task("b"), new_task("bad", priority="urgent")]),
            store.create_task(new_task("c")))
        assert results[0][0]["seq"] == 1 and results[2][0]["seq"] == 2
        assert isinstance(results[1], KeyError)  # the whole call of the bad item failed
        assert store._writer.merge_fallbacks == 1
        answer = await store.sync("user:u1", 0, 100)
        assert [(c["id"], c["seq"]) for c in answer.changes] == [("a", 1), ("c", 2)]


async def test_a_batch_of_creates_is_one_transaction(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/o.db") as store:
        outcomes = await store.create_tasks(
            [new_task(f"t{n}", owner=f"u{n % 3}") for n in range(200)])
        assert all(not isinstance(o, ApiError) and o[1] for o in outcomes)
        assert store.group_commits == (1, 1)


async def test_the_wal_is_checkpointed_off_the_writer(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/c.db") as store:
        assert store._writer is not None and store._checkpointer is not None
        autocheckpoint = store._writer.submit(
            lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0], ())
        assert autocheckpoint.result(10) == 10_000  # the writer's own: only a backstop
        for start in range(0, 600, 100):
            await store.create_tasks(
                [new_task(f"t{n}", owner=f"u{n % 50}") for n in range(start, start + 100)])
        checkpointer = store._checkpointer
        await eventually(lambda: checkpointer.last is not None and checkpointer.last[1] > 0,
                         10, "a checkpoint of the WAL")
        assert checkpointer.last is not None
        busy, pages, copied = checkpointer.last
        assert busy == 0 and copied == pages


def wal_size(directory: Path) -> int:
    return (directory / "r.db-wal").stat().st_size


def test_the_checkpoint_thread_makes_a_busy_wal_start_over(tmp_path: Path) -> None:
    """Writers that never pause leave a PASSIVE checkpoint always a little behind, and SQLite
    starts the WAL over only once it is wholly copied: without the RESTART step the WAL
    would grow as long as the writes go on."""
    from store.sqlite_writer import Checkpointer

    path = tmp_path / "r.db"

    def connect() -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # only the checkpoint thread copies
        return db

    writer = connect()
    writer.execute("CREATE TABLE t (x BLOB)")
    checkpointer = Checkpointer(connect, pause=0.001, restart_pages=200)
    enough = threading.Event()
    inserted = 0

    def write() -> None:
        nonlocal inserted
        for _ in range(50_000):  # 2 pages or more a commit, never a pause between them
            if enough.is_set():
                return
            writer.execute("INSERT INTO t VALUES (randomblob(5000))")
            inserted += 1
            checkpointer.committed()

    checkpointer.start()
    writing = threading.Thread(target=write)
    writing.start()
    try:
        def running() -> str | None:
            return None if writing.is_alive() else "the writes ended first"

        poll_until(lambda: checkpointer.restarts >= 3 and inserted >= 6000, 60,
                   "three restarts of the WAL", running)
        # From here on the WAL is reused, not grown. (How large it got before the first
        # restart depends on how soon the busy machine ran the checkpoint thread.)
        size_then, inserted_then, restarts_then = wal_size(tmp_path), inserted, \
            checkpointer.restarts
        # A long window: a spell in which the busy machine starves the checkpoint thread
        # grows the WAL once, by what was written meanwhile, and is not repeated per write.
        poll_until(lambda: checkpointer.restarts >= restarts_then + 5
                   and inserted >= inserted_then + 12_000, 60, "five more restarts", running)
        enough.set()
        writing.join(10)
        passed = (inserted - inserted_then) * 2 * 4096  # each insert: 2 pages or more
        assert wal_size(tmp_path) - size_then < passed / 2, (size_then, passed)
    finally:
        enough.set()
        writing.join(10)
        checkpointer.stop()
        writer.close()


async def test_an_older_database_gets_the_per_scope_search_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.create_task(new_task("t1", title="Coffee beans"))
    await store.close()
    # Rewind to the version 1 layout: one full-text index over every scope's tasks.
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("""
        DROP TABLE task_words;
        CREATE VIRTUAL TABLE tasks_fts USING fts5(title, description, content='tasks',
            content_rowid='rid', tokenize='unicode61 remove_diacritics 2');
        INSERT INTO tasks_fts(tasks_fts) VALUES ('rebuild');
        PRAGMA user_version = 0;
    """)
    db.close()
    async with opened(f"sqlite:///{path}") as store:
        found = await store.list_tasks(TaskQuery(scopes=("user:u1",), terms=("coffee",)))
        assert [t["id"] for t in found] == ["t1"]
        await store.create_task(new_task("t2", title="More coffee"))
        found = await store.list_tasks(TaskQuery(scopes=("user:u1",), terms=("coffee",)))
        assert {t["id"] for t in found} == {"t1", "t2"}


# -- reads on the event loop (store/sqlite_inline.py) -----------------------------------

COUNT_TO_TEN_MILLION = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                        "WHERE x < 10000000) SELECT count(*) FROM c")
# A read a thousand times the 1 ms budget that still ends well inside the store's 5 s
# timeout on a slow machine (0.6 s on the 2-core CI machine; ten million took 6.3 s).
COUNT_TO_A_MILLION = COUNT_TO_TEN_MILLION.replace("10000000", "1000000")


async def test_short_reads_are_answered_on_the_event_loop(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/i.db") as store:
        for n in range(5):
            await store.create_task(new_task(f"t{n}"))
        listed = await store.list_tasks(TaskQuery(scopes=("user:u1",)))
        assert {t["id"] for t in listed} == {f"t{n}" for n in range(5)}
        assert await store.head("user:u1") == 5
        answered, moved = store.reads
        assert answered >= 2 and moved == 0


async def test_a_read_over_its_budget_is_finished_on_a_reader_thread(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/b.db?inline_read_ms=1") as store:
        count = await store._read(lambda db: db.execute(COUNT_TO_A_MILLION).fetchone()[0])
        assert count == 1_000_000  # the whole answer, from the pool
        assert store.reads[1] == 1


def test_the_budget_interrupts_a_long_read_long_before_it_would_end(tmp_path: Path) -> None:
    # Counting to ten million takes SQLite well over a second on this machine; with a
    # 5 ms budget the loop gets its thread back almost at once (the bound is loose:
    # this checks that the interruption happens, not how fast).
    from store.sqlite_inline import InlineReader, MovedOffLoop

    reader = InlineReader(sqlite3.connect(tmp_path / "c.db"), budget=0.005)
    started = time.perf_counter()
    with pytest.raises(MovedOffLoop):
        reader.run(lambda db: db.execute(COUNT_TO_TEN_MILLION).fetchone(), ())
    assert time.perf_counter() - started < 0.5
    assert reader.run(lambda db: db.execute("SELECT 42").fetchone()[0], ()) == 42
    assert (reader.inline, reader.moved) == (1, 1)


async def test_an_interrupted_read_leaves_no_old_snapshot_behind(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path}/s.db?inline_read_ms=0.001") as store:
        for n in range(300):
            await store.create_task(new_task(f"t{n}"))
        answer = await store.sync("user:u1", 0, 1000)  # a read transaction, interrupted
        assert len(answer.changes) == 300 and answer.seq == 300
        assert store.reads[1] >= 1
        assert store._inline is not None
        store._inline.budget = 10.0  # from now on everything fits on the loop
        await store.create_task(new_task("late"))
        # A snapshot left open by the interrupted read would still say 300.
        assert await store.head("user:u1") == 301
        assert (await store.sync("user:u1", 300, 10)).seq == 301


async def test_a_read_sqlite_refuses_on_the_loop_is_retried_on_a_thread(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/r.db")
    await store.open()
    loop_thread = threading.get_ident()

    def refused_on_the_loop(db: sqlite3.Connection) -> str:
        if threading.get_ident() == loop_thread:
            raise sqlite3.OperationalError("database is locked")
        return "answered"

    try:
        assert await store._read(refused_on_the_loop) == "answered"
        assert store.reads == (0, 1)
    finally:
        await store.close()


def test_the_inline_budget_is_checked(tmp_path: Path) -> None:
    for bad in ("abc", "-1", "5000"):
        with pytest.raises(ValueError, match="inline_read_ms"):
            SQLiteStore(f"sqlite:///{tmp_path}/x.db?inline_read_ms={bad}")
    assert SQLiteStore(f"sqlite:///{tmp_path}/x.db?inline_read_ms=0").inline_read_budget == 0


def test_a_read_interrupted_inside_its_transaction_does_not_pin_the_connection(
        tmp_path: Path) -> None:
    from store.sqlite_inline import InlineReader, MovedOffLoop

    path = tmp_path / "p.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    reader = InlineReader(sqlite3.connect(path, isolation_level=None), budget=0.005)

    def snapshot_then_long_query(db: sqlite3.Connection) -> None:
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM t").fetchone()  # the snapshot starts here
        db.execute(COUNT_TO_TEN_MILLION).fetchone()

    with pytest.raises(MovedOffLoop):
        reader.run(snapshot_then_long_query, ())
    writer.execute("INSERT INTO t VALUES (2)")
    assert reader.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0], ()) == 2


# -- the writer waiting for another process's write lock --------------------------------


def test_begin_immediate_waits_for_the_lock_in_short_steps(tmp_path: Path) -> None:
    from store.sqlite_writer import begin_immediate

    path = tmp_path / "w.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    began = threading.Event()

    def begin() -> None:
        begin_immediate(writer, patience=10.0)
        began.set()

    thread = threading.Thread(target=begin)
    thread.start()
    assert not began.wait(0.2)  # still waiting while the lock is held
    holder.execute("COMMIT")
    assert began.wait(5)  # and in as soon as it is free
    thread.join(5)
    assert writer.in_transaction
    writer.execute("COMMIT")
    # SQLite's own patience is back for the statements of the transaction
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_begin_immediate_gives_up_after_its_patience(tmp_path: Path) -> None:
    from store.sqlite_writer import begin_immediate

    path = tmp_path / "g.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    writer = sqlite3.connect(path, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(writer, patience=0.3)
    assert 0.2 < time.monotonic() - started < 5
    assert not writer.in_transaction
    holder.execute("ROLLBACK")


def test_heads_are_read_without_sqlites_json_functions_too(tmp_path: Path) -> None:
    from store.sqlite import _heads_in_one_row

    db = sqlite3.connect(tmp_path / "h.db")
    db.execute("CREATE TABLE scopes (scope TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    db.executemany("INSERT INTO scopes VALUES (?, ?)", [("user:a", 3), ("user:b", 7)])

    class WithoutJson:
        def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
            if "json_" in sql:
                raise sqlite3.OperationalError("no such function: json_group_object")
            return db.execute(sql, params)

    expected = {"user:a": 3, "user:b": 7, "user:c": 0}
    assert _heads_in_one_row(db, ["user:a", "user:b", "user:c"]) == expected
    without: Any = WithoutJson()  # a stand-in connection: only execute is used
    assert _heads_in_one_row(without, ["user:a", "user:b", "user:c"]) == expected
