"""Prometheus metrics, on a registry owned by the App (no global registry for tests to clear).

`Metrics` holds every metric SUP exposes at `GET /metrics`. The App builds one and hands it to
what reports (the group commit, the scheduler, the WebSocket hub, the HTTP middleware); a part
built without one (a test, `sup admin`) reports nothing. Counters and histograms are updated
where things happen, at the cost of a lock and an addition; gauges that describe a state
(open WebSockets, the database pool, the job queue) are read when Prometheus scrapes, so they
cost nothing in between.

Label values are bounded: HTTP routes are the route's template (`/api/v1/chats/{chat_id}`),
never the path a client sent, and job kinds are the ones the code registers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("sup.observe")

# The classic text format, which every Prometheus reads (generate_latest writes it for these names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a fast read (~1 ms) to what a client would call broken (10 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Group commit takes up to 256 operations in one transaction (sup/db/batching.py).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# A scrape must not hang on a slow database: what it reads gets this long, then the last values stand.
REFRESH_TIMEOUT = 2.0

Sample = float | Mapping[tuple[str, ...], float]


class _Sampled(Collector):
    """Gauges read at scrape time from callables: no work between scrapes."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, tuple[str, ...], Callable[[], Sample]]] = []

    def add(self, name: str, documentation: str, labels: tuple[str, ...], read: Callable[[], Sample]) -> None:
        self._gauges.append((name, documentation, labels, read))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, labels, read in self._gauges:
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
            try:
                value = read()
            except Exception:  # a broken reading loses one gauge, not the scrape
                log.debug("reading gauge %s failed", name, exc_info=True)
                continue
            if isinstance(value, Mapping):
                for label_values, number in value.items():
                    family.add_metric(list(label_values), number)
            else:
                family.add_metric([], value)
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, labels, _ in self._gauges:
            yield GaugeMetricFamily(name, documentation, labels=list(labels))


class Metrics:
    """Every metric of one App, on its own registry."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = registry = CollectorRegistry()
        self.http_requests = Counter(
            "sup_http_requests",
            "HTTP requests answered, by method, route template and status (499: the client went away).",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "sup_http_request_duration_seconds",
            "Time from a request reaching SUP's middleware to its answer, by method and route template "
            "(WebSocket sessions are not timed).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_in_flight = Gauge(
            "sup_http_requests_in_flight",
            "HTTP requests being handled now (open WebSocket sessions included).",
            registry=registry,
        )
        self.ratelimit_refusals = Counter(
            "sup_ratelimit_refusals",
            "Requests refused by a rate limit (429), by route template.",
            ["route"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "sup_upload_bytes",
            "Bytes received on the file upload routes (whole uploads and resumable chunks, multipart framing "
            "included).",
            registry=registry,
        )
        self.ws_events_sent = Counter(
            "sup_websocket_events_sent",
            "Stream events written to WebSockets: live as they were announced, or read back from the database "
            "(catch-up after a reconnect, a lost hint or an overflow).",
            ["path"],
            registry=registry,
        )
        self._live_sent = self.ws_events_sent.labels("live")
        self._catch_up_sent = self.ws_events_sent.labels("catch_up")
        self.delivery_lag = Histogram(
            "sup_delivery_lag_seconds",
            "From an event's append to a device stream (in its transaction, just before the commit) to its "
            "write on the device's WebSocket, for live events; an event from another process counts from its "
            "arrival over Redis.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "sup_send_batch_size",
            "Writes committed together by group commit (sends, edits, reactions...) per transaction.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_commit = Histogram(
            "sup_send_batch_commit_seconds",
            "Time to run and commit one group-commit transaction (fsync included).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.job_runs = Counter(
            "sup_job_runs",
            "Background job runs in this process, by kind and outcome: ok, retry (failed, will run again) or "
            "failed (gave up, or a periodic run failed).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "sup_job_duration_seconds",
            "Time a background job's handler ran, by kind.",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.jobs = Gauge(
            "sup_jobs",
            "Jobs waiting (queued) or claimed (running) in the database, by kind: the queue of every process "
            "sharing the database, periodic jobs left out.",
            ["kind", "state"],
            registry=registry,
        )
        self._sampled = _Sampled()
        registry.register(self._sampled)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        if process:
            # /proc/self on Linux: RSS, CPU seconds, open descriptors against their limit, start time.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)

    # -- what the parts report ------------------------------------------------------------

    def event_sent(self, appended_at: float | None) -> None:
        """One stream event written to a WebSocket; `appended_at` (monotonic) for a live one."""
        if appended_at is None:
            self._catch_up_sent.inc()
            return
        self._live_sent.inc()
        if appended_at:
            self.delivery_lag.observe(time.monotonic() - appended_at)

    def batch_committed(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_commit.observe(seconds)

    def job_ran(self, kind: str, outcome: str, seconds: float) -> None:
        self.job_runs.labels(kind, outcome).inc()
        self.job_duration.labels(kind).observe(seconds)

    # -- state read at scrape time ------------------------------------------------------------

    def gauge(self, name: str, documentation: str, read: Callable[[], Sample], labels: tuple[str, ...] = ()) -> None:
        """A gauge whose value `read()` gives when Prometheus scrapes (a number, or {label values: number})."""
        self._sampled.add(name, documentation, labels, read)

    def refresh_with(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Async work run before each scrape (a database count) to update gauges."""
        self._refreshers.append(refresh)

    async def expose(self) -> bytes:
        """The Prometheus text format, after the async refreshers (each bounded by REFRESH_TIMEOUT)."""
        for refresh in self._refreshers:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await refresh()
            except Exception:  # the gauges keep their last values
                log.warning("refreshing metrics failed", exc_info=True)
        return generate_latest(self.registry)


def replace_gauge(gauge: Gauge, values: Mapping[tuple[str, ...], float], known: set[tuple[str, ...]]) -> None:
    """Set a labelled gauge to `values`; label sets seen before and now absent go to 0 (not stale)."""
    for labels in known - values.keys():
        gauge.labels(*labels).set(0)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    known.update(values.keys())
