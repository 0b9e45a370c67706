"""Environment for a server under load from one machine: the benchmarks, the soak and the
tests that start real instances. Every rate limit stays on (its cost is part of what is
measured) but far above any load one address can make, and the socket caps make room for
thousands of sockets of one user (the big-room benchmark)."""

from __future__ import annotations

LIMITS_FAR_ABOVE_LOAD: dict[str, str] = {
    "RATE_LIMIT_MAX_REQUESTS": "1000000000",
    "TASKMASTER_RATE_LIMIT_USER_MAX_REQUESTS": "1000000000",
    "TASKMASTER_RATE_LIMIT_AUTH_MAX_REQUESTS": "1000000000",
    "TASKMASTER_RATE_LIMIT_CONNECT_MAX": "1000000000",
    "TASKMASTER_RATE_LIMIT_SOCKET_MAX_EVENTS": "1000000000",
    "TASKMASTER_SOCKETS_MAX_PER_USER": "1000000",
    "TASKMASTER_SOCKETS_MAX_PER_INSTANCE": "1000000",
}
