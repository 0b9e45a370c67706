"""Prometheus metrics, in the app's own registry (no process-wide state).

Two kinds: instruments observed on the request path (HTTP latency by route, connects and
refusals by reason, commit -> relay lag, sync sizes, store latency, rate-limit hits), and
readings of counters the components keep anyway as plain integers (events published and
delivered, slow sockets dropped, broker reconnects, ...), collected only when /metrics is
scraped, so the delivery loop pays nothing per recipient for being measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (0, 1, 10, 100, 1000, 10000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_latency = Histogram(
            "taskmaster_http_request_duration_seconds", "REST requests by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.http_responses = Counter(
            "taskmaster_http_responses_total", "REST responses by route and status",
            ["method", "route", "status"], registry=r)
        self.connects = Counter(
            "taskmaster_socket_connects_total",
            "Socket.IO connection attempts: outcome accepted or refused, with the reason",
            ["outcome", "reason"], registry=r)
        self.delivery_lag = Histogram(
            "taskmaster_delivery_lag_seconds",
            "From a change's commit (its ts) to its relay to this instance's sockets",
            buckets=LATENCY_BUCKETS, registry=r)
        self.sync_changes = Histogram(
            "taskmaster_sync_changes", "Changes per sync answer, by path",
            ["via"], buckets=SIZE_BUCKETS, registry=r)
        self.store_latency = Histogram(
            "taskmaster_store_seconds", "Store calls by kind", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.rate_limited = Counter(
            "taskmaster_rate_limited_total", "Requests, events and connects over a limit",
            ["kind"], registry=r)

        # labels() takes a lock and builds a key on every call; the children are kept
        # instead (a few routes x methods x statuses, bounded by the route table).
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._store: dict[str, Any] = {}

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._http.get((method, route, status))
        if children is None:
            children = self._http[method, route, status] = (
                self.http_latency.labels(method, route),
                self.http_responses.labels(method, route, status))
        children[0].observe(seconds)
        children[1].inc()

    def watch(self, app: web.Application) -> None:
        """Read the components' own counters at scrape time."""
        self.registry.register(_Readings(app))

    def observe_store(self, kind: str, seconds: float) -> None:
        child = self._store.get(kind)
        if child is None:
            child = self._store[kind] = self.store_latency.labels(kind)
        child.observe(seconds)

    def observe_lag(self, committed_at: Any) -> None:
        try:
            lag = time.time() - datetime.fromisoformat(committed_at).timestamp()
        except (TypeError, ValueError):
            return
        self.delivery_lag.observe(max(0.0, lag))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Readings(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        from . import keys  # keys names every component, this module among them

        app = self.app
        gateway = app[keys.SOCKETS]
        yield _gauge("taskmaster_sockets_connected", "Open Socket.IO sessions",
                     len(gateway.sessions))
        yield _gauge("taskmaster_draining", "1 while the instance drains (SIGTERM)",
                     int(gateway.draining))
        yield _gauge("taskmaster_socket_connects_waiting",
                     "Socket.IO CONNECTs queued for admission (sockets.max_connecting)",
                     gateway.connects_waiting)
        yield _counter("taskmaster_events_delivered", "Task events sent to sockets",
                       gateway.delivered)
        yield _counter("taskmaster_relay_overflows",
                       "Events the relay queue had no room for (sockets resynced)",
                       gateway.relay_overflows)
        delivery = gateway.delivery
        yield _gauge("taskmaster_socket_pending_bytes",
                     "Unsent websocket output held in this process, all sockets",
                     delivery.pending_bytes())
        yield _counter("taskmaster_sockets_dropped_slow",
                       "Sockets dropped for not reading their output", delivery.dropped_slow)
        family = CounterMetricFamily("taskmaster_socket_writes",
                                     "Packets written straight to a websocket or queued",
                                     labels=["path"])
        family.add_metric(["direct"], delivery.direct)
        family.add_metric(["queued"], delivery.queued)
        yield family
        broker = app.get(keys.BROKER)
        if broker is not None:
            yield _gauge("taskmaster_broker_up", "1 while the broker subscription works",
                         int(broker.healthy))
            for name, help_text in (("published", "Events published"),
                                    ("received", "Events received from other instances"),
                                    ("reconnects", "Broker reconnections"),
                                    ("dropped", "Events the broker could not publish")):
                value = getattr(broker, name, None)
                if value is not None:
                    yield _counter(f"taskmaster_broker_{name}", help_text, value)
        reads = getattr(app.get(keys.STORE), "reads", None)  # the embedded store's
        if reads is not None:
            family = CounterMetricFamily(
                "taskmaster_store_inline_reads",
                "Embedded-store reads answered on the event loop, or moved to a reader "
                "thread (too long for the loop, or refused there)", labels=["outcome"])
            family.add_metric(["answered"], reads[0])
            family.add_metric(["moved"], reads[1])
            yield family
        tasks = app.get(keys.TASKS)
        if tasks is not None:
            yield _counter("taskmaster_writes_reconciled",
                           "Scopes re-announced after a write of unknown outcome",
                           tasks.reconciliations)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def route_of(request: web.Request) -> str:
    resource: Any = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
