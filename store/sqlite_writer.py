"""Group commit for SQLite: one thread owns the write connection and commits many
writes per transaction.

Writes queue up while a COMMIT is in progress; the writer takes everything waiting
(up to `max_batch`) and runs it in one `BEGIN IMMEDIATE ... COMMIT`, each write in
its own SAVEPOINT so that one write failing (a conflict, say) rolls back only
itself. Nobody hears of a write before the COMMIT that makes it durable, and the
results are handed back in the order the writes ran, so seq order, commit order
and the order in which callers resume all agree.

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
from typing import Any

from realtime.errors import ApiError, unavailable

log = logging.getLogger(__name__)
Work = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]
_STOP = object()
FIRST_RETRY, LONGEST_RETRY = 0.0001, 0.001  # seconds between tries for the write lock


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


class GroupCommitWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection], patience: float,
                 max_batch: int = 64) -> None:
        self._connect = connect
        self._patience = patience
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Work | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((fn, args, future))
        return future

    def _run(self) -> None:
        db = self._connect()
        stopping = False
        while not stopping:
            batch: list[Work] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, tuple)
                batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
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
        try:
            begin_immediate(db, self._patience)
        except sqlite3.Error as exc:  # busy past the timeout, read-only, I/O error
            for _, _, future in batch:
                if future.set_running_or_notify_cancel():  # a caller may have given up
                    future.set_exception(as_store_error(exc))
            return
        for fn, args, future in batch:
            if not future.set_running_or_notify_cancel():
                continue
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((future, fn(db, *args), None))
                db.execute("RELEASE write")
            except Exception as exc:
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                failure = as_store_error(exc) if isinstance(exc, sqlite3.Error) else exc
                outcomes.append((future, None, failure))
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for future, _, _ in outcomes:
                future.set_exception(as_store_error(exc))
            return
        self.commits += 1
        self.writes += len(outcomes)
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
