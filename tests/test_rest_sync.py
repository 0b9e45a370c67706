"""`GET /api/sync` through the real app over HTTP: changes after a seq, tombstones,
paging with `limit`/`more`, and `reset` when a cursor cannot be served."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from realtime import keys
from realtime.validation import iso

from conftest import Api


def scope_of(api: Api) -> str:
    return f"user:{api.user['id']}"  # type: ignore[attr-defined]


async def sync(api: Api, **params: Any) -> dict[str, Any]:
    reply = await api.get("/api/sync", params={"scope": scope_of(api), **params})
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


async def create(api: Api, title: str) -> dict[str, Any]:
    reply = await api.post("/api/tasks", json={"title": title})
    assert reply.status == 201
    return reply.body["task"]  # type: ignore[no-any-return]


async def test_empty_scope(user_api: Api) -> None:
    assert await sync(user_api) == {"scope": scope_of(user_api), "seq": 0, "changes": [],
                                    "more": False, "reset": False}


async def test_sync_returns_latest_state_with_tombstones(user_api: Api) -> None:
    a = await create(user_api, "a")                                       # seq 1
    b = await create(user_api, "b")                                       # seq 2
    c = await create(user_api, "c")                                       # seq 3
    updated = (await user_api.patch(f"/api/tasks/{a['id']}",
                                    json={"title": "a2"})).body["task"]   # seq 4
    gone = (await user_api.delete(f"/api/tasks/{b['id']}")).body["task"]  # seq 5

    answer = await sync(user_api, since=0)
    assert answer["seq"] == 5
    assert (answer["more"], answer["reset"]) == (False, False)
    # One entry per task, its latest state, in seq order.
    assert answer["changes"] == [c, updated, gone]
    assert [change["seq"] for change in answer["changes"]] == [3, 4, 5]
    assert gone == {"id": b["id"], "scope": scope_of(user_api), "seq": 5, "version": 2,
                    "deleted": True}


async def test_since_returns_only_later_changes(user_api: Api) -> None:
    tasks = [await create(user_api, f"t{n}") for n in range(5)]
    assert [c["id"] for c in (await sync(user_api, since=3))["changes"]] == \
        [tasks[3]["id"], tasks[4]["id"]]
    at_head = await sync(user_api, since=5)
    assert (at_head["seq"], at_head["changes"], at_head["more"], at_head["reset"]) == \
        (5, [], False, False)
    await user_api.patch(f"/api/tasks/{tasks[0]['id']}", json={"status": "done"})
    after = await sync(user_api, since=5)
    assert [(c["id"], c["seq"], c["status"]) for c in after["changes"]] == \
        [(tasks[0]["id"], 6, "done")]
    assert after["seq"] == 6


async def test_limit_pages_with_more_and_no_gaps(user_api: Api) -> None:
    for n in range(11):
        await create(user_api, f"t{n}")
    pages = []
    since = 0
    for _ in range(10):
        answer = await sync(user_api, since=since, limit=3)
        assert len(answer["changes"]) <= 3
        pages.append(answer)
        if answer["changes"]:
            assert answer["seq"] == answer["changes"][-1]["seq"]
        since = answer["seq"]
        if not answer["more"]:
            break
    assert [p["more"] for p in pages] == [True, True, True, False]
    seqs = [change["seq"] for page in pages for change in page["changes"]]
    assert seqs == list(range(1, 12))
    assert pages[-1]["seq"] == 11


async def test_limit_equal_to_the_remaining_changes_says_no_more(user_api: Api) -> None:
    for n in range(4):
        await create(user_api, f"t{n}")
    answer = await sync(user_api, since=0, limit=4)
    assert (len(answer["changes"]), answer["more"], answer["seq"]) == (4, False, 4)


async def test_since_beyond_the_head_resets(user_api: Api) -> None:
    """A cursor from the future (another server's data, a wiped store): start over."""
    first = await create(user_api, "a")
    second = await create(user_api, "b")
    answer = await sync(user_api, since=99)
    assert answer["reset"] is True
    assert answer["changes"] == [first, second]
    assert (answer["seq"], answer["more"]) == (2, False)
    paged = await sync(user_api, since=99, limit=1)
    assert (paged["reset"], paged["more"], paged["changes"]) == (True, True, [first])


async def test_since_older_than_the_retention_horizon_resets(user_api: Api) -> None:
    keep = await create(user_api, "keep")                                   # seq 1
    doomed = await create(user_api, "doomed")                               # seq 2
    await user_api.delete(f"/api/tasks/{doomed['id']}")                     # seq 3
    later = await create(user_api, "later")                                 # seq 4
    # Purge every tombstone (as the retention sweep does once they are old enough).
    cutoff = iso(datetime.now(UTC) + timedelta(days=1))
    assert await user_api.app[keys.STORE].purge(cutoff, time.time()) == 1

    stale = await sync(user_api, since=1)  # the deletion at seq 3 is no longer known
    assert stale["reset"] is True
    assert stale["changes"] == [keep, later]
    assert stale["seq"] == 4
    fresh = await sync(user_api, since=3)  # at or past the horizon: served normally
    assert (fresh["reset"], fresh["changes"]) == (False, [later])


async def test_sync_needs_a_token(user_api: Api) -> None:
    reply = await user_api.get("/api/sync", params={"scope": scope_of(user_api)}, token=None)
    assert reply.status == 401
    assert reply.error["code"] == "unauthorized"


async def test_sync_scope_is_required(user_api: Api) -> None:
    reply = await user_api.get("/api/sync", params={"since": 0})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert "scope" in reply.error["message"]
