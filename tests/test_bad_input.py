"""Bad input of every class gets a 4xx whose error code says what was wrong, and never a
500 (DESIGN.md 5.7). The `api` client already fails any test that sees a 500 or a
response the OpenAPI document does not allow."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.app import create_app

from conftest import Api, OpenAPIChecker, make_config

TASK_FIELDS = ("id", "title", "description", "status", "priority", "due_date")
OPERATORS = [{"$gt": ""}, {"$where": "sleep(1000) || true"}, {"$ne": None},
             {"$regex": ".*"}, {"$in": ["todo", "done"]}, {"$exists": True}]


@pytest.fixture
async def task(user_api: Api) -> dict[str, Any]:
    reply = await user_api.post("/api/tasks", json={"title": "target", "description": "d"})
    assert reply.status == 201
    return reply.body["task"]  # type: ignore[no-any-return]


async def send(api: Api, target: str, task: dict[str, Any], **kwargs: Any) -> Any:
    """POST a new task, or PATCH the fixture's task, with the given body."""
    if target == "create":
        return await api.post("/api/tasks", **kwargs)
    return await api.patch(f"/api/tasks/{task['id']}", **kwargs)


def assert_invalid(reply: Any, status: int = 400, code: str = "invalid") -> None:
    assert reply.status == status, reply.body
    assert reply.error["code"] == code, reply.body
    assert reply.error["message"]


async def assert_unchanged(api: Api, task: dict[str, Any]) -> None:
    current = await api.get(f"/api/tasks/{task['id']}")
    assert current.body["task"] == task
    listing = await api.get("/api/tasks")
    assert [t["id"] for t in listing.body["tasks"]] == [task["id"]]


async def both(api: Api, task: dict[str, Any], fields: dict[str, Any] | None = None,
               **kwargs: Any) -> list[Any]:
    """The same request as a create and as a PATCH of the fixture's task. With `fields`,
    the JSON body is those fields (plus a valid title for the create)."""
    replies = []
    for target in ("create", "patch"):
        if fields is not None:
            kwargs["json"] = {"title": "ok", **fields} if target == "create" else fields
        replies.append(await send(api, target, task, **kwargs))
    return replies


# -- the body as a whole --------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"title": ', b'{title: "x"}', b"{'title': 'x'}", b'{"title": "x",}', b"NaN",
    b'{"title": "x"} trailing', b'{"title": "x"}{"title": "y"}', b"\xff\xfe{}", b"   ",
    b'{"title": "\xff"}', b'{"title": Infinity}', b'{"title": 1e400}',
    b'{"title": "\\ud800"}', b'{"title": "\\udc00 low first"}', b'{"\\ud83d": "x"}',
    b'{"title": "\\u0000"}', b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
], ids=lambda raw: repr(raw[:24]))
async def test_unparseable_or_unusable_body(user_api: Api, task: dict[str, Any],
                                            raw: bytes) -> None:
    for reply in await both(user_api, task, data=raw):
        assert_invalid(reply)
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/octet-stream", "application/json-patch+json"])
async def test_wrong_content_type(user_api: Api, task: dict[str, Any],
                                  content_type: str) -> None:
    for reply in await both(user_api, task, data=b'{"title": "fine"}',
                            headers={"Content-Type": content_type}):
        assert_invalid(reply, 415)
        assert "application/json" in reply.error["message"]
    await assert_unchanged(user_api, task)


async def test_json_with_charset_is_fine(user_api: Api, task: dict[str, Any]) -> None:
    created, patched = await both(user_api, task, data='{"title": "fine ✓"}'.encode(),
                                  headers={"Content-Type": "application/json; charset=utf-8"})
    assert (created.status, patched.status) == (201, 200)
    assert created.body["task"]["title"] == patched.body["task"]["title"] == "fine ✓"


async def test_empty_body(user_api: Api, task: dict[str, Any]) -> None:
    for reply in await both(user_api, task, data=b""):
        assert_invalid(reply)
        assert "empty" in reply.error["message"]


@pytest.mark.parametrize("body", [[], [{"title": "x"}], "title", 42, 1.5, True, None],
                         ids=repr)
async def test_body_that_is_not_an_object(user_api: Api, task: dict[str, Any],
                                          body: Any) -> None:
    for reply in await both(user_api, task, data=orjson.dumps(body)):
        assert_invalid(reply)
        assert "object" in reply.error["message"]
    await assert_unchanged(user_api, task)


async def test_empty_patch(user_api: Api, task: dict[str, Any]) -> None:
    assert_invalid(await user_api.patch(f"/api/tasks/{task['id']}", json={}))
    await assert_unchanged(user_api, task)


# -- fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("title", 1), ("title", None), ("title", []), ("title", {}), ("title", True),
    ("title", ""), ("title", "   "), ("title", "nul\x00inside"),
    ("description", 5), ("description", None), ("description", ["a"]),
    ("description", "nul\x00"),
    ("status", 1), ("status", None), ("status", ["todo"]), ("status", True),
    ("priority", 2), ("priority", None), ("priority", {"high": 1}),
    ("due_date", 12345), ("due_date", True), ("due_date", {}), ("due_date", ["2030-01-01"]),
    ("due_date", 1.5),
], ids=lambda v: repr(v)[:20])
async def test_wrong_types(user_api: Api, task: dict[str, Any], field: str,
                           value: Any) -> None:
    for reply in await both(user_api, task, {field: value}):
        assert_invalid(reply)
        assert field in reply.error["details"]["fields"]
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("value", [5, None, "", "a.b", "a/b", "x" * 65, "üñí", "a b",
                                   "stats", "trailing-newline\n", {"$gt": ""}], ids=repr)
async def test_bad_client_ids(user_api: Api, task: dict[str, Any], value: Any) -> None:
    reply = await user_api.post("/api/tasks", json={"id": value, "title": "x"})
    assert_invalid(reply)
    assert "id" in reply.error["details"]["fields"]
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("field", ["owner", "scope", "version", "seq", "deleted",
                                   "created_at", "updated_at", "__proto__", "$where",
                                   "Title", "", "x" * 500])
async def test_unknown_fields(user_api: Api, task: dict[str, Any], field: str) -> None:
    for reply in await both(user_api, task, {field: "intruder"}):
        assert_invalid(reply)
        assert reply.error["details"]["fields"] == {field[:64]: "unknown field"}
    await assert_unchanged(user_api, task)


async def test_id_cannot_be_patched(user_api: Api, task: dict[str, Any]) -> None:
    reply = await user_api.patch(f"/api/tasks/{task['id']}", json={"id": "new-id"})
    assert_invalid(reply)
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("field", TASK_FIELDS)
async def test_operator_objects_in_any_field(user_api: Api, task: dict[str, Any],
                                             field: str) -> None:
    for operator in OPERATORS:
        created, patched = await both(user_api, task, {field: operator})
        for reply in (created, patched):
            assert_invalid(reply)
            assert field in reply.error["details"]["fields"], (operator, reply.body)
        if field == "id":  # a PATCH cannot name an id at all
            assert patched.error["details"]["fields"]["id"] == "unknown field"
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda op: next(iter(op)))
async def test_operator_objects_in_credentials(api: Api, operator: dict[str, Any]) -> None:
    await api.register(email="victim@example.com")
    for body in ({"email": operator, "password": operator},
                 {"email": "victim@example.com", "password": operator},
                 {"email": operator, "password": "correct horse"}):
        login = await api.post("/api/auth/login", token=None, json=body)
        assert_invalid(login)
        register = await api.post("/api/auth/register", token=None,
                                  json={**body, "name": operator})
        assert_invalid(register)


@pytest.mark.parametrize(("field", "limit"), [("title", 200), ("description", 10_000)])
async def test_over_long_fields(user_api: Api, task: dict[str, Any], field: str,
                                limit: int) -> None:
    for reply in await both(user_api, task, {field: "é" * (limit + 1)}):
        assert_invalid(reply)
        assert field in reply.error["details"]["fields"]
    await assert_unchanged(user_api, task)
    created, patched = await both(user_api, task, {field: "é" * limit})
    assert (created.status, patched.status) == (201, 200)
    assert created.body["task"][field] == patched.body["task"][field] == "é" * limit


@pytest.mark.parametrize(("field", "value"), [
    ("email", "a" * 250 + "@x.io"), ("name", "n" * 101), ("password", "p" * 1025),
    ("email", "no-at-sign"), ("email", "two@@example.com"), ("email", 7), ("name", None),
    ("password", ["correct horse"]), ("password", "short"),
])
async def test_bad_registration_fields(api: Api, field: str, value: Any) -> None:
    body = {"email": "ok@example.com", "password": "correct horse", "name": "Ok", field: value}
    reply = await api.post("/api/auth/register", token=None, json=body)
    assert_invalid(reply)
    assert field in reply.error["details"]["fields"]


@pytest.mark.parametrize("body", [
    {}, {"email": "a@example.com"}, {"password": "x"},
    {"email": "a@example.com", "password": "x", "name": "not for login"},
    {"email": "a@example.com", "password": ""},
], ids=repr)
async def test_bad_login_bodies(api: Api, body: dict[str, Any]) -> None:
    assert_invalid(await api.post("/api/auth/login", token=None, json=body))


# -- dates and enums ------------------------------------------------------------------


BAD_DATES = ["2026-13-45", "2026-02-30", "tomorrow", "", "2026-1-1", "26-01-01",
             "2026-01-01T25:00:00", "2026-01-01T10:00:00+25:00", " 2026-01-01 ",
             "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
             "2026-01-01T00:00:00" + "0" * 40,
             "\u0661\u0662\u0663\u0664-\u0660\u0661-\u0660\u0661",  # Arabic-Indic digits
             "2026-01-01\x00"]


@pytest.mark.parametrize("value", BAD_DATES, ids=repr)
async def test_bad_dates_in_the_body(user_api: Api, task: dict[str, Any], value: str) -> None:
    for reply in await both(user_api, task, {"due_date": value}):
        assert_invalid(reply)
        assert "due_date" in reply.error["details"]["fields"]


@pytest.mark.parametrize("name", ["due_before", "due_after"])
@pytest.mark.parametrize("value", [*BAD_DATES[:-1], "12345"], ids=repr)
async def test_bad_dates_in_the_query(user_api: Api, name: str, value: str) -> None:
    reply = await user_api.get("/api/tasks", params={name: value})
    assert_invalid(reply)
    assert name in reply.error["details"]["fields"]


@pytest.mark.parametrize(("field", "value"), [
    ("status", "open"), ("status", "TODO"), ("status", "Todo"), ("status", "todo "),
    ("status", ""), ("status", "in-progress"), ("priority", "urgent"), ("priority", "HIGH"),
    ("priority", "0"),
])
async def test_unknown_enum_values(user_api: Api, task: dict[str, Any], field: str,
                                   value: str) -> None:
    for reply in await both(user_api, task, {field: value}):
        assert_invalid(reply)
        assert "must be one of" in reply.error["details"]["fields"][field]


@pytest.mark.parametrize(("name", "value"), [
    ("status", "open"), ("status", ""), ("priority", "urgent"), ("sort", "name"),
    ("sort", "--created"), ("sort", ""), ("sort", "-"), ("sort", "created_at"),
    ("sort", "+created"),
])
async def test_unknown_enum_values_in_the_query(user_api: Api, name: str, value: str) -> None:
    assert_invalid(await user_api.get("/api/tasks", params={name: value}))


# -- the query string -----------------------------------------------------------------


@pytest.mark.parametrize(("path", "query"), [
    ("/api/tasks", "status=todo&status=done"),
    ("/api/tasks", "limit=1&limit=2"),
    ("/api/tasks", "q=a&q=b"),
    ("/api/tasks", "sort=created&sort=-created"),
    ("/api/sync", "scope=user:x&scope=user:y"),
    ("/api/sync", "scope=SELF&since=0&since=1"),
])
async def test_repeated_query_params(user_api: Api, path: str, query: str) -> None:
    query = query.replace("SELF", f"user:{user_api.user['id']}")  # type: ignore[attr-defined]
    reply = await user_api.get(f"{path}?{query}")
    assert_invalid(reply)
    assert "repeated" in reply.error["message"]


@pytest.mark.parametrize(("path", "query"), [
    ("/api/tasks", "foo=1"), ("/api/tasks", "status[$ne]=done"),
    ("/api/tasks", "owner=someone"), ("/api/tasks", "page=2"),
    ("/api/tasks/stats", "status=todo"), ("/api/sync", "scope=SELF&extra=1"),
    ("/api/tasks", "$where=1"),
])
async def test_unknown_query_params(user_api: Api, path: str, query: str) -> None:
    query = query.replace("SELF", f"user:{user_api.user['id']}")  # type: ignore[attr-defined]
    reply = await user_api.get(f"{path}?{query}")
    assert_invalid(reply)
    assert "unknown query parameter" in reply.error["message"]


BAD_NUMBERS = ["0", "-1", "abc", "1.5", "1e3", "", " 5", "+5", "0x10",
               "99999999999999999999", "\u0661\u0662"]


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
async def test_bad_list_limit(user_api: Api, value: str) -> None:
    assert_invalid(await user_api.get("/api/tasks", params={"limit": value}))


@pytest.mark.parametrize("name", ["limit", "since"])
@pytest.mark.parametrize("value", [v for v in BAD_NUMBERS if v != "0"] + [str(2**53 + 1)],
                         ids=repr)
async def test_bad_sync_numbers(user_api: Api, name: str, value: str) -> None:
    scope = f"user:{user_api.user['id']}"  # type: ignore[attr-defined]
    reply = await user_api.get("/api/sync", params={"scope": scope, name: value})
    assert_invalid(reply)
    assert name in reply.error["message"]


@pytest.mark.parametrize("scope", ["", "user", "user:", "user:a/b", "team:x", "user:x:y",
                                   "USER:x", "user:" + "x" * 65, "SELF\n", "user:{\"$gt\":\"\"}"])
async def test_bad_sync_scopes(user_api: Api, scope: str) -> None:
    scope = scope.replace("SELF", f"user:{user_api.user['id']}")  # type: ignore[attr-defined]
    assert_invalid(await user_api.get("/api/sync", params={"scope": scope}))


def _cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "garbage!!", "%%%", "é", "a", "x" * 6000,
    base64.urlsafe_b64encode(b"not json").decode(),
    _cursor({"sort": "created"}), _cursor(["created"]), _cursor(["created", "k"]),
    _cursor(["created", "k", "id", "extra"]), _cursor(["created", 1.5, "id"]),
    _cursor(["created", "k", 5]), _cursor(["created", True, "id"]),
    _cursor(["created", None, "id"]), _cursor(["created", ["k"], "id"]),
    _cursor(["priority", 18446744073709551615, "id"]),
    _cursor(["priority", -(2**63) - 1, "id"]), _cursor(["-created", "k", "id"]),
    _cursor(["name", "k", "id"]), _cursor([None, "k", "id"]),
], ids=lambda c: c[:24])
async def test_bad_cursors(user_api: Api, task: dict[str, Any], cursor: str) -> None:
    sort = "priority" if "cHJpb3JpdHk" in cursor else "created"  # "priority" in base64
    assert_invalid(await user_api.get("/api/tasks", params={"cursor": cursor, "sort": sort}))


@pytest.mark.parametrize("q", ["", "!!!", "   ", "\\", "%", "*", '""', "x" * 201,
                               " ".join(f"w{n}" for n in range(11))],
                         ids=lambda q: repr(q[:12]))
async def test_bad_search(user_api: Api, q: str) -> None:
    assert_invalid(await user_api.get("/api/tasks", params={"q": q}))


@pytest.mark.parametrize("q", ['"quoted" OR x*', "title:secret", "NEAR(a b)", "a AND NOT b",
                               "^start", "a_b", "_", "__init__", "x-y", "{a b}", "'; DROP",
                               "\u0663", "\u01c5", "\ufb01", "a\u0301"])
async def test_search_syntax_is_not_interpreted(user_api: Api, task: dict[str, Any],
                                                q: str) -> None:
    reply = await user_api.get("/api/tasks", params={"q": q})
    assert reply.status == 200, reply.body
    assert reply.body["tasks"] == []


# -- paths and headers ----------------------------------------------------------------


@pytest.mark.parametrize(("task_id", "status"), [
    ("x" * 65, 400), ("a.b", 400), ("a%20b", 400), ("%00", 400), ("a%00b", 400),
    ("%C3%BC", 400), ("a$b", 400), ("~", 400), ("..", 404), ("abc%0A", 400),
    ("%2E%2E", 404), ("a;b", 400), ("-", 404),
])
async def test_bad_task_ids_in_the_path(user_api: Api, task: dict[str, Any], task_id: str,
                                        status: int) -> None:
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"title": "x"}}),
                           ("DELETE", {})):
        reply = await user_api.request(method, f"/api/tasks/{task_id}", **kwargs)
        assert_invalid(reply, status, "invalid" if status == 400 else "not_found")
    await assert_unchanged(user_api, task)


async def test_encoded_slash_in_a_task_id(user_api: Api, task: dict[str, Any]) -> None:
    """`a%2Fb` reaches the handler as `a/b`. (The OpenAPI checker maps decoded paths, so
    this one case goes around it and checks the error shape itself.)"""
    for method in ("GET", "PATCH", "DELETE"):
        response = await user_api.client.request(
            method, "/api/tasks/a%2Fb", json={"title": "x"},
            headers={"Authorization": f"Bearer {user_api.token}"})
        assert response.status in (400, 404)
        body = await response.json()
        assert body["error"]["code"] == ("invalid" if response.status == 400 else "not_found")
    await assert_unchanged(user_api, task)


async def test_request_line_over_the_protocol_limit(user_api: Api) -> None:
    """aiohttp's HTTP parser refuses it before any handler runs: a 4xx, never a 5xx (its
    body is aiohttp's plain text, since no middleware sees such a request)."""
    response = await user_api.client.get("/api/tasks", params={"cursor": "x" * 10_000})
    assert 400 <= response.status < 500
    await response.read()
    after = await user_api.get("/api/tasks")  # the server is still serving
    assert after.status == 200


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", ["abc", '"0"', "0", "-1", "1,2", '"1", "2"',
                                      "99999999999999999", '"v1"', "W/", "1.0", "",
                                      "\u0661", '"\u0661"'])
async def test_bad_if_match(user_api: Api, task: dict[str, Any], method: str,
                            if_match: str) -> None:
    reply = await user_api.request(method, f"/api/tasks/{task['id']}",
                                   json={"title": "x"} if method == "PATCH" else None,
                                   headers={"If-Match": if_match})
    assert_invalid(reply)
    assert "If-Match" in reply.error["message"]
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("mutation_id", ["", "has space", "x" * 129, "tab\t1"])
async def test_bad_mutation_ids(user_api: Api, task: dict[str, Any], mutation_id: str) -> None:
    for reply in (
        await user_api.post("/api/tasks", json={"title": "x"},
                            headers={"X-Mutation-Id": mutation_id}),
        await user_api.patch(f"/api/tasks/{task['id']}", json={"title": "x"},
                             headers={"X-Mutation-Id": mutation_id}),
        await user_api.delete(f"/api/tasks/{task['id']}",
                              headers={"X-Mutation-Id": mutation_id}),
    ):
        assert_invalid(reply)
        assert "mutation_id" in reply.error["message"]
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize(("header", "message"), [
    ("Bearer", "the Authorization header must be 'Bearer <token>'"),
    ("Bearer ", "the Authorization header must be 'Bearer <token>'"),
    ("Basic dXNlcjpwYXNzd29yZA==", "the Authorization header must be 'Bearer <token>'"),
    ("Token TOKEN", "the Authorization header must be 'Bearer <token>'"),
    ("TOKEN", "the Authorization header must be 'Bearer <token>'"),
    ("Bearer TOKEN extra", "invalid token"),
    ("Bearer TOKEN.", "invalid token"),
    ("Bearer a.b.c", "invalid token"),
    ("Bearer " + "x" * 4000, "invalid token"),
    ("Bearer {\"$gt\": \"\"}", "invalid token"),
])
async def test_bad_authorization_headers(user_api: Api, header: str, message: str) -> None:
    header = header.replace("TOKEN", user_api.token or "")
    reply = await user_api.get("/api/auth/me", token=None, headers={"Authorization": header})
    assert reply.status == 401
    assert reply.error == {"code": "unauthorized", "message": message}


@pytest.mark.parametrize("header", ["bearer TOKEN", "BEARER TOKEN", "Bearer  TOKEN "])
async def test_bearer_scheme_is_case_insensitive(user_api: Api, header: str) -> None:
    header = header.replace("TOKEN", user_api.token or "")
    reply = await user_api.get("/api/auth/me", token=None, headers={"Authorization": header})
    assert reply.status == 200


# -- size limits ----------------------------------------------------------------------


@pytest.fixture
async def small_body_api(aiohttp_client: Any, tmp_path: Path,
                         openapi_checker: OpenAPIChecker) -> AsyncIterator[Api]:
    config = make_config(tmp_path, **{"server.max_body_bytes": 2048})
    client = await aiohttp_client(create_app(config))
    yield await Api(client, openapi_checker).as_new_user()


async def test_body_over_the_limit(small_body_api: Api) -> None:
    api = small_body_api
    fits = await api.post("/api/tasks", json={"title": "t", "description": "d" * 1900})
    assert fits.status == 201
    big = {"title": "t", "description": "d" * 4000}
    for method, path in (("POST", "/api/tasks"),
                         ("PATCH", f"/api/tasks/{fits.body['task']['id']}"),
                         ("POST", "/api/auth/login"), ("POST", "/api/auth/register")):
        reply = await api.request(method, path, json=big)
        assert_invalid(reply, 413, "too_large")
        assert reply.error["details"] == {"max_bytes": 2048}
    listing = await api.get("/api/tasks")
    assert listing.body["tasks"] == [fits.body["task"]]


async def test_chunked_body_over_the_limit(small_body_api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "t", "description": "'
        for _ in range(10):
            yield b"d" * 1000
        yield b'"}'

    reply = await small_body_api.post("/api/tasks", data=chunks())  # type: ignore[arg-type]
    assert_invalid(reply, 413, "too_large")


async def test_default_limit_is_one_megabyte(user_api: Api) -> None:
    reply = await user_api.post("/api/tasks", data=b'{"title": "' + b"x" * (1 << 20) + b'"}')
    assert_invalid(reply, 413, "too_large")


# -- numbers and nesting --------------------------------------------------------------


@pytest.mark.parametrize("number", [b"18446744073709551615", b"-9223372036854775809",
                                    b"123456789012345678901234567890", b"1e308", b"-0"])
async def test_huge_numbers(user_api: Api, task: dict[str, Any], number: bytes) -> None:
    for field in TASK_FIELDS:
        for target in ("create", "patch"):
            title = b'"title": "ok", ' if target == "create" and field != "title" else b""
            reply = await send(user_api, target, task,
                               data=b"{" + title + b'"' + field.encode() + b'": ' + number + b"}")
            assert_invalid(reply)
            assert field in reply.error["details"]["fields"], (field, target)
    await assert_unchanged(user_api, task)


@pytest.mark.parametrize("depth", [10, 500, 1000])
async def test_deeply_nested_values(user_api: Api, task: dict[str, Any], depth: int) -> None:
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    for reply in await both(user_api, task,
                            data=b'{"title": "ok", "description": ' + nested + b"}"):
        assert_invalid(reply)
        assert "description" in reply.error["details"]["fields"]
    await assert_unchanged(user_api, task)


# -- property: arbitrary JSON never yields a 5xx --------------------------------------

KEYS = st.one_of(st.sampled_from([*TASK_FIELDS, "$gt", "$where", "owner", "version"]),
                 st.text(max_size=8))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["todo", "done", "high", "2030-01-01", "2026-13-45", "", " "]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=12)
BODIES = st.one_of(st.dictionaries(KEYS, JSON_VALUES, max_size=6), JSON_VALUES)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, patch=st.booleans())
async def test_arbitrary_json_never_yields_a_5xx(user_api: Api, task: dict[str, Any],
                                                 body: Any, patch: bool) -> None:
    # `json.dumps` escapes lone surrogates drawn by st.text(), so they reach the server.
    # A body of JSON `null` is sent as such (the client's json=None would send none).
    path = f"/api/tasks/{task['id']}" if patch else "/api/tasks"
    reply = await user_api.request("PATCH" if patch else "POST", path, data=json.dumps(body))
    if reply.status >= 400:
        assert reply.status in (400, 404, 409), reply.body
        assert reply.error["code"] in ("invalid", "not_found", "conflict")
    else:
        assert reply.status in (200, 201)
        assert reply.body["task"]["deleted"] is False
