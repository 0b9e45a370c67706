"""Group commit for SQLite: one thread owns the write connection and commits many
writes per transaction.

Writes queue up while a COMMIT is in progress; the writer takes everything waiting
(up to `max_batch`; when it had to wait for the write lock, also what was queued meanwhile)
and runs it in one `BEGIN IMMEDIATE ... COMMIT`, each write in
its own SAVEPOINT so that one write failing (a conflict, say) rolls back only
itself. Nobody hears of a write before the COMMIT that makes it durable, and the
results are handed back in the order the writes ran, so seq order, commit order
and the order in which callers resume all agree.

Merged writes: a write function marked with `merges` takes a list of items and returns one
result per item (`fn(db, items) -> list`). Consecutive queued calls of the same such function
run as one call over all their items, in one SAVEPOINT: a batch of creates then costs a
handful of statements whatever the number of callers. Fewer statements matter beyond their
own cost: each releases the GIL and must win it back from the event loop while the
transaction holds the file's write lock, which the other instances wait for. Should the
merged call fail, each call is run again on its own, so that a failure stays
with the caller whose items caused it.

Waiting for the write lock (another process writing the same file): SQLite's own busy
handler sleeps 1, 2, 5, 10, 15 ms ... between tries, far longer than the other writer
holds the lock (a batch commits in about a millisecond), so with two instances on one
file a third of the writer's time went to sleeping past a free lock. For BEGIN the writer
asks SQLite not to wait (busy_timeout 0) and retries itself every 0.1 ms at first, backing
off to 1 ms, for as long as the store's timeout allows; inside the transaction SQLite's
own patience applies again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from realtime.errors import ApiError, unavailable

log = logging.getLogger(__name__)
Work = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]
_STOP = object()
FIRST_RETRY, LONGEST_RETRY = 0.0001, 0.001  # seconds between tries for the write lock
RESTART_PATIENCE_MS = 20  # how long a RESTART checkpoint may wait for the write lock
LATE_JOIN_AFTER = 0.0005  # seconds waited for the lock past which queued writes join in


F = TypeVar("F", bound=Callable[..., Any])
_MERGEABLE: set[Callable[..., Any]] = set()


def merges(fn: F) -> F:
    """Mark `fn(db, items) -> list` (one result per item, in order) as mergeable."""
    _MERGEABLE.add(fn)
    return fn


def _busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def begin_immediate(db: sqlite3.Connection, patience: float) -> None:
    """BEGIN IMMEDIATE, retried briefly while another connection holds the write lock."""
    deadline = time.monotonic() + patience
    pause = FIRST_RETRY
    db.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_RETRY)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(patience * 1000)}")


def _fail(future: Future[Any], error: BaseException) -> None:
    if future.done():
        return
    if future.running() or future.set_running_or_notify_cancel():
        future.set_exception(error)


def as_store_error(exc: sqlite3.Error) -> ApiError:
    if isinstance(exc, sqlite3.OperationalError):
        # Locked, read-only, disk full, I/O error: the engine cannot serve now.
        return unavailable(f"the store cannot serve this now ({exc})")
    return unavailable(f"the store failed ({exc})")


class Checkpointer:
    """Copies the WAL back into the database on a thread of its own.

    Left to SQLite, the COMMIT that takes the WAL past 1,000 pages runs the checkpoint
    before it returns: it copies those pages and syncs the file while the writer thread's
    queue waits (in the fan-out benchmark, commits took 40 % longer in all). Here the
    writer's own checkpoints start only past WRITER_CHECKPOINT_PAGES (store/sqlite.py;
    should this thread fall behind), and this thread runs a PASSIVE checkpoint (never
    waits for a lock, nor blocks one) `pause` seconds after a commit, at most once per
    `pause`; past `restart_pages` it also makes the WAL start over (see _checkpoint).
    Durability is the same: a commit is durable once in the WAL; a checkpoint only moves
    committed pages.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], pause: float = 0.05,
                 restart_pages: int = 4_000) -> None:
        self._connect = connect
        self._pause = pause
        self._restart_pages = restart_pages
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint",
                                        daemon=True)
        self.checkpoints = 0
        self.restarts = 0  # times the WAL was made to start over (RESTART checkpoints)
        self.failures = 0
        self.last: tuple[int, int, int] | None = None  # (busy, WAL pages, pages copied)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def committed(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        db = self._connect()
        while True:
            self._wanted.wait()
            if self._stopping:
                return
            time.sleep(self._pause)  # let a few commits gather: one sync for all of them
            if self._stopping:
                return
            self._wanted.clear()
            try:
                self._checkpoint(db)
            except sqlite3.Error as exc:
                self.failures += 1
                log.warning("sqlite checkpoint failed: %s", exc)

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        self.last = busy, pages, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if busy or pages < self._restart_pages:
            return
        # Writers keep appending while a PASSIVE checkpoint copies, so under steady load it
        # never catches up with the WAL's end and SQLite never starts the WAL over: it
        # would grow without bound. RESTART waits for the write lock (briefly: if it cannot
        # have it at once, the next round tries again), copies the few pages written since
        # the PASSIVE one and lets the next writer start the WAL from its beginning.
        patience = db.execute("PRAGMA busy_timeout").fetchone()[0]
        db.execute(f"PRAGMA busy_timeout = {RESTART_PATIENCE_MS}")
        try:
            if db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0:
                self.restarts += 1
        finally:
            db.execute(f"PRAGMA busy_timeout = {patience}")


class GroupCommitWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection], patience: float,
                 max_batch: int = 64, on_commit: Callable[[], None] | None = None) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._patience = patience
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Work | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._stopping = False
        self.commits = 0
        self.writes = 0
        self.lock_wait = 0.0  # seconds spent waiting for the file's write lock
        self.lock_held = 0.0  # seconds the write lock was held (BEGIN to COMMIT done)
        self.merged = 0  # writes that ran merged with their neighbours
        self.merge_fallbacks = 0  # merged runs that failed and were run again one by one

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((fn, args, future))
        return future

    def _take(self, batch: list[Work]) -> None:
        """Add what is queued to `batch`, up to max_batch (noting a stop request)."""
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._stopping = True
                return
            assert isinstance(item, tuple)
            batch.append(item)

    def _run(self) -> None:
        db = self._connect()
        self._stopping = False
        while not self._stopping:
            batch: list[Work] = []
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, tuple)
            batch.append(item)
            self._take(batch)
            if batch:
                try:
                    self._commit(db, batch)
                except Exception as exc:  # the writer thread must outlive any one batch
                    log.exception("sqlite writer: a batch failed unexpectedly")
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    for _, _, future in batch:
                        _fail(future, unavailable(f"the store failed ({exc})"))

    def _commit(self, db: sqlite3.Connection, batch: list[Work]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        asked = time.perf_counter()
        try:
            begin_immediate(db, self._patience)
        except sqlite3.Error as exc:  # busy past the timeout, read-only, I/O error
            for _, _, future in batch:
                if future.set_running_or_notify_cancel():  # a caller may have given up
                    future.set_exception(as_store_error(exc))
            return
        began = time.perf_counter()
        if began - asked > LATE_JOIN_AFTER and not self._stopping:
            # Writes queued while this waited for the lock (another instance held it) join
            # this transaction rather than wait for the next round of the lock.
            self._take(batch)
        live = [work for work in batch if work[2].set_running_or_notify_cancel()]
        index = 0
        while index < len(live):
            fn = live[index][0]
            end = index + 1
            if fn in _MERGEABLE:
                while end < len(live) and live[end][0] is fn:
                    end += 1
            if end - index > 1 and self._merged(db, live[index:end], outcomes):
                index = end
                continue
            for fn, args, future in live[index:end]:
                outcomes.append((future, *self._one(db, fn, args)))
            index = end
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for future, _, _ in outcomes:
                future.set_exception(as_store_error(exc))
            return
        done = time.perf_counter()
        self.lock_wait += began - asked
        self.lock_held += done - began
        self.commits += 1
        self.writes += len(outcomes)
        if self._on_commit is not None:
            self._on_commit()
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    @staticmethod
    def _one(db: sqlite3.Connection, fn: Callable[..., Any],
             args: tuple[Any, ...]) -> tuple[Any, BaseException | None]:
        db.execute("SAVEPOINT write")
        try:
            result = fn(db, *args)
            db.execute("RELEASE write")
            return result, None
        except Exception as exc:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            return None, as_store_error(exc) if isinstance(exc, sqlite3.Error) else exc

    def _merged(self, db: sqlite3.Connection, works: list[Work],
                outcomes: list[tuple[Future[Any], Any, BaseException | None]]) -> bool:
        """Run calls of one `merges` function as one call; False (and nothing written) if it
        failed, for the caller to run them one by one."""
        fn = works[0][0]
        items = [item for _, (part,), _ in works for item in part]
        results, error = self._one(db, fn, (items,))
        if error is not None:
            self.merge_fallbacks += 1
            return False
        start = 0
        for _, (part,), future in works:
            outcomes.append((future, results[start:start + len(part)], None))
            start += len(part)
        self.merged += len(works)
        return True
