"""The simulated users: registered through the REST API or read from a tokens file,
and their scopes' state read back through `GET /api/sync` (paged)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

Task = dict[str, Any]


class SetupError(Exception):
    """The run cannot start (users cannot be registered, tokens are refused...)."""


@dataclass(slots=True)
class User:
    index: int
    token: str
    user_id: str
    email: str | None = None

    @property
    def scope(self) -> str:
        return f"user:{self.user_id}"


def auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return {"error": {"code": "invalid", "message": raw[:200].decode(errors="replace")}}


def run_prefix() -> str:
    """A per-run e-mail prefix, so that two runs against one server never collide."""
    return f"lt{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(3)}"


async def register_users(http: aiohttp.ClientSession, url: str, prefix: str, count: int,
                         concurrency: int, within: float,
                         progress: Callable[[int], None] | None = None) -> list[User]:
    """Register `count` users `<prefix>-<i>@loadtest.example.com` through the REST API."""
    password = "lt-" + secrets.token_urlsafe(12)
    users: list[User | None] = [None] * count
    indexes = iter(range(count))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index in indexes:  # shared iterator: each index is taken once
            email = f"{prefix}-{index}@loadtest.example.com"
            body = {"email": email, "password": password, "name": f"Load test {index}"}
            answer: Any = None
            for _attempt in range(3):
                try:
                    async with asyncio.timeout(within), http.post(
                            url + "/api/auth/register", json=body) as response:
                        answer = await _json(response)
                        status = response.status
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    answer = f"{type(exc).__name__}: {exc}"
                    continue
                if status == 201 and isinstance(answer, dict) and "token" in answer:
                    break
                if status not in (429, 503):
                    raise SetupError(f"registering {email} answered {status}: {answer}")
                await asyncio.sleep(0.5)
            else:
                raise SetupError(f"could not register {email}: {answer}")
            users[index] = User(index, answer["token"], answer["user"]["id"], email)
            done += 1
            if progress is not None:
                progress(done)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, count)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return [user for user in users if user is not None]


def read_tokens_file(path: Path) -> list[tuple[str, str | None]]:
    """(token, user id or None) per line: a bare token, or a JSON object with `token` and
    optionally `user_id` or `user: {id}` (the answer of POST /api/auth/register or login).
    Blank lines and lines starting with # are skipped."""
    entries: list[tuple[str, str | None]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SetupError(f"{path}:{number}: not JSON: {exc}") from None
            token = item.get("token") if isinstance(item, dict) else None
            if not isinstance(token, str) or not token:
                raise SetupError(f"{path}:{number}: no token")
            user_id = item.get("user_id") or (item.get("user") or {}).get("id")
            entries.append((token, str(user_id) if user_id else None))
        else:
            entries.append((line, None))
    if not entries:
        raise SetupError(f"{path} holds no token")
    return entries


def write_tokens_file(path: Path, users: list[User]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for user in users:
            handle.write(json.dumps({"token": user.token, "user_id": user.user_id,
                                     "email": user.email}) + "\n")


async def users_from_tokens(http: aiohttp.ClientSession, url: str,
                            entries: list[tuple[str, str | None]], count: int,
                            concurrency: int, within: float) -> list[User]:
    """The first `count` tokens of the file; the user id from GET /api/auth/me if absent."""
    if len(entries) < count:
        raise SetupError(f"--users {count} but the tokens file has {len(entries)} tokens")
    entries = entries[:count]
    users: list[User | None] = [None] * count
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int, token: str, user_id: str | None) -> None:
        if user_id is None:
            async with gate:
                try:
                    async with asyncio.timeout(within), http.get(
                            url + "/api/auth/me", headers=auth_headers(token)) as response:
                        answer = await _json(response)
                        status = response.status
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    raise SetupError(f"GET /api/auth/me: {type(exc).__name__}: {exc}") from None
            if status != 200:
                raise SetupError(f"token {index + 1} of the file is refused ({status}): "
                                 f"{answer}")
            user_id = str(answer["user"]["id"])
        users[index] = User(index, token, user_id)

    await asyncio.gather(*(one(i, token, uid) for i, (token, uid) in enumerate(entries)))
    return [user for user in users if user is not None]


@dataclass(slots=True)
class ScopeState:
    scope: str
    seq: int
    tasks: dict[str, Task]
    reset: bool = False


async def fetch_state(http: aiohttp.ClientSession, url: str, token: str, scope: str,
                      within: float, max_pages: int = 10_000) -> ScopeState:
    """The scope's whole current state (tombstones included) and head, through REST
    `GET /api/sync?scope=...&since=0`, following `more` page by page."""
    tasks: dict[str, Task] = {}
    since = 0
    reset = False
    for _page in range(max_pages):
        params = {"scope": scope, "since": str(since)}  # the server's own page size
        async with asyncio.timeout(within), http.get(
                url + "/api/sync", params=params, headers=auth_headers(token)) as response:
            answer = await _json(response)
            status = response.status
        if status != 200 or not isinstance(answer, dict):
            raise SetupError(f"GET /api/sync?scope={scope} answered {status}: {answer}")
        if answer.get("reset") and since:
            tasks.clear()  # the scope's history moved under us: start again from seq 0
            reset = True
        for change in answer["changes"]:
            tasks[change["id"]] = change
        since = int(answer["seq"])
        if not answer["more"]:
            return ScopeState(scope, since, tasks, reset)
    raise SetupError(f"GET /api/sync?scope={scope}: more than {max_pages} pages")
