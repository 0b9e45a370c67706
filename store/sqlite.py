"""The embedded default store: one SQLite file in WAL mode, off the event loop.

Delivery contract: every write runs on one dedicated writer thread inside
`BEGIN IMMEDIATE ... COMMIT` (several writes per transaction when they queue up:
store/sqlite_writer.py), and the scope's seq is incremented inside that same
transaction, so seq order is commit order and no reader can ever see seq N without
every change below it (DESIGN.md 5.3). Reads run on a small pool of reader threads,
each with its own connection; WAL lets them proceed while the writer commits, and a
sync reads the scope head and the changes in one read transaction (one snapshot).

Durability: `synchronous=NORMAL` in WAL mode survives a crash or SIGKILL of the
process (the acknowledged transaction is in the WAL); `store.url` may add
`?synchronous=FULL` to also survive power loss, at the cost of an fsync per commit.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson

from realtime.errors import ApiError, not_found, unavailable

from .base import (
    NO_DUE_KEY,
    PRIORITIES,
    PRIORITY_RANK,
    STATUSES,
    CreateOutcome,
    SyncAnswer,
    Task,
    TaskQuery,
    User,
    search_words,
    tombstone,
    version_conflict,
)
from .sqlite_inline import InlineReader, MovedOffLoop
from .sqlite_writer import Checkpointer, GroupCommitWriter, as_store_error, merges

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scopes (
    scope TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    horizon INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tasks (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    prio INTEGER NOT NULL,
    due_date TEXT,
    due_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at TEXT,
    search_text TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_scope_seq ON tasks(scope, seq);
CREATE INDEX IF NOT EXISTS tasks_scope_status ON tasks(scope, status) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS tasks_scope_created ON tasks(scope, created_at, id)
    WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS tasks_scope_updated ON tasks(scope, updated_at, id)
    WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS tasks_scope_due ON tasks(scope, due_key, id) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS tasks_scope_prio ON tasks(scope, prio, id) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS tasks_tombstones ON tasks(deleted_at) WHERE deleted = 1;
-- Search: tasks.search_text holds a task's words, each prefixed by a key of its scope
-- (see _search_text), so every scope has its own vocabulary and a query reads only the
-- caller's postings. The index deletes exactly what it indexed (old.search_text).
CREATE VIRTUAL TABLE IF NOT EXISTS task_words USING fts5(
    search_text, content='tasks', content_rowid='rid',
    tokenize='unicode61 remove_diacritics 0'
);
CREATE TRIGGER IF NOT EXISTS task_words_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_words(rowid, search_text) VALUES (new.rid, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS task_words_update AFTER UPDATE OF search_text ON tasks BEGIN
    INSERT INTO task_words(task_words, rowid, search_text)
    VALUES ('delete', old.rid, old.search_text);
    INSERT INTO task_words(rowid, search_text) VALUES (new.rid, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS task_words_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO task_words(task_words, rowid, search_text)
    VALUES ('delete', old.rid, old.search_text);
END;
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

SCHEMA_VERSION = 3  # 2: the full-text index had the scope; 3: a vocabulary per scope
DROP_OLD_SEARCH = """
DROP TRIGGER IF EXISTS tasks_fts_insert;
DROP TRIGGER IF EXISTS tasks_fts_update;
DROP TRIGGER IF EXISTS tasks_fts_delete;
DROP TABLE IF EXISTS tasks_fts;
DROP TRIGGER IF EXISTS task_words_insert;
DROP TRIGGER IF EXISTS task_words_update;
DROP TRIGGER IF EXISTS task_words_delete;
DROP TABLE IF EXISTS task_words;
"""

TASK_COLUMNS = (
    "id, owner, scope, title, description, status, priority, due_date, created_at, "
    "updated_at, version, seq, deleted"
)
SORT_COLUMN = {"created": "created_at", "updated": "updated_at", "due": "due_key",
               "priority": "prio"}
READERS = 4
# SQLite's default is 1,000 pages; the checkpoint thread runs long before (sqlite_writer.py).
WRITER_CHECKPOINT_PAGES = 10_000
INLINE_READ_MS = 2.0  # default budget of a read on the event loop (store/sqlite_inline.py)


def _task(row: tuple[Any, ...]) -> Task:
    if row[12]:
        return {"id": row[0], "scope": row[2], "seq": row[11], "version": row[10],
                "deleted": True}
    return {
        "id": row[0], "owner": row[1], "scope": row[2], "title": row[3],
        "description": row[4], "status": row[5], "priority": row[6], "due_date": row[7],
        "created_at": row[8], "updated_at": row[9], "version": row[10], "seq": row[11],
        "deleted": False,
    }


def _placeholders(values: Collection[Any]) -> str:
    return ",".join("?" * len(values))


def _next_seq(db: sqlite3.Connection, scope: str) -> int:
    row = db.execute(
        "INSERT INTO scopes(scope, seq) VALUES (?, 1) "
        "ON CONFLICT(scope) DO UPDATE SET seq = seq + 1 RETURNING seq",
        (scope,),
    ).fetchone()
    return int(row[0])


class SQLiteStore:
    """Store backend for `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        raw_path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not raw_path:
            raise ValueError("sqlite URL needs a file path: sqlite:///data/taskmaster.db")
        self.path = Path(raw_path)
        options = parse_qs(parts.query)
        self.synchronous = options.get("synchronous", ["NORMAL"])[0].upper()
        if self.synchronous not in {"NORMAL", "FULL"}:
            raise ValueError("sqlite synchronous must be NORMAL or FULL")
        try:
            inline_ms = float(options.get("inline_read_ms", [INLINE_READ_MS])[0])
        except ValueError:
            inline_ms = -1.0
        if not 0 <= inline_ms <= 1000:
            raise ValueError("sqlite inline_read_ms must be a number of milliseconds "
                             "from 0 (every read on a thread) to 1000")
        self.inline_read_budget = inline_ms / 1000
        self.timeout = timeout
        self.observe: Callable[[str, float], None] | None = None  # (kind, seconds) per call
        self._writer: GroupCommitWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._inline: InlineReader | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # A list's SQL depends on its filters, sort and cursor: keep every variant compiled
        # (the module's default of 128 statements is smaller than their number).
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                             check_same_thread=False, cached_statements=1024)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA cache_size=-16000")
        with self._lock:
            self._connections.append(db)
        return db

    def _connect_writer(self) -> sqlite3.Connection:
        db = self._connect()
        # The checkpoint thread keeps the WAL short; the writer checkpoints only past this.
        db.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        return db

    def _reader_db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    async def _answer(self, future: asyncio.Future[T], kind: str) -> T:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise unavailable("the store did not answer in time") from None
        finally:
            if self.observe is not None:
                self.observe(kind, time.perf_counter() - started)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._reader_db(), *args)
        except sqlite3.Error as exc:
            raise as_store_error(exc) from None

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer is None:
            raise unavailable("the store is closed")
        return await self._answer(asyncio.wrap_future(self._writer.submit(fn, args)), "write")

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._readers is None:
            raise unavailable("the store is closed")
        if self._inline is not None:
            started = time.perf_counter()
            try:
                result = self._inline.run(fn, args)
            except MovedOffLoop:
                pass  # too long for the loop, or SQLite refused: the pool takes it
            else:
                if self.observe is not None:
                    self.observe("read", time.perf_counter() - started)
                return result
        loop = asyncio.get_running_loop()
        return await self._answer(loop.run_in_executor(self._readers, self._call, fn, args),
                                  "read")

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, self._create_schema)
        self._checkpointer = Checkpointer(self._connect)
        self._checkpointer.start()
        self._writer = GroupCommitWriter(self._connect_writer, patience=self.timeout,
                                         on_commit=self._checkpointer.committed)
        self._writer.start()
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="sqlite-reader")
        if self.inline_read_budget > 0:
            db = self._connect()
            # Set up with the usual patience, then never wait for a lock: the pool does.
            db.execute("PRAGMA busy_timeout = 0")
            self._inline = InlineReader(db, self.inline_read_budget)

    @property
    def reads(self) -> tuple[int, int]:
        """Reads (answered on the event loop, moved from it to a reader thread) so far."""
        if self._inline is None:
            return 0, 0
        return self._inline.inline, self._inline.moved

    def _create_schema(self) -> None:
        # Instances sharing one file may start together: one creates or upgrades the
        # schema while the others wait (executescript commits on its own, so a SQLite
        # transaction cannot hold them off). flock on a file of its own: SQLite's POSIX
        # locks on the database would be dropped by closing any other handle to it.
        with open(f"{self.path}.schema-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._create_schema_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _create_schema_locked(self) -> None:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                # Drop every search object first, so filling search_text fires nothing.
                db.executescript(DROP_OLD_SEARCH)
                columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
                db.execute("BEGIN IMMEDIATE")
                if columns and "search_text" not in columns:
                    db.execute("ALTER TABLE tasks ADD COLUMN search_text TEXT NOT NULL "
                               "DEFAULT ''")
                if columns:
                    rows = db.execute(
                        "SELECT rid, scope, title, description FROM tasks WHERE deleted = 0")
                    db.executemany("UPDATE tasks SET search_text = ? WHERE rid = ?",
                                   [(_search_text(scope, title, description), rid)
                                    for rid, scope, title, description in rows.fetchall()])
                db.execute("COMMIT")
            db.executescript(SCHEMA)
            if version < SCHEMA_VERSION:
                db.execute("INSERT INTO task_words(task_words) VALUES ('rebuild')")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # No planner statistics: with them SQLite walks a sort index and probes the
            # full-text matches row by row (12 ms instead of 1.4 per search on the
            # benchmark data); the queries steer the few choices that matter themselves.
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
                db.execute("DELETE FROM sqlite_stat1")
        finally:
            db.close()

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.stop)
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._writer = self._readers = self._inline = self._checkpointer = None
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    # -- users and tokens --------------------------------------------------------

    async def create_user(self, user: User) -> User:
        return await self._write(_create_user, user)

    async def user_by_email(self, email: str) -> User | None:
        return await self._read(_user_where, "email", email)

    async def user_by_id(self, user_id: str) -> User | None:
        return await self._read(_user_where, "id", user_id)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)))

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        await self._write(lambda db: db.execute(
            "INSERT OR IGNORE INTO revoked_tokens(jti, expires_at) VALUES (?, ?)",
            (jti, expires_at)))

    async def revocations(self, now_epoch: float) -> dict[str, float]:
        return await self._read(lambda db: dict(db.execute(
            "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= ?",
            (now_epoch,)).fetchall()))

    async def is_revoked(self, jti: str) -> bool:
        return await self._read(lambda db: db.execute(
            "SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)).fetchone() is not None)

    # -- tasks -------------------------------------------------------------------

    async def create_task(self, task: Task) -> tuple[Task, bool]:
        # Through the batch function: creates queued together (REST, sockets) merge.
        outcome = (await self._write(_create_tasks, [task]))[0]
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    async def create_tasks(self, tasks: Sequence[Task]) -> list[CreateOutcome]:
        if not tasks:
            return []
        return await self._write(_create_tasks, list(tasks))

    async def update_task(self, scopes: Collection[str], task_id: str,
                          changes: dict[str, Any], expected_version: int | None,
                          now: str) -> tuple[Task, bool]:
        return await self._write(_update_task, tuple(scopes), task_id, changes,
                                 expected_version, now)

    async def delete_task(self, scopes: Collection[str], task_id: str,
                          expected_version: int | None, now: str) -> Task:
        return await self._write(_delete_task, tuple(scopes), task_id, expected_version, now)

    async def get_task(self, scopes: Collection[str], task_id: str) -> Task | None:
        return await self._read(_get_live_task, tuple(scopes), task_id)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        return await self._read(_list_tasks, query)

    async def task_stats(self, scopes: Collection[str], now: str,
                         week_end: str) -> dict[str, Any]:
        return await self._read(_task_stats, tuple(scopes), now, week_end)

    async def sync(self, scope: str, since: int, limit: int) -> SyncAnswer:
        return await self._read(_in_read_transaction(_sync), scope, since, limit)

    @property
    def group_commits(self) -> tuple[int, int]:
        """(commits, writes) so far: how well writes are being grouped."""
        return (self._writer.commits, self._writer.writes) if self._writer else (0, 0)

    @property
    def writer_times(self) -> dict[str, float | int]:
        """Where the writer's time went: waiting for the write lock, holding it."""
        writer, checkpointer = self._writer, self._checkpointer
        if writer is None or checkpointer is None:
            return {}
        return {"lock_wait_s": round(writer.lock_wait, 6),
                "lock_held_s": round(writer.lock_held, 6),
                "merged": writer.merged, "checkpoints": checkpointer.checkpoints,
                "wal_restarts": checkpointer.restarts}

    async def head(self, scope: str) -> int:
        return await self._read(_head, scope)

    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        return await self._read(_heads, list(scopes))

    async def settled_head(self, scope: str) -> int:
        # Through the writer: it runs writes in submission order, so everything queued
        # before this has committed or failed by the time it reads.
        return await self._write(_head, scope)

    async def purge(self, tombstones_before: str, now_epoch: float) -> int:
        return await self._write(_purge, tombstones_before, now_epoch)


# -- the SQL, run on the store's threads ------------------------------------------


def _in_read_transaction(fn: Callable[..., T]) -> Callable[..., T]:
    def run(db: sqlite3.Connection, *args: Any) -> T:
        db.execute("BEGIN")
        try:
            return fn(db, *args)
        finally:
            db.execute("COMMIT")

    return run


_USER_COLUMNS = "id, email, name, password_hash, created_at"


def _user(row: tuple[Any, ...] | None) -> User | None:
    if row is None:
        return None
    return dict(zip(("id", "email", "name", "password_hash", "created_at"), row, strict=True))


def _user_where(db: sqlite3.Connection, column: str, value: str) -> User | None:
    assert column in {"id", "email"}
    return _user(db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE {column} = ?",
                            (value,)).fetchone())


def _create_user(db: sqlite3.Connection, user: User) -> User:
    try:
        db.execute(
            f"INSERT INTO users({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (user["id"], user["email"], user["name"], user["password_hash"],
             user["created_at"]),
        )
    except sqlite3.IntegrityError:
        raise ApiError("conflict", "an account with this email already exists") from None
    return user


def _row_by_id(db: sqlite3.Connection, task_id: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = db.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return row


def _get_live_task(db: sqlite3.Connection, scopes: tuple[str, ...],
                   task_id: str) -> Task | None:
    row = _row_by_id(db, task_id)
    if row is None or row[12] or row[2] not in scopes:
        return None
    return _task(row)


_INSERT_TASKS = (
    "INSERT INTO tasks(id, owner, scope, title, description, status, priority, prio, "
    "due_date, due_key, created_at, updated_at, version, seq, search_text) VALUES ")
_TASK_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
# 14 values a row and 2 a scope: under SQLite's smallest limit on bound parameters (999).
ROWS_PER_INSERT = 64
SCOPES_PER_UPSERT = 400


@merges
def _create_tasks(db: sqlite3.Connection, tasks: list[Task]) -> list[CreateOutcome]:
    """Every create of a batch in a few statements rather than four per task: one lookup of
    the ids, one of the scopes' heads, one upsert of the new heads and one multi-row INSERT
    per ROWS_PER_INSERT tasks. Multi-row INSERTs cost half as much per row as one INSERT
    each (the search index's trigger included). The writer holds the write lock, so the
    heads read here stay current until the COMMIT; seqs follow the order of `tasks`."""
    found: dict[str, tuple[Any, ...]] = {}
    ids = list(dict.fromkeys(task["id"] for task in tasks))
    for start in range(0, len(ids), HEADS_PER_QUERY):
        part = ids[start:start + HEADS_PER_QUERY]
        for row in db.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({_placeholders(part)})", part):
            found[row[0]] = row
    heads = _heads_in_one_row(db, list({task["scope"] for task in tasks
                                        if task["id"] not in found}))
    outcomes: list[CreateOutcome] = []
    made: dict[str, Task] = {}  # id -> the task created earlier in this batch
    rows: list[tuple[Any, ...]] = []
    for task in tasks:
        task_id, owner, scope = task["id"], task["owner"], task["scope"]
        existing = found.get(task_id)
        if existing is not None:
            if existing[1] == owner and existing[2] == scope and not existing[12]:
                outcomes.append((_task(existing), False))
            else:
                outcomes.append(_id_taken(task_id))
            continue
        earlier = made.get(task_id)
        if earlier is not None:  # the same id twice in one batch: a retry within it
            outcomes.append((earlier, False) if earlier["owner"] == owner
                            and earlier["scope"] == scope else _id_taken(task_id))
            continue
        seq = heads[scope] = heads[scope] + 1
        created = {
            "id": task_id, "owner": owner, "scope": scope, "title": task["title"],
            "description": task["description"], "status": task["status"],
            "priority": task["priority"], "due_date": task["due_date"],
            "created_at": task["created_at"], "updated_at": task["updated_at"],
            "version": 1, "seq": seq, "deleted": False,
        }
        made[task_id] = created
        outcomes.append((created, True))
        rows.append((task_id, owner, scope, task["title"], task["description"],
                     task["status"], task["priority"], PRIORITY_RANK[task["priority"]],
                     task["due_date"], task["due_date"] or NO_DUE_KEY, task["created_at"],
                     task["updated_at"], seq,
                     _search_text(scope, task["title"], task["description"])))
    if rows:
        taken = {row[2] for row in rows}
        moved = [(scope, heads[scope]) for scope in heads if scope in taken]
        for start in range(0, len(moved), SCOPES_PER_UPSERT):
            part = moved[start:start + SCOPES_PER_UPSERT]
            db.execute("INSERT INTO scopes(scope, seq) VALUES " + ",".join(["(?, ?)"] * len(part))
                       + " ON CONFLICT(scope) DO UPDATE SET seq = excluded.seq",
                       [value for pair in part for value in pair])
        for start in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[start:start + ROWS_PER_INSERT]
            db.execute(_INSERT_TASKS + ",".join([_TASK_ROW] * len(part)),
                       [value for row in part for value in row])
    return outcomes


def _heads_in_one_row(db: sqlite3.Connection, scopes: list[str]) -> dict[str, int]:
    """`_heads`, but answered as one JSON row: the module releases the GIL for every row
    SQLite steps through, and may wait to get it back from the event loop, while the writer
    holds the write lock. (`_heads` where SQLite was built without its JSON functions.)"""
    heads = dict.fromkeys(scopes, 0)
    for start in range(0, len(scopes), HEADS_PER_QUERY):
        part = scopes[start:start + HEADS_PER_QUERY]
        try:
            found = db.execute("SELECT json_group_object(scope, seq) FROM scopes "
                               f"WHERE scope IN ({_placeholders(part)})", part).fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "no such function" not in str(exc):
                raise
            heads.update(_heads(db, part))
            continue
        heads.update(orjson.loads(found))
    return heads


def _id_taken(task_id: str) -> ApiError:
    return ApiError("conflict", "a task with this id already exists", {"id": task_id})


def _writable(db: sqlite3.Connection, scopes: tuple[str, ...], task_id: str,
              expected_version: int | None) -> Task:
    row = _row_by_id(db, task_id)
    if row is None or row[12] or row[2] not in scopes:
        raise not_found()
    current = _task(row)
    if expected_version is not None and expected_version != current["version"]:
        raise version_conflict(current)
    return current


def _update_task(db: sqlite3.Connection, scopes: tuple[str, ...], task_id: str,
                 changes: dict[str, Any], expected_version: int | None,
                 now: str) -> tuple[Task, bool]:
    current = _writable(db, scopes, task_id, expected_version)
    effective = {k: v for k, v in changes.items() if current[k] != v}
    if not effective:
        return current, False
    seq = _next_seq(db, current["scope"])
    updated = {**current, **effective, "updated_at": now, "version": current["version"] + 1,
               "seq": seq}
    db.execute(
        "UPDATE tasks SET title = ?, description = ?, status = ?, priority = ?, prio = ?, "
        "due_date = ?, due_key = ?, updated_at = ?, version = ?, seq = ? WHERE id = ?",
        (updated["title"], updated["description"], updated["status"], updated["priority"],
         PRIORITY_RANK[updated["priority"]], updated["due_date"],
         updated["due_date"] or NO_DUE_KEY, now, updated["version"], seq, task_id),
    )
    if "title" in effective or "description" in effective:  # the trigger re-indexes
        db.execute("UPDATE tasks SET search_text = ? WHERE id = ?", (_search_text(
            current["scope"], updated["title"], updated["description"]), task_id))
    return updated, True


def _delete_task(db: sqlite3.Connection, scopes: tuple[str, ...], task_id: str,
                 expected_version: int | None, now: str) -> Task:
    current = _writable(db, scopes, task_id, expected_version)
    seq = _next_seq(db, current["scope"])
    version = current["version"] + 1
    # The tombstone keeps no content: only what a client needs to learn of the deletion.
    db.execute(
        "UPDATE tasks SET title = '', description = '', search_text = '', deleted = 1, "
        "deleted_at = ?, updated_at = ?, version = ?, seq = ? WHERE id = ?",
        (now, now, version, seq, task_id),
    )
    return tombstone({**current, "seq": seq, "version": version})


def scope_key(scope: str) -> str:
    """A short, fixed-length, letters-and-digits key of a scope (a collision would only
    cost reading more postings: the list query still checks the exact scope)."""
    return "s" + hashlib.blake2b(scope.encode(), digest_size=6).hexdigest()


def _search_text(scope: str, title: str, description: str) -> str:
    key = scope_key(scope)
    return " ".join(key + word for word in search_words(title, description))


def _fts_match(scopes: Iterable[str], terms: Iterable[str]) -> str | None:
    """Every word of every term, as a prefix in one of the scopes' vocabularies. Words are
    letters and digits only (search_words), so no client text is parsed as FTS5 syntax.
    None when a term has no word at all (it can prefix nothing)."""
    keys = [scope_key(scope) for scope in scopes]
    clauses = []
    for term in terms:
        words = search_words(term)
        if not words:
            return None
        for word in words:
            clauses.append("(" + " OR ".join(f'"{key}{word}"*' for key in keys) + ")")
    return " AND ".join(clauses)


def _list_tasks(db: sqlite3.Connection, query: TaskQuery) -> list[Task]:
    where = [f"scope IN ({_placeholders(query.scopes)})", "deleted = 0"]
    params: list[Any] = list(query.scopes)
    if query.status is not None:
        where.append("status = ?")
        params.append(query.status)
    if query.priority is not None:
        # prio says the same as priority, but is what the (scope, prio, id) index holds:
        # a priority sort then reads only the asked-for priority's rows.
        where.append("priority = ? AND prio = ?")
        params.extend((query.priority, PRIORITY_RANK.get(query.priority, -1)))
    # A due-date range with another sort order: walk that order's index and filter
    # (`+due_key` keeps the planner from reading the whole range and sorting it: 9 ms
    # instead of under 1 for "due this week" lists on the benchmark data).
    due = "due_key" if query.sort == "due" else "+due_key"
    if query.due_before is not None:
        where.append(f"{due} < ?")
        params.append(query.due_before)
    if query.due_after is not None:
        where.append(f"{due} > ? AND due_date IS NOT NULL")
        params.append(query.due_after)
    if query.terms:
        match = _fts_match(query.scopes, query.terms)
        if match is None:
            return []
        where.append("rid IN (SELECT rowid FROM task_words WHERE task_words MATCH ?)")
        params.append(match)
    column = SORT_COLUMN[query.sort]
    direction = "DESC" if query.descending else "ASC"
    if query.after is not None:
        where.append(f"({column}, id) {'<' if query.descending else '>'} (?, ?)")
        params.extend(query.after)
    sql = (f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(where)} "
           f"ORDER BY {column} {direction}, id {direction} LIMIT ?")
    params.append(query.limit)
    return [_task(row) for row in db.execute(sql, params)]


def _task_stats(db: sqlite3.Connection, scopes: tuple[str, ...], now: str,
                week_end: str) -> dict[str, Any]:
    marks = _placeholders(scopes)
    by_status = dict.fromkeys(STATUSES, 0)
    by_priority = dict.fromkeys(PRIORITIES, 0)
    for status, priority, count in db.execute(
        f"SELECT status, priority, COUNT(*) FROM tasks WHERE scope IN ({marks}) "
        "AND deleted = 0 GROUP BY status, priority", scopes,
    ):
        by_status[status] += count
        by_priority[priority] += count
    overdue, due_this_week = db.execute(
        f"SELECT COALESCE(SUM(due_key < ?), 0), COALESCE(SUM(due_key >= ? AND due_key < ?), 0) "
        f"FROM tasks WHERE scope IN ({marks}) AND deleted = 0 AND status != 'done' "
        "AND due_date IS NOT NULL",
        (now, now, week_end, *scopes),
    ).fetchone()
    return {"total": sum(by_status.values()), "by_status": by_status,
            "by_priority": by_priority, "overdue": overdue, "due_this_week": due_this_week}


def _sync(db: sqlite3.Connection, scope: str, since: int, limit: int) -> SyncAnswer:
    head_row = db.execute("SELECT seq, horizon FROM scopes WHERE scope = ?",
                          (scope,)).fetchone()
    head, horizon = head_row if head_row else (0, 0)
    reset = since < horizon or since > head
    start = 0 if reset else since
    rows = db.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE scope = ? AND seq > ? ORDER BY seq LIMIT ?",
        (scope, start, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    changes = [_task(row) for row in rows[:limit]]
    seq = changes[-1]["seq"] if more else head
    return SyncAnswer(scope=scope, seq=seq, changes=changes, more=more, reset=reset)


def _head(db: sqlite3.Connection, scope: str) -> int:
    row = db.execute("SELECT seq FROM scopes WHERE scope = ?", (scope,)).fetchone()
    return int(row[0]) if row else 0


HEADS_PER_QUERY = 500  # under SQLite's smallest limit on bound parameters (999)


def _heads(db: sqlite3.Connection, scopes: list[str]) -> dict[str, int]:
    heads = dict.fromkeys(scopes, 0)
    for start in range(0, len(scopes), HEADS_PER_QUERY):
        part = scopes[start:start + HEADS_PER_QUERY]
        heads.update(db.execute(
            f"SELECT scope, seq FROM scopes WHERE scope IN ({_placeholders(part)})", part))
    return heads


def _purge(db: sqlite3.Connection, tombstones_before: str, now_epoch: float) -> int:
    horizons = db.execute(
        "SELECT scope, MAX(seq) FROM tasks WHERE deleted = 1 AND deleted_at < ? GROUP BY scope",
        (tombstones_before,),
    ).fetchall()
    for scope, seq in horizons:
        db.execute("UPDATE scopes SET horizon = MAX(horizon, ?) WHERE scope = ?", (seq, scope))
    dropped = db.execute("DELETE FROM tasks WHERE deleted = 1 AND deleted_at < ?",
                         (tombstones_before,)).rowcount
    db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (now_epoch,))
    return int(dropped)
