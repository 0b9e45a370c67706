"""The OpenAPI 3.1 document of the REST surface.

Kept by hand beside the handlers; tests/conftest.py validates every response the
test suite receives against it, so a handler that drifts from it fails a test.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from realtime.validation import (
    DESCRIPTION_MAX,
    EMAIL_MAX,
    NAME_MAX,
    PASSWORD_MAX,
    RESERVED_TASK_IDS,
    TITLE_MAX,
)
from store.base import PRIORITIES, STATUSES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK", "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {400: "invalid input", 401: "missing, invalid, expired or revoked token",
               403: "forbidden", 404: "not found", 405: "method not allowed",
               409: "conflict", 413: "body too large", 415: "not JSON",
               429: "rate limited: retry after Retry-After seconds",
               503: "the store is unavailable"}
    return {str(s): _body(_ref("Error"), meaning[s]) | (_RETRY_AFTER if s == 429 else {})
            for s in statuses}


_RETRY_AFTER = {"headers": {"Retry-After": {
    "description": "seconds until the request would be allowed",
    "schema": {"type": "integer", "minimum": 1}}}}


def _param(name: str, schema: dict[str, Any], where: str = "query", required: bool = False,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


_TIMESTAMP = {"type": "string", "format": "date-time"}
_TASK_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_IF_MATCH = _param("If-Match", {"type": "string"}, "header",
                   description='expected version, e.g. "3"; 409 with the current task if not')
_MUTATION = _param("X-Mutation-Id", {"type": "string", "maxLength": 128}, "header",
                   description="comes back as `origin` in the event")
_TASK_PATH = _param("task_id", _TASK_ID, "path", required=True)
_COMMON = {**_errors(400, 401, 405, 429, 503)}


def _schemas() -> dict[str, Any]:
    task_fields = {
        "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX},
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
        "status": {"enum": list(STATUSES)},
        "priority": {"enum": list(PRIORITIES)},
        "due_date": {"type": ["string", "null"],
                     "description": "ISO 8601 date or date-time; stored in UTC"},
    }
    return {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"enum": ["invalid", "unauthorized", "forbidden", "not_found",
                                      "conflict", "rate_limited", "too_large",
                                      "unavailable", "internal"]},
                    "message": {"type": "string"},
                    "details": {},
                },
            }},
        },
        "User": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "email", "name", "created_at"],
            "properties": {"id": {"type": "string"}, "email": {"type": "string"},
                           "name": {"type": "string"}, "created_at": _TIMESTAMP},
        },
        "AuthResult": {
            "type": "object", "additionalProperties": False, "required": ["token", "user"],
            "properties": {"token": {"type": "string"}, "user": _ref("User")},
        },
        "Task": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "owner", "scope", "title", "description", "status",
                         "priority", "due_date", "created_at", "updated_at", "version",
                         "seq", "deleted"],
            "properties": {
                "id": _TASK_ID, "owner": {"type": "string"}, "scope": {"type": "string"},
                **task_fields,
                "created_at": _TIMESTAMP, "updated_at": _TIMESTAMP,
                "version": {"type": "integer", "minimum": 1},
                "seq": {"type": "integer", "minimum": 1},
                "deleted": {"const": False},
            },
        },
        "Tombstone": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "scope", "seq", "version", "deleted"],
            "properties": {"id": _TASK_ID, "scope": {"type": "string"},
                           "seq": {"type": "integer", "minimum": 1},
                           "version": {"type": "integer", "minimum": 2},
                           "deleted": {"const": True}},
        },
        "TaskEnvelope": {
            "type": "object", "additionalProperties": False, "required": ["task"],
            "properties": {"task": _ref("Task")},
        },
        "NewTask": {
            "type": "object", "additionalProperties": False, "required": ["title"],
            "properties": {"id": {**_TASK_ID, "not": {"enum": list(RESERVED_TASK_IDS)}},
                           **task_fields},
        },
        "TaskChanges": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": task_fields,
        },
        "TaskList": {
            "type": "object", "additionalProperties": False,
            "required": ["tasks", "next_cursor"],
            "properties": {"tasks": {"type": "array", "items": _ref("Task")},
                           "next_cursor": {"type": ["string", "null"]}},
        },
        "Stats": {
            "type": "object", "additionalProperties": False,
            "required": ["total", "by_status", "by_priority", "overdue", "due_this_week"],
            "properties": {
                "total": {"type": "integer"},
                "by_status": {"type": "object", "required": list(STATUSES),
                              "additionalProperties": {"type": "integer"}},
                "by_priority": {"type": "object", "required": list(PRIORITIES),
                                "additionalProperties": {"type": "integer"}},
                "overdue": {"type": "integer"}, "due_this_week": {"type": "integer"},
            },
        },
        "SyncAnswer": {
            "type": "object", "additionalProperties": False,
            "required": ["scope", "seq", "changes", "more", "reset"],
            "properties": {
                "scope": {"type": "string"}, "seq": {"type": "integer", "minimum": 0},
                "changes": {"type": "array",
                            "items": {"oneOf": [_ref("Task"), _ref("Tombstone")]}},
                "more": {"type": "boolean"}, "reset": {"type": "boolean"},
            },
        },
        "Health": {
            "type": "object", "required": ["status", "timestamp", "uptime", "store", "memory"],
            "properties": {"status": {"const": "ok"}, "timestamp": _TIMESTAMP,
                           "uptime": {"type": "number"}, "instance": {"type": "string"},
                           "store": {"enum": ["up", "down"]},
                           "broker": {"enum": ["up", "down"]},
                           "memory": {"type": "object"}},
        },
        "Ready": {
            "type": "object", "required": ["ready", "store", "broker"],
            "properties": {"ready": {"type": "boolean"},
                           "store": {"enum": ["up", "down"]},
                           "broker": {"enum": ["up", "down"]},
                           "draining": {"type": "boolean"}},
        },
    }


def _paths() -> dict[str, Any]:
    credentials: dict[str, Any] = {
        "type": "object", "additionalProperties": False, "required": ["email", "password"],
        "properties": {"email": {"type": "string", "maxLength": EMAIL_MAX},
                       "password": {"type": "string", "maxLength": PASSWORD_MAX}},
    }
    registration = {**credentials, "required": ["email", "password", "name"],
                    "properties": {**credentials["properties"],
                                   "name": {"type": "string", "maxLength": NAME_MAX}}}
    request_body = {"required": True, "content": {JSON: {"schema": None}}}

    def with_body(schema: dict[str, Any]) -> dict[str, Any]:
        return {**request_body, "content": {JSON: {"schema": schema}}}

    list_params = [
        _param("status", {"enum": list(STATUSES)}),
        _param("priority", {"enum": list(PRIORITIES)}),
        _param("due_before", {"type": "string"}, description="ISO 8601; strictly before"),
        _param("due_after", {"type": "string"}, description="ISO 8601; strictly after"),
        _param("q", {"type": "string", "maxLength": 200},
               description="words that must each start a word of title or description"),
        _param("sort", {"enum": ["created", "-created", "updated", "-updated", "due", "-due",
                                 "priority", "-priority"]}),
        _param("limit", {"type": "integer", "minimum": 1}),
        _param("cursor", {"type": "string"}, description="next_cursor of the previous page"),
    ]
    return {
        "/api/auth/register": {"post": {
            "summary": "Create an account", "requestBody": with_body(registration),
            "responses": {"201": _body(_ref("AuthResult"), "account created"),
                          **_errors(400, 405, 409, 413, 415, 429, 503)}}},
        "/api/auth/login": {"post": {
            "summary": "Log in", "requestBody": with_body(credentials),
            "responses": {"200": _body(_ref("AuthResult")),
                          **_errors(400, 401, 405, 413, 415, 429, 503)}}},
        "/api/auth/me": {"get": {
            "summary": "The current user", "security": _BEARER,
            "responses": {"200": _body({"type": "object", "required": ["user"],
                                        "properties": {"user": _ref("User")}}), **_COMMON}}},
        "/api/auth/logout": {"post": {
            "summary": "Revoke this token", "security": _BEARER,
            "responses": {"204": {"description": "revoked"}, **_COMMON}}},
        "/api/tasks": {
            "get": {"summary": "List tasks", "security": _BEARER, "parameters": list_params,
                    "responses": {"200": _body(_ref("TaskList")), **_COMMON}},
            "post": {"summary": "Create a task (idempotent with a client id)",
                     "security": _BEARER, "parameters": [_MUTATION],
                     "requestBody": with_body(_ref("NewTask")),
                     "responses": {"201": _body(_ref("TaskEnvelope"), "created"),
                                   "200": _body(_ref("TaskEnvelope"),
                                                "already created with this id"),
                                   **_COMMON, **_errors(409, 413, 415)}},
        },
        "/api/tasks/stats": {"get": {
            "summary": "Counts by status and priority, overdue, due within 7 days",
            "security": _BEARER,
            "responses": {"200": _body(_ref("Stats")), **_COMMON}}},
        "/api/tasks/{task_id}": {
            "parameters": [_TASK_PATH],
            "get": {"summary": "One task", "security": _BEARER,
                    "responses": {"200": _body(_ref("TaskEnvelope")), **_COMMON,
                                  **_errors(404)}},
            "patch": {"summary": "Change a task", "security": _BEARER,
                      "parameters": [_IF_MATCH, _MUTATION],
                      "requestBody": with_body(_ref("TaskChanges")),
                      "responses": {"200": _body(_ref("TaskEnvelope")), **_COMMON,
                                    **_errors(404, 409, 413, 415)}},
            "delete": {"summary": "Delete a task (leaves a tombstone for sync)",
                       "security": _BEARER, "parameters": [_IF_MATCH, _MUTATION],
                       "responses": {"200": _body({"type": "object", "required": ["task"],
                                                   "properties": {"task": _ref("Tombstone")}}),
                                     **_COMMON, **_errors(404, 409)}},
        },
        "/api/sync": {"get": {
            "summary": "Changes in a scope after a seq (the socket `sync`, over HTTP)",
            "security": _BEARER,
            "parameters": [
                _param("scope", {"type": "string"}, required=True),
                _param("since", {"type": "integer", "minimum": 0}),
                _param("limit", {"type": "integer", "minimum": 1}),
            ],
            "responses": {"200": _body(_ref("SyncAnswer")), **_COMMON, **_errors(403)}}},
        "/api/health": {"get": {"summary": "Liveness and component state",
                                "responses": {"200": _body(_ref("Health"))}}},
        "/api/ready": {"get": {"summary": "Readiness for a load balancer",
                               "responses": {"200": _body(_ref("Ready")),
                                             "503": _body(_ref("Ready"), "not ready")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format 0.0.4)",
            "responses": {"200": {"description": "metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _body({"type": "object"})}}},
    }


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "TaskMaster Realtime", "version": "0.1.0",
                 "description": "REST surface of the real-time task-sync server. "
                                "Live events travel over Socket.IO (see DESIGN.md)."},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
