"""Persistence: the contract (`base`) and its backends, chosen by URL scheme.

Backends are imported lazily so the embedded default never imports pymongo.
`sqlite://` is the embedded default; `mongodb://` and `mongodb+srv://` the shared store.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import Store, SyncAnswer, Task, TaskQuery, User

__all__ = ["Store", "SyncAnswer", "Task", "TaskQuery", "User", "store_from_url"]


def store_from_url(url: str, timeout: float = 5.0) -> Store:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, timeout=timeout)
    if scheme in {"mongodb", "mongodb+srv"}:
        from .mongodb import MongoStore

        return MongoStore(url, timeout=timeout)
    raise ValueError(
        f"no store backend for scheme {scheme!r} (this build has: sqlite, mongodb, mongodb+srv)")
