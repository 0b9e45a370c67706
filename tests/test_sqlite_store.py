"""What is particular to the SQLite backend: group commit, schema upgrade, failures."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from realtime.errors import ApiError
from store import TaskQuery
from store.sqlite import SQLiteStore

from test_store_contract import new_task


async def test_concurrent_writes_share_commits_and_keep_seq_order(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/g.db")
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.create_task(new_task(f"t{n}")) for n in range(200)),
            store.create_task(new_task("t7")),  # a duplicate id inside the same batches
        )
        seqs = sorted(task["seq"] for task, created in results if created)
        assert seqs == list(range(1, 201))
        assert sum(1 for _, created in results if not created) == 1
        commits, writes = store.group_commits
        assert writes == 201 and commits < writes  # they were grouped
    finally:
        await store.close()


async def test_a_failing_write_rolls_back_only_itself(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/f.db")
    await store.open()
    try:
        await store.create_task(new_task("mine", owner="a"))
        outcomes = await asyncio.gather(
            store.create_task(new_task("x1")),
            store.create_task(new_task("mine", owner="b")),  # conflict: someone else's id
            store.create_task(new_task("x2")),
            return_exceptions=True)
        assert isinstance(outcomes[1], ApiError) and outcomes[1].code == "conflict"
        assert outcomes[0][0]["seq"] == 1 and outcomes[2][0]["seq"] == 2
        assert await store.head("user:b") == 0  # the failed write took no seq
    finally:
        await store.close()


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
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        found = await store.list_tasks(TaskQuery(scopes=("user:u1",), terms=("coffee",)))
        assert [t["id"] for t in found] == ["t1"]
        await store.create_task(new_task("t2", title="More coffee"))
        found = await store.list_tasks(TaskQuery(scopes=("user:u1",), terms=("coffee",)))
        assert {t["id"] for t in found} == {"t1", "t2"}
    finally:
        await store.close()
