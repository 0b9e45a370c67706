"""A MongoDB for the tests: a real server named by `MONGODB_URI`, else SecantusDB.

SecantusDB (PyPI `SecantusDB`, pinned in the `test` extra) is a single-node server that
speaks MongoDB's wire protocol over WiredTiger, with multi-document transactions. It is
started as a subprocess, `python -m secantus`, on 127.0.0.1 with an OS-chosen port (read
back from its "listening on" log line) and a temporary data directory, and stopped by its
pid. By default it advertises itself as the primary of a one-member replica set named
`secantus`, which is what lets drivers run transactions against it; a plain
`mongodb://127.0.0.1:<port>/` URL is enough (the driver connects directly).

Fixtures (import both into a test module that uses them, as fixtures are looked up by
name): `mongodb_uri` (session: the server's base URI) and `mongodb_url` (one fresh,
uniquely named database per test, dropped afterwards). One SecantusDB serves the whole
run, however many modules import the fixtures. `TwoInstances` makes one store of two
MongoDB store instances sharing a database (the contract suite runs on it).

When neither a `MONGODB_URI` nor SecantusDB can be had, tests that need MongoDB fail
(never skip: SecantusDB is a test dependency that scripts/test installs).

`MongoServer` is usable on its own, for fault tests: `stop(keep_data=True)` then `start()`
brings the same server back on the same port with the same data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from store import store_from_url

from waiting import poll_until

LISTENING = re.compile(rb"secantus listening on (\S+):(\d+)")
START_TIMEOUT = 30.0


class MongoServerError(RuntimeError):
    pass


class MongoServer:
    """One SecantusDB daemon in a subprocess."""

    def __init__(self, data_dir: Path | None = None, port: int = 0) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="taskmaster-secantus-"))
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "secantusd.log"

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the daemon (on the previous port after a stop) and wait until it answers."""
        if self.process is not None and self.process.poll() is None:
            return self.uri
        if importlib.util.find_spec("secantus") is None:
            raise MongoServerError(
                "SecantusDB is not installed (pip install -e '.[test]'), and MONGODB_URI "
                "is not set")
        config = self.data_dir / "secantusd.toml"
        config.touch()  # an explicit, empty config: no auto-discovered ~/.secantus file
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [
            sys.executable, "-m", "secantus", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", str(self.data_dir / "db"), "--log-level", "INFO",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        process = self.process

        def listening() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                found = LISTENING.search(log.read())
            if found:
                self.port = int(found.group(2))
            return found is not None

        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"exited with {code}"

        try:
            poll_until(listening, timeout, "SecantusDB listening", exited)
        except AssertionError as exc:
            self.kill()
            raise MongoServerError(f"{exc}:\n{self._log_tail(offset)}") from None
        ping(self.uri, timeout=max(1.0, deadline - time.monotonic()))
        return self.uri

    def stop(self, keep_data: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) the daemon by its pid; drop its data unless asked not to."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if not keep_data and self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: the data directory stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def _log_tail(self, offset: int) -> str:
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()[-4000:].decode(errors="replace")
        return "(no log)"


def ping(uri: str, timeout: float = 5.0) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
    finally:
        client.close()


def database_url(uri: str, database: str) -> str:
    """`uri` with its database (the URL path) replaced, options kept. Credentials keep
    authenticating against the database they did (the path is also the default
    authSource)."""
    parts = urlsplit(uri)
    query = parts.query
    if "@" in parts.netloc and "authsource=" not in query.lower():
        source = parts.path.strip("/") or "admin"
        query = f"{query}&authSource={source}" if query else f"authSource={source}"
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, query, ""))


def drop_database(uri: str, database: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(uri, timeoutMS=10_000)
    try:
        client.drop_database(database)
    finally:
        client.close()


class TwoInstances:
    """Two MongoDB stores on one database, called in turn, as two server instances behind
    a balancer would be. Run through the store contract, every test then proves that
    instances sharing the database agree, and the concurrent-writers test makes their
    write transactions conflict for real (each instance queues its own writes to a scope,
    so without a second instance the transactions of one test would never collide)."""

    def __init__(self, url: str) -> None:
        self.instances = [store_from_url(url), store_from_url(url)]
        self._turn = itertools.cycle(self.instances)

    async def open(self) -> None:
        for instance in self.instances:
            await instance.open()

    async def close(self) -> None:
        for instance in self.instances:
            await instance.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(next(self._turn), name)


class _Shared:
    """The one server of the test run, shared by every module that imports the fixtures."""

    server: MongoServer | None = None
    uri: str | None = None
    users = 0

    @classmethod
    def acquire(cls) -> str:
        if cls.uri is None:
            given = os.environ.get("MONGODB_URI", "").strip()
            if given:
                try:
                    ping(given)
                except PyMongoError as exc:
                    raise MongoServerError(f"MONGODB_URI={given} does not answer: {exc}") \
                        from None
                cls.uri = given
            else:
                server = MongoServer()
                try:
                    cls.uri = server.start()
                except BaseException:
                    server.stop()
                    raise
                cls.server = server
        cls.users += 1
        return cls.uri

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls.server is not None:
            cls.server.stop()
            cls.server = cls.uri = None


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """The base URI of the MongoDB the tests use (no database in it)."""
    try:
        uri = _Shared.acquire()
    except MongoServerError as exc:
        # Never a skip: SecantusDB is a test dependency (scripts/test installs it).
        pytest.fail(f"no MongoDB for the tests: {exc}", pytrace=False)
    try:
        yield uri
    finally:
        _Shared.release()


@pytest.fixture
def mongodb_url(mongodb_uri: str) -> Iterator[str]:
    """A URL naming a fresh database of that server, dropped after the test on a server
    given by MONGODB_URI. The run's own SecantusDB is not asked to drop anything: its data
    directory goes when the run ends, and once, after a test had failed with its writers
    still running, a drop there spun for minutes holding SecantusDB's locks, so every later
    MongoDB test of the run failed as `unavailable` (CI, 2026-11-30)."""
    database = f"tm_test_{uuid.uuid4().hex[:16]}"
    yield database_url(mongodb_uri, database)
    if _Shared.server is None:
        with contextlib.suppress(PyMongoError):
            drop_database(mongodb_uri, database)
