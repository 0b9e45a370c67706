"""Who may read and write which scope.

Every check in the service goes through these two functions, so shared boards
(`board:<id>`) will extend this module and nothing else. Today a user reads and
writes exactly their personal scope.
"""

from __future__ import annotations


def personal_scope(user_id: str) -> str:
    return f"user:{user_id}"


def readable_scopes(user_id: str) -> tuple[str, ...]:
    return (personal_scope(user_id),)


def writable_scopes(user_id: str) -> tuple[str, ...]:
    return (personal_scope(user_id),)
