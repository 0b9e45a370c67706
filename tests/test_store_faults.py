"""The embedded store failing under a running instance (issue 7): a file that cannot be
written, a database locked by someone else. Writes answer `unavailable` within the
configured timeout, reads that can be served are, nothing hangs, and service resumes by
itself. (The MongoDB store's outage and recovery: tests/test_mongo_store.py.)"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from realtime import keys
from realtime.app import create_app

from conftest import Api, make_config
from socket_clients import Tab

TIMEOUT = 0.5


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Files no process may write, root included (what a read-only or failed disk is)."""
    chattr("+i", *paths)
    try:
        yield
    finally:
        chattr("-i", *paths)


async def started(tmp_path: Path, aiohttp_client: Any, checker: Any) -> Api:
    config = make_config(tmp_path, **{"store.timeout": f"{TIMEOUT}s"})
    api = Api(await aiohttp_client(create_app(config)), checker)
    return await api.as_new_user()


async def test_an_unwritable_database_answers_unavailable_then_recovers_by_itself(
        tmp_path: Path, aiohttp_client: Any, openapi_checker: Any,
        closing: list[Any]) -> None:
    user = await started(tmp_path, aiohttp_client, openapi_checker)
    kept = await user.post("/api/tasks", json={"title": "before"})
    assert kept.status == 201
    tab = await Tab(str(user.client.make_url("/")), user.token,
                    cursors={f"user:{user.user['id']}": 0}).connect()  # type: ignore[attr-defined]
    closing.append(tab)
    db = tmp_path / "taskmaster.db"
    # The database and its write-ahead log, not the -shm index: SQLite maps that into
    # memory, and a mapped page that cannot be written is a SIGBUS, not an error code.
    with immutable(db, db.with_name(db.name + "-wal")):
        started_at = time.monotonic()
        refused = await user.post("/api/tasks", json={"title": "while broken"})
        assert refused.status == 503 and refused.error["code"] == "unavailable"
        assert time.monotonic() - started_at < TIMEOUT + 5  # answered, not hung
        assert "while broken" not in refused.error["message"]  # no echo, a reason
        patched = await user.patch(f"/api/tasks/{kept.body['task']['id']}",
                                   json={"title": "edit while broken"})
        assert patched.status == 503
        read = await user.get(f"/api/tasks/{kept.body['task']['id']}")
        assert read.status == 200 and read.body["task"]["title"] == "before"
    # No restart: the same instance writes again, and the socket hears of it.
    after = await user.post("/api/tasks", json={"title": "after"})
    assert after.status == 201
    await tab.wait_for(lambda _: after.body["task"]["id"] in tab.replica.tasks)
    assert tab.replica.violations == []
    titles = {t["title"] for t in tab.replica.tasks.values()}
    assert titles == {"before", "after"}


async def test_a_database_locked_by_another_process_is_unavailable_within_the_timeout(
        tmp_path: Path, aiohttp_client: Any, openapi_checker: Any) -> None:
    user = await started(tmp_path, aiohttp_client, openapi_checker)
    other = sqlite3.connect(tmp_path / "taskmaster.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stuck writer would
    try:
        started_at = time.monotonic()
        refused = await user.post("/api/tasks", json={"title": "blocked"})
        waited = time.monotonic() - started_at
        assert refused.status == 503 and refused.error["code"] == "unavailable"
        assert waited < TIMEOUT + 5
        listed = await user.get("/api/tasks")  # WAL: readers are not blocked by a writer
        assert listed.status == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await user.post("/api/tasks", json={"title": "unblocked"})).status == 201
    assert user.app[keys.STORE] is not None
