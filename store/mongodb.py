"""The distributed store: MongoDB (a replica set, or anything that speaks its wire protocol
with transactions) through PyMongo's native asyncio client, `pymongo.AsyncMongoClient`.

URL: `mongodb://host:port[,host:port...]/dbname?options` (or `mongodb+srv://`). The
database is the URL's path (`taskmaster` when absent). Every PyMongo URL option works and
wins over our defaults: pool sizes (`maxPoolSize`, `minPoolSize`, `maxIdleTimeMS`), `w`,
`replicaSet`, TLS, credentials. The store's `timeout` (config `store.timeout`) becomes the
driver's client-side operation timeout (`timeoutMS`, CSOT) plus `serverSelectionTimeoutMS`
and `connectTimeoutMS`, and every call runs under `pymongo.timeout(timeout)`, so one store
call (retries included) never takes longer than that. A server that cannot be reached
becomes `ApiError('unavailable')` within `timeout`; the client keeps monitoring the
deployment, and the first call after the server is back succeeds (no restart needed).

Collections: `users` (`_id` = user id, unique `email`, stored lower-cased as the service
hands it over), `scopes` (`_id` = scope, `seq` = the scope's head, `horizon` = the highest
purged tombstone seq), `tasks` (`_id` = task id, plus derived fields `prio`, `due_key`,
`words`, `deleted_at`), `revoked_tokens` (`_id` = jti, `expires_at`). Returned dicts have
exactly the shapes of store/base.py: `_id` and derived fields never leave this module.

Delivery contract (DESIGN.md 5.3). Every change runs in one multi-document transaction
that (1) reads the task, (2) `$inc`s the scope's counter document and (3) writes the task
with that seq; commit publishes all three at once. Two writers of one scope both write the
counter document, and MongoDB's snapshot isolation makes the second one fail with a
`WriteConflict` (label `TransientTransactionError`) if the first has not committed, or
committed after the second's snapshot was taken. `with_transaction` retries it (with
jittered backoff) in a fresh snapshot that contains the first commit. So a scope's commits
are serialised in seq order across every process that shares the database, and seq N is
never visible without every change below it.

Within one instance, writes to one scope also wait their turn in a FIFO queue
(`ScopeQueue`) before starting their transaction. That is an optimisation, not the
guarantee (the transaction alone is correct across instances): without it, 20 concurrent
writers of one scope abort each other's transactions over and over, and PyMongo's
exponential backoff lets unlucky writers starve for seconds (measured: up to 5.8 s per
write on SecantusDB). With it, conflicts only happen between instances, at most one
transaction per instance per scope. The contract tests run the MongoDB backend as two
instances on one database (tests/mongo_server.py), so both paths are exercised.

Sync reads the head and the changes inside one read-only transaction with read concern
`snapshot`: one point in time, exactly as SQLite's read transaction. It also bounds the
changes by that head (`seq <= head`), which keeps the answer correct even if a deployment
weakened the snapshot (reading the head first, then the changes up to it: every change up
to the head committed before the head was read).

Text search (`TaskQuery.terms`): `$text` is not used. It has no prefix matching (the
contract asks that `cof` finds "coffee"), and SecantusDB, the test server, refuses text
indexes (code 67). Each task stores `words`: the distinct words of title and description,
lower-cased, NFKD-decomposed with combining marks stripped (`Café` -> `cafe`), split on
what is neither a letter nor a digit (as SQLite's FTS5 `unicode61` tokenizer splits).
A multikey index on (scope, words) serves `{words: {$all: [/^term/, ...]}}` with anchored,
case-sensitive, escaped regexes, which MongoDB answers from index bounds
(`["cof", "cog")`). See docs/decisions.md.

Failures: a taken e-mail is `conflict` (DuplicateKeyError); any driver error (server
selection, network, timeout, a server that rejects the command) is `unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import pymongo
from bson.regex import Regex
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference

from realtime.errors import ApiError, not_found, unavailable

from .base import (
    NO_DUE_KEY,
    PRIORITIES,
    PRIORITY_RANK,
    STATUSES,
    TASK_FIELDS,
    CreateOutcome,
    SyncAnswer,
    Task,
    TaskQuery,
    User,
    search_words,
    tombstone,
    version_conflict,
)

T = TypeVar("T")
Doc = dict[str, Any]

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "taskmaster"
USER_FIELDS = ("id", "email", "name", "password_hash", "created_at")
SORT_FIELD = {"created": "created_at", "updated": "updated_at", "due": "due_key",
              "priority": "prio"}
# What a task read needs; the derived `words` array can be long, so it never travels back.
TASK_PROJECTION = {name: 1 for name in TASK_FIELDS if name != "id"}
LIVE = {"deleted": False}
# Index creation errors that mean "this server does not do partial indexes".
NO_PARTIAL_INDEX_CODES = {2, 9, 67, 197}
FAILURE_LOG_INTERVAL = 5.0  # seconds between two log lines about store failures
# A write transaction that keeps losing a duplicate-key race is re-run this many times.
DUPLICATE_RETRIES = 3



def _term_patterns(terms: Iterable[str]) -> list[Regex[str]] | None:
    """One anchored regex per word of the terms, or None when a term has no word at all
    (it can prefix no word, so nothing matches)."""
    patterns: list[Regex[str]] = []
    for term in terms:
        words = search_words(term)
        if not words:
            return None
        patterns.extend(Regex("^" + re.escape(word)) for word in words)
    return patterns


def _task(doc: Mapping[str, Any]) -> Task:
    if doc["deleted"]:
        return {"id": doc["_id"], "scope": doc["scope"], "seq": doc["seq"],
                "version": doc["version"], "deleted": True}
    return {
        "id": doc["_id"], "owner": doc["owner"], "scope": doc["scope"], "title": doc["title"],
        "description": doc["description"], "status": doc["status"],
        "priority": doc["priority"], "due_date": doc["due_date"],
        "created_at": doc["created_at"], "updated_at": doc["updated_at"],
        "version": doc["version"], "seq": doc["seq"], "deleted": False,
    }


def _user(doc: Mapping[str, Any] | None) -> User | None:
    if doc is None:
        return None
    return {"id": doc["_id"], **{name: doc[name] for name in USER_FIELDS[1:]}}


def _derived(task: Mapping[str, Any]) -> Doc:
    """The stored fields computed from a task's content (for sorting and search)."""
    return {
        "prio": PRIORITY_RANK[task["priority"]],
        "due_key": task["due_date"] or NO_DUE_KEY,
        "words": search_words(task["title"], task["description"]),
    }


class _Retry(Exception):
    """A write transaction lost a duplicate-key race; run it again in a fresh snapshot."""


class _Turns:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # FIFO: waiters are served in arrival order
        self.holders = 0  # the writer holding the lock and those waiting for it


class ScopeQueue:
    """One FIFO lock per scope that has writers waiting, dropped when the last one leaves
    (so its size is bounded by the writes in flight, not by the number of scopes)."""

    def __init__(self) -> None:
        self._turns: dict[str, _Turns] = {}

    def __len__(self) -> int:
        return len(self._turns)

    @contextlib.asynccontextmanager
    async def turn(self, scope: str, max_wait: float) -> AsyncIterator[None]:
        turns = self._turns.setdefault(scope, _Turns())
        turns.holders += 1
        try:
            try:
                async with asyncio.timeout(max_wait):
                    await turns.lock.acquire()
            except TimeoutError:
                raise unavailable("too many writes are queued for this scope, try again") \
                    from None
            try:
                yield
            finally:
                turns.lock.release()
        finally:
            turns.holders -= 1
            if not turns.holders:
                del self._turns[scope]


def _client_options(query: str, timeout: float) -> tuple[Doc, float]:
    """Our defaults for the options the URL does not set, and the per-call timeout."""
    given = {name.lower(): value for name, value in parse_qsl(query, keep_blank_values=True)}
    if "timeoutms" in given:
        try:
            timeout = float(given["timeoutms"]) / 1000
        except ValueError:
            raise ValueError("mongodb URL: timeoutMS must be a number") from None
    millis = max(1, int(timeout * 1000))
    defaults = {
        "timeoutMS": millis,  # client-side operation timeout, retries included (CSOT)
        "serverSelectionTimeoutMS": millis,
        "connectTimeoutMS": millis,
        "w": "majority",  # an acknowledged write survives the loss of the primary
        "appname": "taskmaster-realtime",
    }
    return {name: value for name, value in defaults.items()
            if name.lower() not in given}, timeout


class MongoStore:
    """Store backend for `mongodb://` and `mongodb+srv://` URLs."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"mongodb", "mongodb+srv"}:
            raise ValueError(f"not a MongoDB URL: {parts.scheme}://")
        self.url = url
        self.database_name = unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
        if re.search(r'[/\\. "$\x00]', self.database_name) or len(self.database_name) > 63:
            raise ValueError(f"mongodb URL: invalid database name {self.database_name!r}")
        self.options, self.timeout = _client_options(parts.query, timeout)
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._queue = ScopeQueue()
        self._last_failure_log = -FAILURE_LOG_INTERVAL
        self.observe: Callable[[str, float], None] | None = None  # (kind, seconds) per call

    # -- plumbing ---------------------------------------------------------------

    @property
    def db(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise unavailable("the store is closed")
        return self._db

    @property
    def users(self) -> AsyncCollection[Doc]:
        return self.db["users"]

    @property
    def scopes(self) -> AsyncCollection[Doc]:
        return self.db["scopes"]

    @property
    def tasks(self) -> AsyncCollection[Doc]:
        return self.db["tasks"]

    @property
    def revoked(self) -> AsyncCollection[Doc]:
        return self.db["revoked_tokens"]

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   deadline: float | None = None) -> T:
        """Run one store call under the deadline, translating driver errors."""
        remaining = self.timeout if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise unavailable("the store did not answer in time")
        started = time.perf_counter()
        try:
            with pymongo.timeout(remaining):
                return await fn(*args)
        except ApiError:
            raise
        except PyMongoError as exc:
            # Clients learn that the store is unavailable; the log learns why (addresses and
            # server messages stay out of API answers).
            if isinstance(exc, ConnectionFailure) or exc.timeout:
                self._log_failure("mongodb store unreachable or too slow: %s", exc)
                raise unavailable() from None
            self._log_failure("mongodb store error: %s", exc)
            raise unavailable("the store failed, try again shortly") from None
        finally:
            if self.observe is not None:
                # Only seq-taking writes come with a deadline (queue wait included).
                self.observe("read" if deadline is None else "write",
                             time.perf_counter() - started)

    def _log_failure(self, message: str, exc: PyMongoError) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL:  # one line, not a flood
            self._last_failure_log = now
            log.warning(message, _short(exc))

    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(session, *args)` in a transaction, re-run on transient conflicts.

        `with_transaction` retries TransientTransactionError (write conflicts) and
        UnknownTransactionCommitResult with jittered backoff until the CSOT deadline set by
        `_run`; `_Retry` (a lost duplicate-key race) is re-run here a few times."""
        client = self._client
        if client is None:
            raise unavailable("the store is closed")
        for attempt in range(DUPLICATE_RETRIES):
            async with client.start_session(causal_consistency=False) as session:
                try:
                    return await session.with_transaction(
                        lambda s: fn(s, *args),
                        read_concern=ReadConcern("snapshot"),
                        read_preference=ReadPreference.PRIMARY,
                    )
                except _Retry:
                    if attempt == DUPLICATE_RETRIES - 1:
                        raise unavailable("the store is too busy, try again") from None
        raise AssertionError("unreachable")

    async def open(self) -> None:
        try:
            self._client = AsyncMongoClient(self.url, document_class=dict, **self.options)
        except (ConfigurationError, InvalidURI) as exc:
            raise ValueError(f"mongodb URL: {exc}") from None
        self._db = self._client[self.database_name]
        try:
            await self._run(self._check_deployment)
            await self._run(self._create_indexes)
        except BaseException:
            await self.close()
            raise

    async def _check_deployment(self) -> None:
        hello = await self.db.command("hello")
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise ValueError(
                "the MongoDB store needs a replica set or a sharded cluster (it commits each "
                "change and its seq in one transaction); a standalone mongod can be made a "
                "one-member replica set with --replSet rs0 and rs.initiate()")

    async def _create_indexes(self) -> None:
        await self.users.create_index("email", unique=True, name="email_unique")
        await self.revoked.create_index("expires_at", name="expires_at")
        await self.tasks.create_index([("scope", ASCENDING), ("seq", ASCENDING)], unique=True,
                                      name="scope_seq_unique")
        live = [
            ("scope_status", [("scope", ASCENDING), ("status", ASCENDING)]),
            ("scope_created", [("scope", ASCENDING), ("created_at", ASCENDING),
                               ("_id", ASCENDING)]),
            ("scope_updated", [("scope", ASCENDING), ("updated_at", ASCENDING),
                               ("_id", ASCENDING)]),
            ("scope_due", [("scope", ASCENDING), ("due_key", ASCENDING), ("_id", ASCENDING)]),
            ("scope_prio", [("scope", ASCENDING), ("prio", ASCENDING), ("_id", ASCENDING)]),
            ("scope_words", [("scope", ASCENDING), ("words", ASCENDING)]),
        ]
        for name, keys in live:
            await self._partial_index(keys, name, LIVE)
        await self._partial_index([("deleted_at", ASCENDING)], "tombstones", {"deleted": True})

    async def _partial_index(self, keys: list[tuple[str, int]], name: str,
                             where: Doc) -> None:
        try:
            await self.tasks.create_index(keys, name=name, partialFilterExpression=where)
        except OperationFailure as exc:
            if exc.code not in NO_PARTIAL_INDEX_CODES:
                raise
            log.warning("no partial index %s on this server (%s); using a full one", name,
                        exc)
            await self.tasks.create_index(keys, name=name)

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()

    async def ping(self) -> None:
        await self._run(self.db.command, "ping")

    # -- users and tokens --------------------------------------------------------

    async def create_user(self, user: User) -> User:
        doc = {"_id": user["id"], **{name: user[name] for name in USER_FIELDS[1:]}}

        async def insert() -> None:
            try:
                await self.users.insert_one(doc)
            except DuplicateKeyError:
                raise ApiError("conflict", "an account with this email already exists") \
                    from None

        await self._run(insert)
        return user

    async def user_by_email(self, email: str) -> User | None:
        return _user(await self._run(self.users.find_one, {"email": email}))

    async def user_by_id(self, user_id: str) -> User | None:
        return _user(await self._run(self.users.find_one, {"_id": user_id}))

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._run(self.users.update_one, {"_id": user_id},
                        {"$set": {"password_hash": password_hash}})

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        async def upsert() -> None:
            with contextlib.suppress(DuplicateKeyError):  # a concurrent revocation won
                await self.revoked.update_one(
                    {"_id": jti}, {"$setOnInsert": {"expires_at": expires_at}}, upsert=True)

        await self._run(upsert)

    async def revocations(self, now_epoch: float) -> dict[str, float]:
        async def load() -> dict[str, float]:
            cursor = self.revoked.find({"expires_at": {"$gte": now_epoch}})
            return {doc["_id"]: doc["expires_at"] async for doc in cursor}

        result: dict[str, float] = await self._run(load)
        return result

    async def is_revoked(self, jti: str) -> bool:
        return await self._run(self.revoked.find_one, {"_id": jti}, {"_id": 1}) is not None

    # -- tasks -------------------------------------------------------------------

    async def create_task(self, task: Task) -> tuple[Task, bool]:
        return await self._write(task["scope"], self._create_task, task)

    async def create_tasks(self, tasks: Sequence[Task]) -> list[CreateOutcome]:
        """One transaction per task, all under way at once: each queues for its scope's
        turn before the first suspends (asyncio.Lock is FIFO), so a scope's seqs follow the
        order of `tasks`. A task's failure is its own outcome."""

        async def one(task: Task) -> CreateOutcome:
            try:
                return await self.create_task(task)
            except ApiError as exc:
                return exc

        return list(await asyncio.gather(*(one(task) for task in tasks)))

    async def update_task(self, scopes: Collection[str], task_id: str,
                          changes: dict[str, Any], expected_version: int | None,
                          now: str) -> tuple[Task, bool]:
        scopes = tuple(scopes)
        return await self._write(await self._scope_of(scopes, task_id), self._update_task,
                                 scopes, task_id, changes, expected_version, now)

    async def delete_task(self, scopes: Collection[str], task_id: str,
                          expected_version: int | None, now: str) -> Task:
        scopes = tuple(scopes)
        return await self._write(await self._scope_of(scopes, task_id), self._delete_task,
                                 scopes, task_id, expected_version, now)

    async def _scope_of(self, scopes: tuple[str, ...], task_id: str) -> str | None:
        """The scope a write to `task_id` will take a seq in, for the local queue. A task
        never changes scope; with several candidate scopes, one indexed lookup tells."""
        if len(scopes) == 1:
            return scopes[0]
        doc = await self._run(self.tasks.find_one, {"_id": task_id}, {"scope": 1})
        return doc["scope"] if doc is not None and doc["scope"] in scopes else None

    async def _write(self, scope: str | None, fn: Callable[..., Awaitable[T]],
                     *args: Any) -> T:
        """Run a seq-taking write transaction, queued behind this instance's other writes
        to the same scope. The queue is not what makes seq order commit order (the
        transaction is, across instances); it keeps the writers of one instance from
        aborting each other's transactions, and serves them first come, first served."""
        deadline = time.monotonic() + self.timeout
        if scope is None:
            return await self._run(self._transaction, fn, *args, deadline=deadline)
        async with self._queue.turn(scope, self.timeout):
            return await self._run(self._transaction, fn, *args, deadline=deadline)

    async def get_task(self, scopes: Collection[str], task_id: str) -> Task | None:
        doc = await self._run(self.tasks.find_one,
                              {"_id": task_id, "scope": {"$in": list(scopes)}, **LIVE},
                              TASK_PROJECTION)
        return None if doc is None else _task(doc)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        return await self._run(self._list_tasks, query)

    async def task_stats(self, scopes: Collection[str], now: str,
                         week_end: str) -> dict[str, Any]:
        return await self._run(self._task_stats, list(scopes), now, week_end)

    async def sync(self, scope: str, since: int, limit: int) -> SyncAnswer:
        return await self._run(self._transaction, self._sync, scope, since, limit)

    async def settled_head(self, scope: str) -> int:
        # After this instance's queued writes to the scope. A transaction whose commit
        # was sent but whose answer timed out settles on the server, usually within
        # milliseconds; the caller reads this after a delay, and sockets repair again on
        # the scope's next change in any case.
        async with self._queue.turn(scope, self.timeout):
            return await self.head(scope)

    async def head(self, scope: str) -> int:
        doc = await self._run(self.scopes.find_one, {"_id": scope}, {"seq": 1})
        return int(doc["seq"]) if doc else 0

    async def heads(self, scopes: Collection[str]) -> dict[str, int]:
        wanted = list(scopes)
        heads = dict.fromkeys(wanted, 0)
        if wanted:
            docs = await self._run(self._find_heads, wanted)
            heads.update((doc["_id"], int(doc["seq"])) for doc in docs)
        return heads

    async def _find_heads(self, scopes: list[str]) -> list[dict[str, Any]]:
        return [doc async for doc in self.scopes.find({"_id": {"$in": scopes}}, {"seq": 1})]

    async def purge(self, tombstones_before: str, now_epoch: float) -> int:
        return await self._run(self._purge, tombstones_before, now_epoch)

    # -- the operations ----------------------------------------------------------

    async def _next_seq(self, session: AsyncClientSession, scope: str) -> int:
        """+1 on the scope's counter inside the caller's transaction: the write that makes
        concurrent writers of one scope conflict, and so commit one after the other."""
        try:
            doc = await self.scopes.find_one_and_update(
                {"_id": scope}, {"$inc": {"seq": 1}, "$setOnInsert": {"horizon": 0}},
                upsert=True, return_document=ReturnDocument.AFTER, session=session,
            )
        except DuplicateKeyError:
            raise _Retry from None  # two first writes of a new scope raced on the upsert
        assert doc is not None
        return int(doc["seq"])

    async def _current(self, session: AsyncClientSession, task_id: str) -> Doc | None:
        return await self.tasks.find_one({"_id": task_id}, TASK_PROJECTION, session=session)

    async def _create_task(self, session: AsyncClientSession, task: Task) -> tuple[Task, bool]:
        existing = await self._current(session, task["id"])
        if existing is not None:
            if (existing["owner"] == task["owner"] and existing["scope"] == task["scope"]
                    and not existing["deleted"]):
                return _task(existing), False
            raise ApiError("conflict", "a task with this id already exists", {"id": task["id"]})
        seq = await self._next_seq(session, task["scope"])
        created = {**task, "version": 1, "seq": seq, "deleted": False}
        doc = {"_id": task["id"], **{name: created[name] for name in TASK_FIELDS[1:]},
               **_derived(created)}
        try:
            await self.tasks.insert_one(doc, session=session)
        except DuplicateKeyError:
            raise _Retry from None  # the same id was created meanwhile: answer from it
        return {name: created[name] for name in TASK_FIELDS}, True

    async def _writable(self, session: AsyncClientSession, scopes: tuple[str, ...],
                        task_id: str, expected_version: int | None) -> Task:
        doc = await self._current(session, task_id)
        if doc is None or doc["deleted"] or doc["scope"] not in scopes:
            raise not_found()
        current = _task(doc)
        if expected_version is not None and expected_version != current["version"]:
            raise version_conflict(current)
        return current

    async def _update_task(self, session: AsyncClientSession, scopes: tuple[str, ...],
                           task_id: str, changes: dict[str, Any],
                           expected_version: int | None, now: str) -> tuple[Task, bool]:
        current = await self._writable(session, scopes, task_id, expected_version)
        effective = {k: v for k, v in changes.items() if current[k] != v}
        if not effective:
            return current, False
        seq = await self._next_seq(session, current["scope"])
        updated = {**current, **effective, "updated_at": now,
                   "version": current["version"] + 1, "seq": seq}
        fields = {name: updated[name] for name in
                  ("title", "description", "status", "priority", "due_date", "updated_at",
                   "version", "seq")}
        await self.tasks.update_one({"_id": task_id},
                                    {"$set": {**fields, **_derived(updated)}},
                                    session=session)
        return updated, True

    async def _delete_task(self, session: AsyncClientSession, scopes: tuple[str, ...],
                           task_id: str, expected_version: int | None, now: str) -> Task:
        current = await self._writable(session, scopes, task_id, expected_version)
        seq = await self._next_seq(session, current["scope"])
        version = current["version"] + 1
        # The tombstone keeps no content: only what a client needs to learn of the deletion.
        await self.tasks.update_one({"_id": task_id}, {"$set": {
            "title": "", "description": "", "words": [], "deleted": True, "deleted_at": now,
            "updated_at": now, "version": version, "seq": seq,
        }}, session=session)
        return tombstone({**current, "seq": seq, "version": version})

    async def _list_tasks(self, query: TaskQuery) -> list[Task]:
        if query.limit <= 0:
            return []  # a MongoDB limit of 0 would mean "no limit"
        where: Doc = {"scope": {"$in": list(query.scopes)}, **LIVE}
        if query.status is not None:
            where["status"] = query.status
        if query.priority is not None:
            where["priority"] = query.priority
        due: Doc = {}
        if query.due_before is not None:
            due["$lt"] = query.due_before
        if query.due_after is not None:
            due["$gt"] = query.due_after
            due.setdefault("$lt", NO_DUE_KEY)  # only tasks that have a due date
        if due:
            where["due_key"] = due
        if query.terms:
            patterns = _term_patterns(query.terms)
            if patterns is None:
                return []
            where["words"] = {"$all": patterns}
        field = SORT_FIELD[query.sort]
        direction = DESCENDING if query.descending else ASCENDING
        if query.after is not None:
            key, last_id = query.after
            beyond = "$lt" if query.descending else "$gt"
            where = {"$and": [where, {"$or": [
                {field: {beyond: key}},
                {field: key, "_id": {beyond: last_id}},
            ]}]}
        cursor = (self.tasks.find(where, TASK_PROJECTION)
                  .sort([(field, direction), ("_id", direction)]).limit(query.limit))
        return [_task(doc) async for doc in cursor]

    async def _task_stats(self, scopes: list[str], now: str, week_end: str) -> dict[str, Any]:
        open_dated = [{"$ne": ["$status", "done"]}, {"$ne": ["$due_date", None]}]

        def count_if(*conditions: Doc) -> Doc:
            return {"$sum": {"$cond": [{"$and": [*open_dated, *conditions]}, 1, 0]}}

        cursor = await self.tasks.aggregate([
            {"$match": {"scope": {"$in": scopes}, **LIVE}},
            {"$group": {
                "_id": {"status": "$status", "priority": "$priority"},
                "count": {"$sum": 1},
                "overdue": count_if({"$lt": ["$due_key", now]}),
                "due_this_week": count_if({"$gte": ["$due_key", now]},
                                          {"$lt": ["$due_key", week_end]}),
            }},
        ])
        by_status = dict.fromkeys(STATUSES, 0)
        by_priority = dict.fromkeys(PRIORITIES, 0)
        overdue = due_this_week = 0
        async for group in cursor:
            by_status[group["_id"]["status"]] += group["count"]
            by_priority[group["_id"]["priority"]] += group["count"]
            overdue += group["overdue"]
            due_this_week += group["due_this_week"]
        return {"total": sum(by_status.values()), "by_status": by_status,
                "by_priority": by_priority, "overdue": overdue, "due_this_week": due_this_week}

    async def _sync(self, session: AsyncClientSession, scope: str, since: int,
                    limit: int) -> SyncAnswer:
        head_doc = await self.scopes.find_one({"_id": scope}, session=session)
        head = int(head_doc["seq"]) if head_doc else 0
        horizon = int(head_doc.get("horizon", 0)) if head_doc else 0
        reset = since < horizon or since > head
        start = 0 if reset else since
        cursor = (self.tasks.find({"scope": scope, "seq": {"$gt": start, "$lte": head}},
                                  TASK_PROJECTION, session=session)
                  .sort("seq", ASCENDING).limit(limit + 1))
        docs = [doc async for doc in cursor]
        more = len(docs) > limit
        changes = [_task(doc) for doc in docs[:limit]]
        # With more to come, the client continues from the last change it got.
        seq = (changes[-1]["seq"] if changes else start) if more else head
        return SyncAnswer(scope=scope, seq=seq, changes=changes, more=more, reset=reset)

    async def _purge(self, tombstones_before: str, now_epoch: float) -> int:
        expired: Doc = {"deleted": True, "deleted_at": {"$lt": tombstones_before}}
        cursor = await self.tasks.aggregate([
            {"$match": expired}, {"$group": {"_id": "$scope", "seq": {"$max": "$seq"}}},
        ])
        dropped = 0
        async for group in cursor:
            # The horizon rises before the tombstones go: a sync in between answers a reset
            # (the full state, harmless), never an answer that silently lacks a deletion.
            await self.scopes.update_one({"_id": group["_id"]},
                                         {"$max": {"horizon": group["seq"]}})
            result = await self.tasks.delete_many(
                {"scope": group["_id"], **expired, "seq": {"$lte": group["seq"]}})
            dropped += result.deleted_count
        await self.revoked.delete_many({"expires_at": {"$lt": now_epoch}})
        return dropped


def _short(exc: BaseException) -> str:
    text = str(exc).split(", full error:")[0]
    return text if len(text) <= 500 else text[:497] + "..."
