"""`/api/tasks*` and `/api/sync`: parse, authorise, call the task service, respond."""

from __future__ import annotations

import re

from aiohttp import web

from realtime import keys, validation
from realtime.errors import ApiError
from realtime.tasks import ListRequest

from .middleware import identity, int_param, json_response, query_params, read_json

LIST_PARAMS = ("status", "priority", "due_before", "due_after", "q", "sort", "limit", "cursor")
IF_MATCH = re.compile(r'^\s*(?:W/)?"?([0-9]{1,16})"?\s*$')


def _task_response(task: dict, status: int = 200) -> web.Response:
    return json_response({"task": task}, status=status, headers={"ETag": f'"{task["version"]}"'})


def _expected_version(request: web.Request) -> int | None:
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = IF_MATCH.match(header)
    if not match or int(match.group(1)) < 1:
        raise ApiError("invalid", 'If-Match must be a task version, e.g. "3"')
    return int(match.group(1))


def _mutation_id(request: web.Request) -> str | None:
    return validation.mutation_id(request.headers.get("X-Mutation-Id"))


def _task_id(request: web.Request) -> str:
    return validation.task_id(request.match_info["task_id"])


async def list_tasks(request: web.Request) -> web.Response:
    user = await identity(request)
    config = request.app[keys.CONFIG]
    params = query_params(request, LIST_PARAMS)
    fields = validation.Fields()
    status = params.get("status")
    if status is not None:
        validation.choice(status, "status", validation.STATUSES, fields)
    priority = params.get("priority")
    if priority is not None:
        validation.choice(priority, "priority", validation.PRIORITIES, fields)
    bounds = {}
    for name in ("due_before", "due_after"):
        if name in params:
            bounds[name] = validation.due_date(params[name], name, fields)
    fields.raise_if_any("the query has invalid parameters")
    list_request = ListRequest(
        status=status, priority=priority,
        due_before=bounds.get("due_before"), due_after=bounds.get("due_after"),
        terms=validation.search_terms(params["q"]) if "q" in params else (),
        sort=params.get("sort", "-created"),
        limit=int_param(params, "limit", config.list_limit_default, 1, config.list_limit_max),
        cursor=params.get("cursor"),
    )
    tasks, next_cursor = await request.app[keys.TASKS].list(user.user_id, list_request)
    return json_response({"tasks": tasks, "next_cursor": next_cursor})


async def create_task(request: web.Request) -> web.Response:
    user = await identity(request)
    client_id, fields = validation.new_task(await read_json(request))
    task, created = await request.app[keys.TASKS].create(
        user.user_id, client_id, fields, _mutation_id(request))
    response = _task_response(task, status=201 if created else 200)
    response.headers["Location"] = f"/api/tasks/{task['id']}"
    return response


async def get_task(request: web.Request) -> web.Response:
    user = await identity(request)
    return _task_response(await request.app[keys.TASKS].get(user.user_id, _task_id(request)))


async def update_task(request: web.Request) -> web.Response:
    user = await identity(request)
    task_id = _task_id(request)
    changes = validation.task_changes(await read_json(request))
    task = await request.app[keys.TASKS].update(
        user.user_id, task_id, changes, _expected_version(request), _mutation_id(request))
    return _task_response(task)


async def delete_task(request: web.Request) -> web.Response:
    user = await identity(request)
    tombstone = await request.app[keys.TASKS].delete(
        user.user_id, _task_id(request), _expected_version(request), _mutation_id(request))
    return json_response({"task": tombstone})


async def task_stats(request: web.Request) -> web.Response:
    user = await identity(request)
    query_params(request, ())
    return json_response(await request.app[keys.TASKS].stats(user.user_id))


async def sync(request: web.Request) -> web.Response:
    user = await identity(request)
    config = request.app[keys.CONFIG]
    params = query_params(request, ("scope", "since", "limit"))
    if "scope" not in params:
        raise ApiError("invalid", "scope is required, e.g. scope=user:<your id>")
    scope = validation.scope(params["scope"])
    since = int_param(params, "since", 0, 0, 2**53)
    limit = int_param(params, "limit", config.sync_limit_max, 1, config.sync_limit_max)
    answer = await request.app[keys.TASKS].sync(user.user_id, scope, since, limit)
    request.app[keys.METRICS].sync_changes.labels("rest").observe(len(answer.changes))
    return json_response(answer.to_dict())
