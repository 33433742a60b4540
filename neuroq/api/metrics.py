"""Prometheus metrics at `/metrics`, counted from the store's events.

Counting happens where the transitions happen: `Metrics.on_store_event` listens to the store
(neuroq.store.events), which reports what each committed operation changed (a job created, a job
finished, a sweep's timeouts), so the routes, the worker protocol and the background sweeper need
no metric calls of their own, and a count can only move when the store really committed it.
Gauges that describe the present (queue depth, jobs in progress, workers by state) are read from
the store at scrape time instead, so they agree with the database even when several server
processes share it. Counters and histograms are per process, as Prometheus expects; sum them
across instances in queries.

Each app gets its own `CollectorRegistry`, so tests and several apps in one process never share
or collide on a metric.

`/metrics` needs the client API key (`Authorization: Bearer KEY`) unless
`NEUROQ_METRICS_PUBLIC=true`: the endpoint names and counts it exposes describe the workload.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuroq.jobs import Job, JobStatus, now_ms
from neuroq.scaler.source import endpoint_report
from neuroq.store.base import JobStore, QueueStats, WorkerInfo
from neuroq.store.events import (
    JobRetried,
    JobsEnded,
    JobsRequeued,
    JobsTaken,
    JobSubmitted,
    StoreEvent,
    WebhookAttempted,
)

log = logging.getLogger("neuroq.metrics")

#: job delay and execution times span milliseconds (echo) to hours (training)
TIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
HTTP_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 90)
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
WORKER_STATES = ("initializing", "ready", "running", "unhealthy", "recycling")


class Metrics:
    """Every metric of one app, registered in that app's own registry.

    `finished` mirrors the finished-jobs counter as plain integers so the dashboard can compute
    rates without reading Prometheus' internals."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter(
            "neuroq_jobs_submitted",
            "Jobs accepted (idempotent repeats not counted).",
            ["endpoint"],
            registry=r,
        )
        self.finished_total = Counter(
            "neuroq_jobs_finished",
            "Jobs that reached a terminal state, by that state.",
            ["endpoint", "status"],
            registry=r,
        )
        self.retried = Counter(
            "neuroq_jobs_retried",
            "Jobs sent back to the queue by /retry.",
            ["endpoint"],
            registry=r,
        )
        self.requeued = Counter(
            "neuroq_jobs_requeued", "Jobs requeued because their worker was lost.", registry=r
        )
        self.queue_depth = Gauge(
            "neuroq_queue_depth",
            "Jobs waiting in the queue (read at scrape time).",
            ["endpoint"],
            registry=r,
        )
        self.in_progress = Gauge(
            "neuroq_jobs_in_progress",
            "Jobs held by a worker (read at scrape time).",
            ["endpoint"],
            registry=r,
        )
        self.delay = Histogram(
            "neuroq_job_delay_seconds",
            "Time from submission (or retry) to a worker taking it.",
            ["endpoint"],
            buckets=TIME_BUCKETS_S,
            registry=r,
        )
        self.execution = Histogram(
            "neuroq_job_execution_seconds",
            "Time from a worker taking a job to its end.",
            ["endpoint", "status"],
            buckets=TIME_BUCKETS_S,
            registry=r,
        )
        self.workers = Gauge(
            "neuroq_workers",
            "Live workers by state (read at scrape time).",
            ["endpoint", "state"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "neuroq_webhook_deliveries", "Webhook POSTs answered with a 2xx.", registry=r
        )
        self.webhook_failures = Counter(
            "neuroq_webhook_failures",
            "Webhook attempts that failed; final=true when given up.",
            ["final"],
            registry=r,
        )
        self.http_requests = Counter(
            "neuroq_http_requests",
            "HTTP requests by route template and status code.",
            ["method", "route", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "neuroq_http_request_duration_seconds",
            "Time to the end of each response.",
            ["method", "route"],
            buckets=HTTP_BUCKETS_S,
            registry=r,
        )
        # The scaler's inputs and decision per endpoint (configured or with live jobs).
        self.endpoint_gauges = {
            key: Gauge(name, doc, ["endpoint"], registry=r)
            for key, name, doc in (
                ("queued", "neuroq_endpoint_queued_jobs", "Jobs waiting in the queue."),
                ("running", "neuroq_endpoint_running_jobs", "Jobs held by a worker."),
                (
                    "oldestQueueDelaySeconds",
                    "neuroq_endpoint_oldest_queue_delay_seconds",
                    "How long the job that has waited longest has been queued.",
                ),
                ("workers", "neuroq_endpoint_workers", "Live workers known to the server."),
                (
                    "desiredWorkers",
                    "neuroq_endpoint_desired_workers",
                    "Workers the endpoint's scaler rule wants now (see docs/scaling.md).",
                ),
            )
        }
        self.finished: dict[tuple[str, str], int] = {}
        for final in ("true", "false"):
            self.webhook_failures.labels(final)  # present at 0 before the first failure

    def job_finished(self, job: Job) -> None:
        status = job.status.value
        self.finished_total.labels(job.endpoint_id, status).inc()
        key = (job.endpoint_id, status)
        self.finished[key] = self.finished.get(key, 0) + 1
        if (execution_ms := job.execution_time_ms) is not None:
            self.execution.labels(job.endpoint_id, status).observe(execution_ms / 1000)

    def on_store_event(self, event: StoreEvent) -> None:
        """Count what the store just committed (subscribed in neuroq.api.app)."""
        if isinstance(event, JobSubmitted):
            self.submitted.labels(event.job.endpoint_id).inc()
        elif isinstance(event, JobsTaken):
            for job in event.jobs:
                if (delay_ms := job.delay_time_ms) is not None:
                    self.delay.labels(job.endpoint_id).observe(delay_ms / 1000)
        elif isinstance(event, JobsEnded):
            for job in event.jobs:
                self.job_finished(job)
        elif isinstance(event, JobsRequeued):
            if event.lost:
                self.requeued.inc(len(event.job_ids))
        elif isinstance(event, JobRetried):
            self.retried.labels(event.job.endpoint_id).inc()
        elif isinstance(event, WebhookAttempted):
            if event.ok:
                self.webhook_deliveries.inc()
            else:
                self.webhook_failures.labels("true" if event.final else "false").inc()

    def set_state_gauges(
        self, counts: dict[str, dict[str, int]], workers: list[WorkerInfo]
    ) -> None:
        """Replace the scrape-time gauges; endpoints that vanished drop out of the output."""
        self.queue_depth.clear()
        self.in_progress.clear()
        self.workers.clear()
        for endpoint_id, by_status in counts.items():
            self.queue_depth.labels(endpoint_id).set(by_status.get(JobStatus.IN_QUEUE.value, 0))
            self.in_progress.labels(endpoint_id).set(by_status.get(JobStatus.IN_PROGRESS.value, 0))
        for endpoint_id in {w.endpoint_id for w in workers}:
            for state in WORKER_STATES:
                self.workers.labels(endpoint_id, state).set(0)
        for worker in workers:
            self.workers.labels(worker.endpoint_id, worker_state(worker)).inc()

    def set_endpoint_gauges(self, reports: list[dict[str, Any]]) -> None:
        """Replace the scaler gauges with `endpoint_report`s read at scrape time."""
        for key, gauge in self.endpoint_gauges.items():
            gauge.clear()
            for report in reports:
                gauge.labels(report["endpoint"]).set(report[key])


def worker_state(worker: WorkerInfo) -> str:
    """The state shown for a worker: "running" while it holds a job and is otherwise healthy."""
    if worker.held_job_ids and worker.state == "ready":
        return "running"
    return worker.state


class HTTPMetricsMiddleware:
    """Counts each HTTP request by its route template (`/v2/{endpoint_id}/run`, never the raw
    path, so ids cannot blow up the label set) and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = 500  # what the client sees if the app fails before answering

        async def send_observed(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            # The router records the route it picked in the scope it was given, which is ours.
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.http_requests.labels(method, route, str(code)).inc()
            self.metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    app_state = request.app.state
    if not app_state.settings.metrics_public and not app_state.keys.check_client(
        request.headers.get("authorization")
    ):
        return JSONResponse(
            {"error": "missing or invalid API key: send 'Authorization: Bearer <key>'"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    store: JobStore = app_state.store
    metrics: Metrics = app_state.metrics
    workers = await store.list_workers()
    metrics.set_state_gauges(await store.job_counts(now_ms()), workers)
    metrics.set_endpoint_gauges(await _endpoint_reports(store, workers))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _endpoint_reports(store: JobStore, workers: list[WorkerInfo]) -> list[dict[str, Any]]:
    configs = {c.endpoint_id: c for c in await store.list_endpoints()}
    stats = await store.queue_stats()
    now = now_ms()
    return [
        endpoint_report(
            endpoint_id,
            configs.get(endpoint_id),
            stats.get(endpoint_id, QueueStats()),
            [w for w in workers if w.endpoint_id == endpoint_id],
            now,
        )
        for endpoint_id in sorted(set(configs) | set(stats))
    ]


ROUTES = [Route("/metrics", metrics_endpoint, methods=["GET"])]
