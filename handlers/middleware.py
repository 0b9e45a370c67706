"""Request plumbing shared by every handler: errors, JSON in and out, identity, queries.

Every failure leaves as `{"error": {"code", "message", "details"?}}`. aiohttp's own
HTTP exceptions (unknown route, wrong method, body too large) are translated into
the same shape, and an unexpected exception is logged with the request id and
answered without a stack trace.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from realtime import keys, logs
from realtime.auth import Identity, bearer_token
from realtime.errors import ApiError
from realtime.metrics import route_of

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
JSON_TYPES = {"application/json"}
CODE_FOR_STATUS = {404: "not_found", 401: "unauthorized", 403: "forbidden", 409: "conflict",
                   413: "too_large", 429: "rate_limited", 503: "unavailable"}
REQUEST_ID_KEY = web.RequestKey("request_id", str)


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error_response(code: str, message: str, status: int, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return json_response({"error": body}, status=status, headers=headers)


# Request ids: a per-process random prefix and a counter; unique without a syscall each.
_REQUEST_PREFIX = os.urandom(4).hex()
_request_counter = itertools.count(1)


def _next_request_id() -> str:
    return f"{_REQUEST_PREFIX}-{next(_request_counter):x}"


SOCKET_IO_ROUTE = "/socket.io/"  # connections, not requests: measured by socket metrics


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)  # error_middleware (inside) turns failures into answers
    route = route_of(request)
    if route != SOCKET_IO_ROUTE:
        request.app[keys.METRICS].observe_http(
            request.method, route, response.status, time.perf_counter() - started)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if REQUEST_ID.fullmatch(incoming) else _next_request_id()
    request[REQUEST_ID_KEY] = request_id
    logs.request_id.set(request_id)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc.code, exc.message, exc.status, exc.details)
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method,
                      request.path, request_id)
        response = error_response("internal", "the server failed to handle this request",
                                  500, {"request_id": request_id})
    response.headers["X-Request-Id"] = request_id
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    if exc.status < 400:
        raise exc  # redirects and the like pass through unchanged
    code = CODE_FOR_STATUS.get(exc.status, "invalid")
    if exc.status == 404:
        message = "no such route"
    elif exc.status == 405:
        message = f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    elif exc.status == 413:
        message = "the request body is too large"
    else:
        message = exc.reason
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(code, message, exc.status, headers=headers)


async def read_json(request: web.Request) -> Any:
    if request.content_type not in JSON_TYPES:
        raise ApiError("invalid", "Content-Type must be application/json", status=415)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError("too_large", "the request body is too large",
                       {"max_bytes": request.app[keys.CONFIG].max_body_bytes}) from None
    if not raw:
        raise ApiError("invalid", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("invalid", "the request body is not valid JSON",
                       {"reason": str(exc)[:200]}) from None


async def identity(request: web.Request) -> Identity:
    token = bearer_token(request.headers.get("Authorization"))
    return await request.app[keys.AUTH].authenticate(token)


def query_params(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string as a plain dict, refusing repeated and unknown parameters."""
    params: dict[str, str] = {}
    for name in request.query:
        if name not in allowed:
            raise ApiError("invalid", f"unknown query parameter {name[:64]!r}",
                           {"allowed": list(allowed)})
        values = request.query.getall(name)
        if len(values) > 1:
            raise ApiError("invalid", f"query parameter {name!r} is repeated; give it once")
        params[name] = values[0]
    return params


def int_param(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,16}", raw) or not lo <= int(raw) <= hi:
        raise ApiError("invalid", f"{name} must be an integer from {lo} to {hi}")
    return int(raw)
