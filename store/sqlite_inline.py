"""Short SQLite reads on the event loop's own thread, long ones moved to the reader pool.

Why: a read through the thread pool costs more than most reads themselves. The hop
(executor submit, a future, a loop wake-up) and, worse, the GIL hand-offs between the
loop and a reader thread (the sqlite3 module releases the GIL around every row step, and
a thread that wants it back waits for the loop's switch interval) took the REST benchmark's
list answers from 1,100 to 790 per second and from 0.8 to 1.5 ms of CPU each. Most reads
here walk an index for a page of rows and finish in well under a millisecond.

How the loop stays responsive: SQLite calls a progress handler every few thousand virtual
machine steps; once a read has run for `budget` seconds it is interrupted, its read
transaction rolled back, and the caller runs it again on a reader thread. So no read holds
the loop for much more than the budget, whatever its size, and the retried read is the
same function on the same committed data (reads change nothing, so running one twice is
safe). The connection never waits for a lock (busy timeout 0): a read that would, and any
other SQLite error, is also handed to the pool, which owns waiting, timeouts and errors.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
STEPS_PER_CHECK = 1000  # SQLite VM instructions between two looks at the clock (~10 us)


class MovedOffLoop(Exception):
    """The read did not finish here; run it on a reader thread."""


class InlineReader:
    """One connection, used only from the event loop's thread."""

    def __init__(self, db: sqlite3.Connection, budget: float) -> None:
        self._db = db
        self.budget = budget
        self._deadline = math.inf
        self.inline = 0  # reads answered on the loop
        self.moved = 0  # reads handed to the pool (too long, or an error)
        db.set_progress_handler(self._over_budget, STEPS_PER_CHECK)

    def _over_budget(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0

    def run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        db = self._db
        self._deadline = time.perf_counter() + self.budget
        try:
            result = fn(db, *args)
        except sqlite3.Error:
            self._deadline = math.inf  # or the clean-up below is interrupted too
            if db.in_transaction:
                db.rollback()  # a snapshot left open would pin this connection to old data
            self.moved += 1
            raise MovedOffLoop from None
        finally:
            self._deadline = math.inf
        self.inline += 1
        return result
