"""Validation of client input, shared by REST and socket events.

Everything a client sends passes through here before it reaches the store: wrong
types, unknown fields, operator objects such as `{"$gt": ""}`, over-long strings,
bad dates and unknown enum values all become `ApiError('invalid')` with a
`details.fields` map saying what was wrong with each field.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from store.base import PRIORITIES, STATUSES

from .errors import ApiError

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
NAME_MAX = 100
EMAIL_MAX = 254
PASSWORD_MAX = 1024
MUTATION_ID_MAX = 128
SEARCH_MAX_CHARS = 200
SEARCH_MAX_TERMS = 10
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SCOPE = re.compile(r"^(user|board):[A-Za-z0-9_-]{1,64}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WORD = re.compile(r"\w+")
MUTATION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# Ids a client may not choose: `/api/tasks/<id>` would name another route.
RESERVED_TASK_IDS = ("stats",)

TASK_WRITABLE = ("title", "description", "status", "priority", "due_date")


def iso(moment: datetime) -> str:
    """The one timestamp format: UTC, milliseconds, `Z` (text order is time order)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{moment.microsecond // 1000:03d}Z"


class Fields:
    """Collects per-field problems so one answer names all of them."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def bad(self, name: str, problem: str) -> None:
        self.problems.setdefault(name, problem)

    def raise_if_any(self, message: str = "the request has invalid fields") -> None:
        if self.problems:
            raise ApiError("invalid", message, {"fields": self.problems})


def require_object(body: Any, what: str = "the body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("invalid", f"{what} must be a JSON object")
    return body


def reject_unknown(body: dict[str, Any], allowed: tuple[str, ...], fields: Fields) -> None:
    for key in body:
        if key not in allowed:
            fields.bad(str(key)[:64], "unknown field")


def text(value: Any, name: str, fields: Fields, *, min_len: int, max_len: int,
         strip: bool = True) -> str | None:
    if not isinstance(value, str):
        fields.bad(name, "must be a string")
        return None
    if strip:
        value = value.strip()
    if "\x00" in value:
        fields.bad(name, "must not contain NUL characters")
        return None
    if not min_len <= len(value) <= max_len:
        fields.bad(name, f"must be {min_len} to {max_len} characters long")
        return None
    return value


def choice(value: Any, name: str, options: tuple[str, ...], fields: Fields) -> str | None:
    if not isinstance(value, str) or value not in options:
        fields.bad(name, f"must be one of {', '.join(options)}")
        return None
    return value


def due_date(value: Any, name: str, fields: Fields) -> str | None:
    """ISO 8601 date or date-time, normalised to UTC; a date alone means 00:00 UTC."""
    if value is None:
        return None
    parsed = parse_instant(value)
    if parsed is None:
        fields.bad(name, "must be an ISO 8601 date or date-time, or null")
    return parsed


def parse_instant(value: Any) -> str | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    try:
        return iso(moment)
    except (ValueError, OverflowError):  # out of range once moved to UTC
        return None


def task_id(value: Any, name: str = "id") -> str:
    if not isinstance(value, str) or not TASK_ID.fullmatch(value):
        raise ApiError("invalid", f"{name} must be 1 to 64 letters, digits, '-' or '_'")
    return value


def scope(value: Any) -> str:
    if not isinstance(value, str) or not SCOPE.fullmatch(value):
        raise ApiError("invalid", "scope must look like user:<id> or board:<id>")
    return value


def expected_version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**53:
        raise ApiError("invalid", "expected_version must be a positive integer")
    return value


def mutation_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MUTATION_ID.fullmatch(value):
        raise ApiError("invalid", "mutation_id must be 1 to 128 printable ASCII characters")
    return value


def new_task(body: Any) -> tuple[str | None, dict[str, Any]]:
    """A create request -> (client id or None, task fields with defaults)."""
    body = require_object(body)
    fields = Fields()
    reject_unknown(body, ("id", *TASK_WRITABLE), fields)
    client_id = None
    if "id" in body:
        if isinstance(body["id"], str) and body["id"] in RESERVED_TASK_IDS:
            fields.bad("id", f"is reserved: {', '.join(RESERVED_TASK_IDS)}")
        elif isinstance(body["id"], str) and TASK_ID.fullmatch(body["id"]):
            client_id = body["id"]
        else:
            fields.bad("id", "must be 1 to 64 letters, digits, '-' or '_'")
    if "title" not in body:
        fields.bad("title", "is required")
    values = {
        "title": text(body.get("title"), "title", fields, min_len=1, max_len=TITLE_MAX),
        "description": text(body.get("description", ""), "description", fields, min_len=0,
                            max_len=DESCRIPTION_MAX, strip=False),
        "status": choice(body.get("status", "todo"), "status", STATUSES, fields),
        "priority": choice(body.get("priority", "medium"), "priority", PRIORITIES, fields),
        "due_date": due_date(body.get("due_date"), "due_date", fields),
    }
    fields.raise_if_any()
    return client_id, values


def task_changes(body: Any) -> dict[str, Any]:
    """An update request -> the fields to change (at least one)."""
    body = require_object(body)
    fields = Fields()
    reject_unknown(body, TASK_WRITABLE, fields)
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name == "title":
            changes[name] = text(value, name, fields, min_len=1, max_len=TITLE_MAX)
        elif name == "description":
            changes[name] = text(value, name, fields, min_len=0, max_len=DESCRIPTION_MAX,
                                 strip=False)
        elif name == "status":
            changes[name] = choice(value, name, STATUSES, fields)
        elif name == "priority":
            changes[name] = choice(value, name, PRIORITIES, fields)
        elif name == "due_date":
            changes[name] = due_date(value, name, fields)
    fields.raise_if_any()
    if not changes:
        raise ApiError("invalid", "give at least one of: " + ", ".join(TASK_WRITABLE))
    return changes


def search_terms(q: str) -> tuple[str, ...]:
    if len(q) > SEARCH_MAX_CHARS:
        raise ApiError("invalid", f"q must be at most {SEARCH_MAX_CHARS} characters")
    terms = tuple(dict.fromkeys(word.lower() for word in WORD.findall(q)))
    if not terms:
        raise ApiError("invalid", "q must contain at least one word")
    if len(terms) > SEARCH_MAX_TERMS:
        raise ApiError("invalid", f"q may contain at most {SEARCH_MAX_TERMS} words")
    return terms


# The most common passwords of at least 8 characters in public breach lists: a tiny
# list, on purpose (the length minimum does most of the work; this refuses the
# handful every credential-stuffing run tries first).
COMMON_PASSWORDS = frozenset({
    "password", "password1", "password12", "password123", "passw0rd", "12345678",
    "123456789", "1234567890", "0123456789", "87654321", "11111111", "00000000",
    "12341234", "qwertyui", "qwertyuiop", "qwerty123", "1q2w3e4r", "1qaz2wsx", "asdfghjk",
    "zxcvbnm1", "abcdefgh", "abcd1234", "iloveyou", "sunshine", "princess", "football",
    "baseball", "superman", "starwars", "trustno1", "letmein1", "welcome1", "welcome123",
    "admin123", "administrator", "changeme", "taskmaster",
})


def weak_password(password: str, email: str) -> str | None:
    """Why a new password is refused beyond its length, or None."""
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS:
        return "is one of the most common passwords; choose another"
    if len(set(password)) == 1:
        return "must not be one character repeated"
    address = email.strip().lower()
    if lowered in {address, address.split("@", 1)[0]}:
        return "must not be your email address"
    return None


def credentials(body: Any, *, register: bool, password_min: int) -> dict[str, str]:
    body = require_object(body)
    fields = Fields()
    allowed = ("email", "password", "name") if register else ("email", "password")
    reject_unknown(body, allowed, fields)
    email = text(body.get("email"), "email", fields, min_len=3, max_len=EMAIL_MAX)
    if email is not None and not EMAIL.fullmatch(email):
        fields.bad("email", "must be an email address")
    password_min = password_min if register else 1
    password = text(body.get("password"), "password", fields, min_len=password_min,
                    max_len=PASSWORD_MAX, strip=False)
    if register and email is not None and password is not None:
        problem = weak_password(password, email)
        if problem:
            fields.bad("password", problem)
    result = {"email": (email or "").lower(), "password": password or ""}
    if register:
        result["name"] = text(body.get("name"), "name", fields, min_len=1,
                              max_len=NAME_MAX) or ""
    fields.raise_if_any()
    return result
