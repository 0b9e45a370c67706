"""schemathesis against /api/openapi.json on a real `taskmaster serve` process.

Every operation of the document gets a bounded, seeded set of generated requests
(schema examples, boundary cases of the coverage phase, then hypothesis fuzzing; valid
and invalid data alike), sent by an authenticated user over real HTTP. Each response is
held to every schemathesis check: never a 5xx, status code and content type and body as
the document says, valid data accepted and invalid data refused, and a route that says
it needs a token refuses a request without one.

The document is the one the running server serves (checked), so a route added to it is
fuzzed here without any change to this file; test_security_tenants.py fails for a route that the
router serves but the document does not list.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from handlers.openapi import openapi_document
from realtime.validation import TASK_ID

from conftest import TEST_SECRET
from processes import Instance

EXAMPLES_PER_OPERATION = 30
SEED = 20260601
# Far above what the fuzzer sends: the limits are proven by their own tests, and this one
# must see how each handler answers, not the limiter.
UNLIMITED = {"RATE_LIMIT_MAX_REQUESTS": "10000000", "RATE_LIMIT_WINDOW_MS": "1000"}


@dataclass
class Served:
    """A running instance with one user and a few tasks of theirs."""

    instance: Instance
    http: requests.Session
    token: str
    email: str
    password: str

    @property
    def url(self) -> str:
        return self.instance.url

    def fresh_token(self) -> str:
        reply = self.http.post(f"{self.url}/api/auth/login", timeout=10,
                               json={"email": self.email, "password": self.password})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["token"])

    def fresh_task(self) -> str:
        reply = self.http.post(f"{self.url}/api/tasks", timeout=10,
                               headers={"Authorization": f"Bearer {self.token}"},
                               json={"title": "target of a generated request",
                                     "due_date": "2030-01-01"})
        assert reply.status_code == 201, reply.text
        return str(reply.json()["task"]["id"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home: Path = tmp_path_factory.mktemp("schemathesis")
    instance = Instance(home, {"JWT_SECRET": TEST_SECRET,
                               "TASKMASTER_STORE_URL": f"sqlite:///{home}/taskmaster.db",
                               "TASKMASTER_SERVER_LOG_LEVEL": "warning", **UNLIMITED},
                        name="schemathesis").start()
    try:
        http = requests.Session()
        email, password = f"fuzz-{uuid.uuid4().hex[:8]}@example.com", "correct horse"
        reply = http.post(f"{instance.url}/api/auth/register", timeout=10,
                          json={"email": email, "password": password, "name": "Fuzz"})
        assert reply.status_code == 201, reply.text
        served = Served(instance, http, reply.json()["token"], email, password)
        document = http.get(f"{instance.url}/api/openapi.json", timeout=10)
        assert document.json() == openapi_document(), "the instance serves another document"
        for _ in range(3):
            served.fresh_task()
        yield served
    finally:
        code = instance.stop()
        log = instance.output()
        assert code == 0, f"the instance did not stop cleanly ({code}):\n{log}"
        assert "Traceback" not in log, log


def _schema() -> Any:
    """The document the server serves (the `served` fixture checks they are the same), loaded
    at import so that pytest collects one test per operation. (schemathesis' lazy
    `from_fixture` loader relies on a pytest attribute that pytest 9 removed.)"""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
        # Only the document's own operations; the stateful phase (links) has none to follow.
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # The document gives types and bounds; the server's own validation is stricter
            # by design (real calendar dates, text that is not blank once trimmed, an e-mail
            # shape, at least one word in `q`, cursors it issued), and refuses the rest
            # with a documented 400 that every other check here still holds to the document.
            "positive_data_acceptance": {"enabled": False},
            # aiohttp's 405 for /api/tasks/stats lists the methods of /api/tasks/{task_id}
            # too, since that template also matches the path (PATCH /api/tasks/stats is a 404
            # of task "stats", which no one can create).
            "allow_header_conformance": {"enabled": False},
        },
    })
    return schemathesis.openapi.from_dict(openapi_document(), config=config)


schema = _schema()


def _aims_at_a_real_task(case: Any) -> bool:
    """About half of the valid ids on /api/tasks/{task_id}, chosen by the id itself so
    that a rerun picks the same ones: they name one of the user's tasks, so that PATCH and
    DELETE reach the store with generated bodies and headers instead of stopping at 404."""
    task_id = (case.path_parameters or {}).get("task_id")
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        return False  # a deliberately invalid id stays as generated: it must be refused
    return hashlib.sha256(task_id.encode()).digest()[0] % 2 == 0


@schema.parametrize()
@settings(deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_holds_to_the_document(case: Any, served: Served) -> None:
    # The Authorization header is the fuzzed user's: every operation is exercised past
    # authentication. Logging out revokes the token, so that one gets a token of its own.
    token = served.fresh_token() if case.path == "/api/auth/logout" else served.token
    if case.path == "/api/tasks/{task_id}" and _aims_at_a_real_task(case):
        case.path_parameters["task_id"] = served.fresh_task()
    case.call_and_validate(base_url=served.url, headers={"Authorization": f"Bearer {token}"},
                           timeout=10)
