"""The persistence contract every backend implements (SQLite now, MongoDB later).

Shapes: users and tasks are plain dicts, ready to serialise. A task dict carries
every field of DESIGN.md section 2; a tombstone is `{id, scope, seq, version,
deleted: True}`. Timestamps are UTC ISO 8601 strings with milliseconds and `Z`
(`2026-11-29T15:04:05.123Z`), so their text order is their time order.

Guarantees a backend must give (tests/test_store_contract.py proves them):
- seq: per scope, +1 per committed change, assigned in the same atomic step as the
  change itself, so a reader that sees seq N sees every change <= N.
- version: 1 on create, +1 on every change (delete included).
- Authorisation by scope: every task operation names the scopes the caller may touch;
  a task outside them is reported exactly like a task that does not exist.
- Failures: `ApiError('conflict', ...)` for a taken e-mail or task id or a version
  mismatch (details carry the current task), `ApiError('not_found')`, and
  `ApiError('unavailable')` when the engine cannot answer in time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from realtime.errors import ApiError

STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
NO_DUE_KEY = "~"  # sorts after every ISO timestamp, so tasks without a due date come last
SORT_FIELDS = ("created", "updated", "due", "priority")
TASK_FIELDS = (
    "id", "owner", "scope", "title", "description", "status", "priority", "due_date",
    "created_at", "updated_at", "version", "seq", "deleted",
)

Task = dict[str, Any]
User = dict[str, Any]
# One create of a batch: (task, created) as `create_task` answers, or the error it failed with.
CreateOutcome = tuple[Task, bool] | ApiError


_WORD = re.compile(r"[^\W_]+")


def search_words(*texts: str) -> list[str]:
    """The distinct searchable words of `texts`: lower-cased, NFKD-decomposed with the
    combining marks stripped (`Café` -> `cafe`), split on anything not a letter or digit.
    Every backend indexes and queries these, so search means the same everywhere."""
    folded = unicodedata.normalize("NFKD", " ".join(texts).lower())
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    return sorted(set(_WORD.findall(folded)))


def sort_key(task: Task, sort: str) -> Any:
    """The value a list sorted by `sort` orders this task by (ties broken by id)."""
    if sort == "priority":
        return PRIORITY_RANK[task["priority"]]
    if sort == "due":
        return task["due_date"] or NO_DUE_KEY
    return task[f"{sort}_at"]


def tombstone(task: Task) -> Task:
    return {
        "id": task["id"], "scope": task["scope"], "seq": task["seq"],
        "version": task["version"], "deleted": True,
    }


def version_conflict(current: Task) -> ApiError:
    return ApiError(
        "conflict", "the task was changed by someone else",
        {"current": current, "version": current["version"]},
    )


@dataclass(frozen=True)
class TaskQuery:
    scopes: tuple[str, ...]
    status: str | None = None
    priority: str | None = None
    due_before: str | None = None
    due_after: str | None = None
    terms: tuple[str, ...] = ()  # lower-cased words; each must prefix a word of title/description
    sort: str = "created"  # one of SORT_FIELDS
    descending: bool = True
    limit: int = 50
    after: tuple[Any, str] | None = None  # (sort key, id) of the last item already returned


@dataclass
class SyncAnswer:
    scope: str
    seq: int
    changes: list[Task] = field(default_factory=list)
    more: bool = False
    reset: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "seq": self.seq, "changes": self.changes,
                "more": self.more, "reset": self.reset}


class Store(Protocol):
    observe: Callable[[str, float], None] | None  # told (kind, seconds) of every call

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def create_user(self, user: User) -> User: ...
    async def user_by_email(self, email: str) -> User | None: ...
    async def user_by_id(self, user_id: str) -> User | None: ...
    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash (a rehash with newer parameters)."""
        ...

    async def revoke_token(self, jti: str, expires_at: float) -> None: ...
    async def is_revoked(self, jti: str) -> bool: ...
    async def revocations(self, now_epoch: float) -> dict[str, float]:
        """Every revocation whose token has not expired yet: {jti: expires_at}."""
        ...

    async def create_task(self, task: Task) -> tuple[Task, bool]:
        """Insert `task` (all fields but seq/version). Returns (task, created).

        An existing live task with the same id and owner is returned unchanged with
        created=False (an idempotent retry); any other holder of the id is a conflict.
        """
        ...

    async def create_tasks(self, tasks: Sequence[Task]) -> list[CreateOutcome]:
        """`create_task` for each of `tasks`, in their order (a scope's seqs follow it), in
        one store call. Each item's outcome is its own: (task, created), or the ApiError that
        item alone failed with (a taken id: `conflict`), the others going through. An
        exception raised instead concerns the whole call; some items may then have
        committed, as with a `create_task` that timed out."""
        ...

    async def update_task(
        self, scopes: Collection[str], task_id: str, changes: dict[str, Any],
        expected_version: int | None, now: str,
    ) -> tuple[Task, bool]:
        """Apply `changes`; returns (task, changed). No effective change: no new version."""
        ...

    async def delete_task(
        self, scopes: Collection[str], task_id: str, expected_version: int | None, now: str,
    ) -> Task:
        """Turn the task into a tombstone; returns the tombstone."""
        ...

    async def get_task(self, scopes: Collection[str], task_id: str) -> Task | None: ...
    async def list_tasks(self, query: TaskQuery) -> list[Task]: ...
    async def task_stats(
        self, scopes: Collection[str], now: str, week_end: str
    ) -> dict[str, Any]: ...
    async def sync(self, scope: str, since: int, limit: int) -> SyncAnswer: ...
    async def head(self, scope: str) -> int:
        """The scope's latest seq (0 for a scope with no change yet)."""
        ...
    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        """`head` of each scope, in one call (the sockets connecting at the same time)."""
        ...
    async def settled_head(self, scope: str) -> int:
        """The scope's latest seq once every write this store object accepted for it
        before the call has finished, committed or not (how the task service learns
        whether a write it gave up waiting for went through)."""
        ...
    async def purge(self, tombstones_before: str, now_epoch: float) -> int:
        """Drop tombstones deleted before the cut-off (raising each scope's horizon) and
        expired revocations. Returns the number of tombstones dropped."""
        ...
