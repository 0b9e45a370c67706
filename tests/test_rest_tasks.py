"""`/api/tasks*` through the real app over HTTP: create, read, list (filters, search,
sorts, cursor pagination), update, delete, stats, mutation ids, and isolation between
users."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from realtime import keys
from realtime.app import create_app
from realtime.validation import iso

from conftest import Api, OpenAPIChecker, make_config

START = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


class FakeClock:
    """The task service's clock: each reading advances by `step`, so every write
    gets its own timestamp and orders are deterministic."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(seconds=1)):
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current


def use_clock(api: Api, clock: Callable[[], datetime]) -> None:
    api.app[keys.TASKS]._clock = clock


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    reply = await api.post("/api/tasks", json={"title": "a task", **fields})
    assert reply.status == 201, reply.body
    return reply.body["task"]  # type: ignore[no-any-return]


async def head_seq(api: Api) -> int:
    """The scope's latest seq, as a full sync reports it."""
    scope = f"user:{api.user['id']}"  # type: ignore[attr-defined]
    reply = await api.get("/api/sync", params={"scope": scope})
    assert reply.status == 200 and not reply.body["more"]
    return reply.body["seq"]  # type: ignore[no-any-return]


async def list_ids(api: Api, **params: Any) -> list[str]:
    reply = await api.get("/api/tasks", params={"limit": 200, **params})
    assert reply.status == 200, reply.body
    assert reply.body["next_cursor"] is None
    return [task["id"] for task in reply.body["tasks"]]


# -- create ---------------------------------------------------------------------------


async def test_create_answers_201_with_location_etag_and_defaults(user_api: Api) -> None:
    reply = await user_api.post("/api/tasks", json={"title": "  Write the report  "})
    assert reply.status == 201
    task = reply.body["task"]
    user = user_api.user  # type: ignore[attr-defined]
    assert reply.headers["Location"] == f"/api/tasks/{task['id']}"
    assert reply.headers["ETag"] == '"1"'
    assert task["title"] == "Write the report"
    assert task["description"] == ""
    assert (task["status"], task["priority"], task["due_date"]) == ("todo", "medium", None)
    assert task["owner"] == user["id"]
    assert task["scope"] == f"user:{user['id']}"
    assert (task["version"], task["seq"], task["deleted"]) == (1, 1, False)
    assert task["created_at"] == task["updated_at"]
    fetched = await user_api.get(reply.headers["Location"])
    assert fetched.status == 200
    assert fetched.body["task"] == task
    assert fetched.headers["ETag"] == '"1"'


async def test_create_with_every_field(user_api: Api) -> None:
    task = await create(user_api, title="Plan", description="line one\nline two",
                        status="in_progress", priority="high",
                        due_date="2030-05-01T10:30:00+02:00")
    assert task["description"] == "line one\nline two"
    assert (task["status"], task["priority"]) == ("in_progress", "high")
    assert task["due_date"] == "2030-05-01T08:30:00.000Z"  # normalised to UTC


@pytest.mark.parametrize(("given", "stored"), [
    ("2030-05-01", "2030-05-01T00:00:00.000Z"),
    ("2030-05-01T10:30:00Z", "2030-05-01T10:30:00.000Z"),
    ("2030-05-01T10:30:00", "2030-05-01T10:30:00.000Z"),
    ("2030-05-01T10:30:00.123456-05:00", "2030-05-01T15:30:00.123Z"),
    (None, None),
])
async def test_due_dates_are_normalised_to_utc(user_api: Api, given: str | None,
                                               stored: str | None) -> None:
    task = await create(user_api, due_date=given)
    assert task["due_date"] == stored


async def test_retried_create_with_client_id_yields_one_task(user_api: Api) -> None:
    first = await user_api.post("/api/tasks", json={"id": "client-id_1", "title": "once"})
    assert first.status == 201
    head = await head_seq(user_api)
    again = await user_api.post("/api/tasks", json={"id": "client-id_1", "title": "once"})
    assert again.status == 200
    assert again.body["task"] == first.body["task"]
    assert again.headers["Location"] == "/api/tasks/client-id_1"
    assert again.headers["ETag"] == '"1"'
    # A retry whose body differs still returns the original, unchanged.
    changed = await user_api.post("/api/tasks", json={"id": "client-id_1", "title": "twice"})
    assert changed.status == 200
    assert changed.body["task"]["title"] == "once"
    assert await list_ids(user_api) == ["client-id_1"]
    assert await head_seq(user_api) == head  # no new change was committed


async def test_same_client_id_by_another_user_is_a_conflict(user_api: Api) -> None:
    await create(user_api, id="shared-id")
    other = await user_api.as_new_user()
    reply = await other.post("/api/tasks", json={"id": "shared-id", "title": "mine"})
    assert reply.status == 409
    assert reply.error["code"] == "conflict"
    assert "title" not in str(reply.error.get("details"))  # nothing of A's task leaks
    assert await list_ids(other) == []
    mine = await user_api.get("/api/tasks/shared-id")
    assert mine.body["task"]["title"] == "a task"


async def test_client_id_of_a_deleted_task_is_not_reused(user_api: Api) -> None:
    await create(user_api, id="gone")
    assert (await user_api.delete("/api/tasks/gone")).status == 200
    reply = await user_api.post("/api/tasks", json={"id": "gone", "title": "again"})
    assert reply.status == 409
    assert reply.error["code"] == "conflict"


async def test_reserved_route_word_is_not_a_task_id(user_api: Api) -> None:
    """`/api/tasks/stats` is the stats route, so a task called `stats` could never be read."""
    reply = await user_api.post("/api/tasks", json={"id": "stats", "title": "x"})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"
    assert "id" in reply.error["details"]["fields"]


# -- get ------------------------------------------------------------------------------


async def test_get_unknown_task_is_not_found(user_api: Api) -> None:
    reply = await user_api.get("/api/tasks/no-such-task")
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


async def test_task_routes_require_a_token(user_api: Api) -> None:
    task = await create(user_api)
    for method, path in (("GET", "/api/tasks"), ("POST", "/api/tasks"),
                         ("GET", "/api/tasks/stats"), ("GET", f"/api/tasks/{task['id']}"),
                         ("PATCH", f"/api/tasks/{task['id']}"),
                         ("DELETE", f"/api/tasks/{task['id']}")):
        reply = await user_api.request(method, path, token=None, json={"title": "x"})
        assert reply.status == 401, (method, path)
        assert reply.error["code"] == "unauthorized"
    assert (await user_api.get(f"/api/tasks/{task['id']}")).body["task"] == task


# -- list: filters and search ---------------------------------------------------------


async def test_list_filters(user_api: Api) -> None:
    use_clock(user_api, FakeClock())
    specs = {
        "a": {"status": "todo", "priority": "high", "due_date": "2030-01-01"},
        "b": {"status": "in_progress", "priority": "low", "due_date": "2030-01-10"},
        "c": {"status": "done", "priority": "high", "due_date": "2030-01-20"},
        "d": {"status": "todo", "priority": "medium"},
        "e": {"status": "todo", "priority": "high", "due_date": "2030-01-10T00:00:00Z"},
    }
    for task_id, fields in specs.items():
        await create(user_api, id=task_id, **fields)

    async def ids(**params: Any) -> set[str]:
        return set(await list_ids(user_api, **params))

    assert await ids() == set(specs)
    assert await ids(status="todo") == {"a", "d", "e"}
    assert await ids(status="in_progress") == {"b"}
    assert await ids(status="done") == {"c"}
    assert await ids(priority="high") == {"a", "c", "e"}
    assert await ids(priority="low") == {"b"}
    assert await ids(status="todo", priority="high") == {"a", "e"}
    # Strict bounds; tasks without a due date match neither.
    assert await ids(due_before="2030-01-10") == {"a"}
    assert await ids(due_before="2030-01-10T00:00:00.001Z") == {"a", "b", "e"}
    assert await ids(due_after="2030-01-10") == {"c"}
    assert await ids(due_after="2029-12-31") == {"a", "b", "c", "e"}
    assert await ids(due_after="2030-01-01", due_before="2030-01-20") == {"b", "e"}
    assert await ids(due_after="2030-01-09T23:00:00-02:00") == {"c"}  # 01:00Z on the 10th
    assert await ids(status="done", due_before="2030-01-05") == set()


async def test_text_search(user_api: Api) -> None:
    texts = {
        "report": ("Quarterly report", "numbers for the board"),
        "cafe": ("Café meeting", "bring the résumé"),
        "garden": ("Water the garden", ""),
        "reporter": ("Call the reporter", "about the café article"),
        "upper": ("NAÏVE UPPERCASE", "Ünïcödé text"),
    }
    for task_id, (title, description) in texts.items():
        await create(user_api, id=task_id, title=title, description=description)

    async def search(q: str) -> set[str]:
        return set(await list_ids(user_api, q=q))

    assert await search("quarterly") == {"report"}
    assert await search("report") == {"report", "reporter"}  # prefix of "reporter"
    assert await search("rep") == {"report", "reporter"}
    assert await search("reporter") == {"reporter"}
    assert await search("board") == {"report"}  # description is searched too
    assert await search("cafe") == {"cafe", "reporter"}  # "cafe" matches "café"
    assert await search("café") == {"cafe", "reporter"}
    assert await search("CAFÉ") == {"cafe", "reporter"}
    assert await search("resume") == {"cafe"}
    assert await search("naive uppercase") == {"upper"}
    assert await search("unicode") == {"upper"}
    assert await search("cafe meeting") == {"cafe"}  # every word must match
    assert await search("café, article!") == {"reporter"}  # punctuation is not syntax
    assert await search("garden zebra") == set()
    assert await search("nothing") == set()
    assert set(await list_ids(user_api, q="cafe", status="done")) == set()


async def test_search_follows_updates_and_deletes(user_api: Api) -> None:
    task = await create(user_api, title="alpha")
    assert await list_ids(user_api, q="alpha") == [task["id"]]
    await user_api.patch(f"/api/tasks/{task['id']}", json={"title": "beta"})
    assert await list_ids(user_api, q="alpha") == []
    assert await list_ids(user_api, q="beta") == [task["id"]]
    await user_api.delete(f"/api/tasks/{task['id']}")
    assert await list_ids(user_api, q="beta") == []


# -- list: sorts and pagination -------------------------------------------------------


PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}


def sort_key(task: dict[str, Any], sort: str) -> tuple[Any, str]:
    field = sort.lstrip("-")
    if field == "priority":
        key: Any = PRIORITY_RANK[task["priority"]]
    elif field == "due":
        key = task["due_date"] or "~"  # undated tasks after every date
    else:
        key = task[f"{field}_at"]
    return key, task["id"]


async def make_varied_tasks(api: Api, count: int) -> dict[str, dict[str, Any]]:
    """`count` tasks with distinct timestamps, mixed priorities and due dates, then
    updates in an order unlike creation, so every sort gives a different order."""
    use_clock(api, FakeClock())
    tasks = {}
    for n in range(count):
        due = None if n % 4 == 3 else iso(START + timedelta(days=(n * 7) % 11))
        task = await create(api, id=f"t{n:02d}", priority=("low", "medium", "high")[n % 3],
                            due_date=due)
        tasks[task["id"]] = task
    for n in reversed(range(0, count, 2)):
        reply = await api.patch(f"/api/tasks/t{n:02d}", json={"description": "touched"})
        tasks[f"t{n:02d}"] = reply.body["task"]
    return tasks


SORTS = ["created", "-created", "updated", "-updated", "due", "-due", "priority", "-priority"]


@pytest.mark.parametrize("sort", SORTS)
async def test_each_sort_orders_the_list(user_api: Api, sort: str) -> None:
    tasks = await make_varied_tasks(user_api, 12)
    expected = sorted(tasks.values(), key=lambda t: sort_key(t, sort),
                      reverse=sort.startswith("-"))
    assert await list_ids(user_api, sort=sort) == [t["id"] for t in expected]


async def test_sort_orders_mean_what_they_say(user_api: Api) -> None:
    tasks = await make_varied_tasks(user_api, 8)
    assert await list_ids(user_api, sort="created") == sorted(tasks)
    assert await list_ids(user_api) == sorted(tasks, reverse=True)  # default: newest first
    # t00..t07 were created in order; the even ones were then updated t06, t04, t02, t00.
    assert (await list_ids(user_api, sort="-updated"))[:4] == ["t00", "t02", "t04", "t06"]
    by_priority = await list_ids(user_api, sort="-priority")
    assert [tasks[i]["priority"] for i in by_priority] == ["high"] * 2 + ["medium"] * 3 + \
        ["low"] * 3
    by_due = await list_ids(user_api, sort="due")
    dated = [tasks[i]["due_date"] for i in by_due if tasks[i]["due_date"]]
    assert dated == sorted(dated)
    assert all(tasks[i]["due_date"] is None for i in by_due[len(dated):])


async def walk(api: Api, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        reply = await api.get("/api/tasks", params=query)
        assert reply.status == 200, reply.body
        page = [task["id"] for task in reply.body["tasks"]]
        assert len(page) <= params["limit"]
        cursor = reply.body["next_cursor"]
        seen.extend(page)
        if cursor is None:
            return seen
        assert len(page) == params["limit"]  # only the last page may be short
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("sort", SORTS)
async def test_cursor_pagination_walks_every_task_once(user_api: Api, sort: str) -> None:
    await make_varied_tasks(user_api, 23)
    walked = await walk(user_api, sort=sort, limit=5)
    assert len(walked) == len(set(walked)) == 23
    assert walked == await list_ids(user_api, sort=sort)


async def test_pagination_with_ties_and_filters(user_api: Api) -> None:
    # The real clock: many tasks share a millisecond, and the id breaks the tie.
    for n in range(23):
        await create(user_api, priority="high" if n % 2 else "low",
                     status="done" if n % 5 == 0 else "todo")
    for sort in ("priority", "-priority", "due", "created"):
        walked = await walk(user_api, sort=sort, limit=5)
        assert len(walked) == len(set(walked)) == 23
    walked = await walk(user_api, status="todo", sort="-priority", limit=4)
    assert sorted(walked) == sorted(await list_ids(user_api, status="todo")) and \
        len(walked) == 18


async def test_pagination_is_stable_while_tasks_are_added(user_api: Api) -> None:
    use_clock(user_api, FakeClock())
    for n in range(10):
        await create(user_api, id=f"old{n}")
    first = await user_api.get("/api/tasks", params={"limit": 4, "sort": "created"})
    await create(user_api, id="newcomer")
    rest = await walk(user_api, limit=4, sort="created",
                      cursor=first.body["next_cursor"])
    walked = [t["id"] for t in first.body["tasks"]] + rest
    assert walked == [f"old{n}" for n in range(10)] + ["newcomer"]


async def test_cursor_is_bound_to_its_sort(user_api: Api) -> None:
    for _ in range(3):
        await create(user_api)
    page = await user_api.get("/api/tasks", params={"limit": 1, "sort": "priority"})
    reply = await user_api.get("/api/tasks", params={
        "limit": 1, "sort": "created", "cursor": page.body["next_cursor"]})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"


async def test_empty_list(user_api: Api) -> None:
    reply = await user_api.get("/api/tasks")
    assert reply.status == 200
    assert reply.body == {"tasks": [], "next_cursor": None}


@pytest.fixture
def small_limits_api(aiohttp_client: Any, tmp_path: Path,
                     openapi_checker: OpenAPIChecker) -> Callable[..., Any]:
    async def make() -> Api:
        config = make_config(tmp_path, **{"api.list_limit_default": 3,
                                          "api.list_limit_max": 6})
        client = await aiohttp_client(create_app(config))
        return await Api(client, openapi_checker).as_new_user()

    return make


async def test_limit_default_and_cap(small_limits_api: Callable[..., Any]) -> None:
    api = await small_limits_api()
    for _ in range(8):
        await create(api)
    default = await api.get("/api/tasks")
    assert len(default.body["tasks"]) == 3
    assert default.body["next_cursor"] is not None
    at_cap = await api.get("/api/tasks", params={"limit": 6})
    assert at_cap.status == 200
    assert len(at_cap.body["tasks"]) == 6
    over = await api.get("/api/tasks", params={"limit": 7})
    assert over.status == 400
    assert over.error["code"] == "invalid"
    assert "6" in over.error["message"]


async def test_default_limit_cap_is_200(user_api: Api) -> None:
    assert (await user_api.get("/api/tasks", params={"limit": 200})).status == 200
    reply = await user_api.get("/api/tasks", params={"limit": 201})
    assert reply.status == 400
    assert reply.error["code"] == "invalid"


# -- update ---------------------------------------------------------------------------


async def test_patch_bumps_version_and_seq(user_api: Api) -> None:
    use_clock(user_api, FakeClock())
    task = await create(user_api, title="draft", due_date="2030-02-01")
    other = await create(user_api)
    reply = await user_api.patch(f"/api/tasks/{task['id']}", json={
        "title": "final", "status": "done", "priority": "low", "due_date": None,
        "description": "all of it"})
    assert reply.status == 200
    updated = reply.body["task"]
    assert reply.headers["ETag"] == '"2"'
    assert updated["version"] == 2
    assert updated["seq"] == other["seq"] + 1 == 3
    assert updated["updated_at"] > task["updated_at"]
    assert updated["created_at"] == task["created_at"]
    assert {k: updated[k] for k in ("title", "status", "priority", "due_date",
                                    "description")} == {
        "title": "final", "status": "done", "priority": "low", "due_date": None,
        "description": "all of it"}
    assert (await user_api.get(f"/api/tasks/{task['id']}")).body["task"] == updated
    second = await user_api.patch(f"/api/tasks/{task['id']}", json={"title": "final!"})
    assert (second.body["task"]["version"], second.body["task"]["seq"]) == (3, 4)


@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"', " 1 ", "*"])
async def test_patch_with_matching_if_match(user_api: Api, if_match: str) -> None:
    task = await create(user_api)
    reply = await user_api.patch(f"/api/tasks/{task['id']}", json={"title": "ok"},
                                 headers={"If-Match": if_match})
    assert reply.status == 200
    assert reply.body["task"]["version"] == 2


async def test_patch_with_stale_if_match_is_a_conflict_with_current(user_api: Api) -> None:
    task = await create(user_api, title="v1")
    path = f"/api/tasks/{task['id']}"
    await user_api.patch(path, json={"title": "v2"})
    head = await head_seq(user_api)
    reply = await user_api.patch(path, json={"title": "lost"}, headers={"If-Match": '"1"'})
    assert reply.status == 409
    assert reply.error["code"] == "conflict"
    current = reply.error["details"]["current"]
    assert current == (await user_api.get(path)).body["task"]
    assert (current["title"], current["version"]) == ("v2", 2)
    assert await head_seq(user_api) == head


async def test_retried_patch_with_the_same_if_match_applies_once(user_api: Api) -> None:
    task = await create(user_api, title="start")
    path = f"/api/tasks/{task['id']}"
    first = await user_api.patch(path, json={"title": "once"}, headers={"If-Match": '"1"'})
    assert first.status == 200
    retry = await user_api.patch(path, json={"title": "once"}, headers={"If-Match": '"1"'})
    assert retry.status == 409
    assert retry.error["details"]["current"] == first.body["task"]
    final = (await user_api.get(path)).body["task"]
    assert (final["title"], final["version"], final["seq"]) == ("once", 2, 2)


async def test_noop_patch_does_not_bump_the_version(user_api: Api) -> None:
    task = await create(user_api, title="same", priority="high", due_date="2030-03-01")
    head = await head_seq(user_api)
    reply = await user_api.patch(f"/api/tasks/{task['id']}", json={
        "title": " same ", "priority": "high", "due_date": "2030-03-01T00:00:00+00:00"})
    assert reply.status == 200
    assert reply.body["task"] == task
    assert reply.headers["ETag"] == '"1"'
    assert await head_seq(user_api) == head


async def test_patch_unknown_task_is_not_found(user_api: Api) -> None:
    reply = await user_api.patch("/api/tasks/missing", json={"title": "x"})
    assert reply.status == 404
    assert reply.error["code"] == "not_found"


# -- delete ---------------------------------------------------------------------------


async def test_delete_leaves_a_tombstone(user_api: Api) -> None:
    task = await create(user_api, title="doomed")
    path = f"/api/tasks/{task['id']}"
    reply = await user_api.delete(path)
    assert reply.status == 200
    assert reply.body["task"] == {"id": task["id"], "scope": task["scope"], "seq": 2,
                                  "version": 2, "deleted": True}
    assert (await user_api.get(path)).status == 404
    again = await user_api.delete(path)
    assert again.status == 404
    assert again.error["code"] == "not_found"
    assert (await user_api.patch(path, json={"title": "revive"})).status == 404
    assert await list_ids(user_api) == []
    sync = await user_api.get("/api/sync", params={"scope": task["scope"], "since": 1})
    assert sync.body["changes"] == [reply.body["task"]]


async def test_delete_honours_if_match(user_api: Api) -> None:
    task = await create(user_api)
    path = f"/api/tasks/{task['id']}"
    await user_api.patch(path, json={"title": "changed"})
    stale = await user_api.delete(path, headers={"If-Match": '"1"'})
    assert stale.status == 409
    assert stale.error["code"] == "conflict"
    assert stale.error["details"]["current"]["version"] == 2
    assert (await user_api.get(path)).status == 200
    fresh = await user_api.delete(path, headers={"If-Match": '"2"'})
    assert fresh.status == 200
    assert fresh.body["task"]["version"] == 3


# -- stats ----------------------------------------------------------------------------


async def test_stats(user_api: Api) -> None:
    now = START
    use_clock(user_api, FakeClock(now, step=timedelta(0)))

    def due(delta: timedelta) -> str:
        return iso(now + delta)

    day = timedelta(days=1)
    specs: list[dict[str, Any]] = [
        {"status": "todo", "priority": "high", "due_date": due(-day)},        # overdue
        {"status": "in_progress", "priority": "high", "due_date": due(-timedelta(seconds=1))},
        {"status": "done", "priority": "medium", "due_date": due(-day)},      # done: neither
        {"status": "todo", "priority": "low", "due_date": due(3 * day)},      # this week
        {"status": "in_progress", "priority": "low", "due_date": due(timedelta(0))},  # now
        {"status": "todo", "priority": "medium",
         "due_date": due(7 * day - timedelta(milliseconds=1))},              # last ms in
        {"status": "todo", "priority": "medium", "due_date": due(7 * day)},   # just out
        {"status": "done", "priority": "low", "due_date": due(2 * day)},      # done: neither
        {"status": "todo", "priority": "low", "due_date": due(30 * day)},
        {"status": "todo", "priority": "high"},                               # no due date
    ]
    for spec in specs:
        await create(user_api, **spec)
    deleted = await create(user_api, status="todo", priority="high", due_date=due(-day))
    await user_api.delete(f"/api/tasks/{deleted['id']}")

    reply = await user_api.get("/api/tasks/stats")
    assert reply.status == 200
    assert reply.body == {
        "total": 10,
        "by_status": {"todo": 6, "in_progress": 2, "done": 2},
        "by_priority": {"low": 4, "medium": 3, "high": 3},
        "overdue": 2,
        "due_this_week": 3,
    }


async def test_stats_of_a_new_user(user_api: Api) -> None:
    reply = await user_api.get("/api/tasks/stats")
    assert reply.status == 200
    assert reply.body == {"total": 0, "by_status": {"todo": 0, "in_progress": 0, "done": 0},
                          "by_priority": {"low": 0, "medium": 0, "high": 0},
                          "overdue": 0, "due_this_week": 0}


async def test_stats_use_the_real_clock(user_api: Api) -> None:
    now = datetime.now(UTC)
    await create(user_api, due_date=iso(now - timedelta(hours=1)))
    await create(user_api, due_date=iso(now + timedelta(days=2)))
    await create(user_api, due_date=iso(now + timedelta(days=8)))
    body = (await user_api.get("/api/tasks/stats")).body
    assert (body["overdue"], body["due_this_week"]) == (1, 1)


# -- mutation ids and events ----------------------------------------------------------


async def test_mutation_id_comes_back_as_origin(user_api: Api) -> None:
    events: list[dict[str, Any]] = []
    user_api.app[keys.BROKER].subscribe(events.append)
    created = await user_api.post("/api/tasks", json={"title": "x"},
                                  headers={"X-Mutation-Id": "tab-1:op-1"})
    assert created.status == 201
    path = f"/api/tasks/{created.body['task']['id']}"
    await user_api.patch(path, json={"title": "y"}, headers={"X-Mutation-Id": "tab-1:op-2"})
    await user_api.patch(path, json={"title": "y"}, headers={"X-Mutation-Id": "noop"})
    await user_api.post("/api/tasks", json={"id": created.body["task"]["id"], "title": "x"})
    await user_api.patch(path, json={"status": "done"})
    deleted = await user_api.delete(path, headers={"X-Mutation-Id": "tab-2:op-9"})
    scope = created.body["task"]["scope"]
    # The retried create changes nothing; it re-announces the task's seq (TaskService).
    assert [e for e in events if e["type"] == "scope:head"] == [
        {"type": "scope:head", "scope": scope, "seq": 2}]
    events = [e for e in events if e["type"] != "scope:head"]
    assert [(e["type"], e["seq"], e["origin"]) for e in events] == [
        ("task:created", 1, "tab-1:op-1"),
        ("task:updated", 2, "tab-1:op-2"),
        ("task:updated", 3, None),
        ("task:deleted", 4, "tab-2:op-9"),
    ]
    assert events[0]["task"] == created.body["task"]
    assert events[-1]["task"] == deleted.body["task"]
    assert all(e["scope"] == created.body["task"]["scope"] for e in events)


# -- isolation ------------------------------------------------------------------------


async def test_another_users_task_is_not_found(user_api: Api) -> None:
    task = await create(user_api, title="A's secret", due_date="2020-01-01")
    intruder = await user_api.as_new_user()
    path = f"/api/tasks/{task['id']}"
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"title": "pwned"}}),
                           ("DELETE", {}),
                           ("PATCH", {"json": {"title": "pwned"}, "headers": {"If-Match": "1"}}),
                           ("DELETE", {"headers": {"If-Match": '"7"'}})):
        reply = await intruder.request(method, path, **kwargs)
        assert reply.status == 404, (method, reply.body)
        assert reply.error == {"code": "not_found", "message": "task not found"}
    unknown = await intruder.get("/api/tasks/does-not-exist")
    assert unknown.body == (await intruder.get(path)).body  # indistinguishable
    assert (await user_api.get(path)).body["task"] == task


async def test_lists_stats_and_sync_are_per_user(user_api: Api) -> None:
    for n in range(3):
        await create(user_api, title=f"alpha {n}", due_date="2020-01-01")
    other = await user_api.as_new_user()
    await create(other, title="beta")
    assert [t["title"] for t in (await other.get("/api/tasks")).body["tasks"]] == ["beta"]
    assert await list_ids(other, q="alpha") == []
    assert await list_ids(other, status="todo", sort="due") != []
    stats = (await other.get("/api/tasks/stats")).body
    assert (stats["total"], stats["overdue"]) == (1, 0)
    assert (await user_api.get("/api/tasks/stats")).body["total"] == 3
    own = await other.get("/api/sync", params={"scope": f"user:{other.user['id']}"})  # type: ignore[attr-defined]
    assert [c["title"] for c in own.body["changes"]] == ["beta"]
    assert own.body["seq"] == 1  # A's three changes do not advance B's scope


async def test_sync_of_another_users_scope_is_forbidden(user_api: Api) -> None:
    await create(user_api)
    intruder = await user_api.as_new_user()
    scope = f"user:{user_api.user['id']}"  # type: ignore[attr-defined]
    for params in ({"scope": scope}, {"scope": scope, "since": 0, "limit": 1},
                   {"scope": "board:anything"}):
        reply = await intruder.get("/api/sync", params=params)
        assert reply.status == 403, params
        assert reply.error["code"] == "forbidden"


async def test_a_cursor_from_another_user_shows_only_your_tasks(user_api: Api) -> None:
    for _ in range(4):
        await create(user_api)
    page = await user_api.get("/api/tasks", params={"limit": 2})
    other = await user_api.as_new_user()
    mine = await create(other)
    reply = await other.get("/api/tasks", params={"cursor": page.body["next_cursor"]})
    assert reply.status == 200
    assert {t["id"] for t in reply.body["tasks"]} <= {mine["id"]}
