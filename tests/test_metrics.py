"""GET /metrics (issue 7): Prometheus series that move with what the instance did."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_sockets import scope_of, url_of

from conftest import Api
from socket_clients import Tab


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = await api.get("/metrics")
    assert reply.status == 200
    text = reply.body if isinstance(reply.body, str) else reply.body.decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_connects_writes_deliveries_and_syncs(
        user_api: Api, closing: list[Any]) -> None:
    url, scope = url_of(user_api), scope_of(user_api)
    before = await scrape(user_api)
    refused = Tab(url, "not-a-token")
    closing.append(refused)
    with pytest.raises(Exception, match="failed to connect"):
        await refused.connect()
    tab = await Tab(url, user_api.token).connect()
    closing.append(tab)
    for n in range(3):
        assert (await user_api.post("/api/tasks", json={"title": f"m{n}"})).status == 201
    await tab.wait_for(lambda _: len(tab.task_events()) == 3)
    sync = await user_api.get("/api/sync", params={"scope": scope, "since": 0})
    assert len(sync.body["changes"]) == 3
    after = await scrape(user_api)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("taskmaster_socket_connects_total", outcome="refused",
                reason="unauthorized") == 1
    assert grew("taskmaster_socket_connects_total", outcome="accepted", reason="") == 1
    assert value(after, "taskmaster_sockets_connected") == 1
    assert grew("taskmaster_events_delivered_total") == 3
    assert grew("taskmaster_broker_published_total") == 3
    assert grew("taskmaster_delivery_lag_seconds_count") == 3
    assert grew("taskmaster_http_request_duration_seconds_count",
                method="POST", route="/api/tasks") == 3
    assert grew("taskmaster_http_responses_total", method="POST", route="/api/tasks",
                status="201") == 3
    assert grew("taskmaster_sync_changes_count", via="rest") == 1
    assert grew("taskmaster_sync_changes_sum", via="rest") == 3
    assert grew("taskmaster_store_seconds_count", kind="write") >= 3
    assert value(after, "taskmaster_broker_up") == 1
    assert value(after, "taskmaster_draining") == 0
