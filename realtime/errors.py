"""The error vocabulary shared by REST and sockets (DESIGN.md section 4).

A service or store raises `ApiError(code, message, details)`; REST turns it into
`{"error": {...}}` with the status below, a socket ack into `{ok: false, error: {...}}`.
"""

from __future__ import annotations

from typing import Any

HTTP_STATUS = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: Any = None, status: int | None = None):
        assert code in HTTP_STATUS, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status or HTTP_STATUS[code]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(message: str = "task not found") -> ApiError:
    return ApiError("not_found", message)


def unauthorized(message: str) -> ApiError:
    return ApiError("unauthorized", message)


def unavailable(message: str = "the store is unavailable, try again shortly") -> ApiError:
    return ApiError("unavailable", message)
