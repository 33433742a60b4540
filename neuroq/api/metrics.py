"""Prometheus metrics at `/metrics`, and the store wrapper that observes every job transition.

Counting happens where the transitions happen: `ObservedStore` wraps the app's store and looks at
what each operation returned (a job created, a job finished, a sweep's timeouts), so the routes,
the worker protocol and the background sweeper need no metric calls of their own, and a count can
only move when the store really committed the change. Gauges that describe the present (queue
depth, jobs in progress, workers by state) are read from the store at scrape time instead, so they
agree with the database even when several server processes share it. Counters and histograms are
per process, as Prometheus expects; sum them across instances in queries.

Each app gets its own `CollectorRegistry`, so tests and several apps in one process never share
or collide on a metric.

`/metrics` needs the client API key (`Authorization: Bearer KEY`) unless
`NEUROQ_METRICS_PUBLIC=true`: the endpoint names and counts it exposes describe the workload.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neuroq.jobs import Job, JobStatus, NewJob, now_ms
from neuroq.store.base import (
    Holder,
    JobStore,
    Notifier,
    SweepResult,
    WebhookDelivery,
    WorkerInfo,
)

log = logging.getLogger("neuroq.metrics")

#: the topic `ObservedStore.changes` publishes when a job changes state (dashboard wake-ups)
JOBS_CHANGED = "jobs"
#: job delay and execution times span milliseconds (echo) to hours (training)
TIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
HTTP_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 90)
#: how many jobs' webhook attempt histories the dashboard can show (oldest forgotten first)
WEBHOOK_HISTORY_JOBS = 2000
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
WORKER_STATES = ("initializing", "ready", "running", "unhealthy", "recycling")


@dataclass(frozen=True)
class WebhookAttempt:
    """One delivery attempt seen by this process, for the job page."""

    at_ms: int
    attempt: int
    ok: bool
    #: the delivery will not be tried again (succeeded or gave up)
    final: bool


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

    def jobs_purged(self, endpoint_id: str, count: int) -> None:
        self.finished_total.labels(endpoint_id, JobStatus.CANCELLED.value).inc(count)
        key = (endpoint_id, JobStatus.CANCELLED.value)
        self.finished[key] = self.finished.get(key, 0) + count

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


def worker_state(worker: WorkerInfo) -> str:
    """The state shown for a worker: "running" while it holds a job and is otherwise healthy."""
    if worker.held_job_ids and worker.state == "ready":
        return "running"
    return worker.state


class ObservedStore:
    """A `JobStore` that forwards every call to `inner` and records what changed.

    Observation never fails an operation: the change is committed by the time we look at it, so
    an error while counting is logged and the result returned as usual. Methods not listed here
    (optional store extensions) pass straight through `__getattr__`."""

    def __init__(self, inner: JobStore, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics
        #: in-process wake-ups for dashboards: JOBS_CHANGED moves on every job state change
        self.changes = Notifier()
        #: delivery id -> (job id, number of the attempt being made)
        self._delivery_jobs: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._webhook_attempts: OrderedDict[str, list[WebhookAttempt]] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def notifier(self) -> Notifier:
        return self.inner.notifier

    @property
    def recheck_s(self) -> float:
        return self.inner.recheck_s

    def _changed(self) -> None:
        self.changes.publish(JOBS_CHANGED)

    async def _observe(self, what: str, step: Callable[[], Awaitable[None] | None]) -> None:
        try:
            result = step()
            if result is not None:
                await result
        except Exception:
            log.exception("could not record metrics for %s", what)

    def webhook_attempts(self, job_id: str) -> list[WebhookAttempt]:
        return list(self._webhook_attempts.get(job_id, ()))

    # -- plain forwards ----------------------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def get(self, endpoint_id: str, job_id: str) -> Job | None:
        return await self.inner.get(endpoint_id, job_id)

    async def read_stream(
        self, endpoint_id: str, job_id: str, after_seq: int | None = None
    ) -> tuple[Job, list[tuple[int, str]]] | None:
        return await self.inner.read_stream(endpoint_id, job_id, after_seq)

    async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
        return await self.inner.health(endpoint_id, now_ms)

    async def record_progress(
        self,
        job_id: str,
        output_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> bool:
        return await self.inner.record_progress(job_id, output_json, now_ms, holder, lease_ms)

    async def append_stream(
        self,
        job_id: str,
        chunk_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> int | None:
        return await self.inner.append_stream(job_id, chunk_json, now_ms, holder, lease_ms)

    async def jobs_to_stop(self, worker_id: str) -> list[str]:
        return await self.inner.jobs_to_stop(worker_id)

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        return await self.inner.worker(worker_id)

    async def list_jobs(
        self,
        *,
        endpoint_id: str | None = None,
        status: str | None = None,
        since_ms: int = 0,
        limit: int = 50,
        offset: int = 0,
        now_ms: int,
    ) -> list[Job]:
        return await self.inner.list_jobs(
            endpoint_id=endpoint_id,
            status=status,
            since_ms=since_ms,
            limit=limit,
            offset=offset,
            now_ms=now_ms,
        )

    async def job_counts(self, now_ms: int) -> dict[str, dict[str, int]]:
        return await self.inner.job_counts(now_ms)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self.inner.list_workers()

    async def jobs_by_ids(self, job_ids: list[str], now_ms: int) -> list[Job]:
        return await self.inner.jobs_by_ids(job_ids, now_ms)

    async def job_webhooks(self, job_id: str) -> list[WebhookDelivery]:
        return await self.inner.job_webhooks(job_id)

    # -- observed operations -----------------------------------------------------------------

    async def submit(
        self, new: NewJob, now_ms: int, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        job, created = await self.inner.submit(new, now_ms, idempotency_key)
        if created:
            self.metrics.submitted.labels(job.endpoint_id).inc()
            self._changed()
        return job, created

    async def cancel(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        job = await self.inner.cancel(endpoint_id, job_id, now_ms)
        # A job that was terminal already comes back unchanged, with an older finish time.
        if job is not None and job.status is JobStatus.CANCELLED and job.finished_at_ms == now_ms:
            self.metrics.job_finished(job)
            self._changed()
        return job

    async def retry(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        job = await self.inner.retry(endpoint_id, job_id, now_ms)
        if job is not None:
            self.metrics.retried.labels(endpoint_id).inc()
            self._changed()
        return job

    async def purge_queue(self, endpoint_id: str, now_ms: int) -> int:
        removed = await self.inner.purge_queue(endpoint_id, now_ms)
        if removed:
            self.metrics.jobs_purged(endpoint_id, removed)
            self._changed()
        return removed

    async def take(
        self, endpoint_id: str, worker_id: str, limit: int, now_ms: int, lease_ms: int
    ) -> list[Job]:
        jobs = await self.inner.take(endpoint_id, worker_id, limit, now_ms, lease_ms)
        for job in jobs:
            if (delay_ms := job.delay_time_ms) is not None:
                self.metrics.delay.labels(endpoint_id).observe(delay_ms / 1000)
        if jobs:
            self._changed()
        return jobs

    async def release(self, job_ids: list[str], worker_id: str, now_ms: int) -> int:
        released = await self.inner.release(job_ids, worker_id, now_ms)
        if released:
            self._changed()
        return released

    async def finish(
        self,
        job_id: str,
        *,
        output_json: str | None,
        error_json: str | None,
        now_ms: int,
        holder: Holder | None = None,
        endpoint_id: str | None = None,
    ) -> Job | None:
        job = await self.inner.finish(
            job_id,
            output_json=output_json,
            error_json=error_json,
            now_ms=now_ms,
            holder=holder,
            endpoint_id=endpoint_id,
        )
        if job is not None:
            self.metrics.job_finished(job)
            self._changed()
        return job

    async def touch_worker(
        self,
        endpoint_id: str,
        worker_id: str,
        now_ms: int,
        *,
        held_job_ids: list[str] | None = None,
        state: str | None = None,
        lease_ms: int | None = None,
        alias: str | None = None,
    ) -> None:
        await self.inner.touch_worker(
            endpoint_id,
            worker_id,
            now_ms,
            held_job_ids=held_job_ids,
            state=state,
            lease_ms=lease_ms,
            alias=alias,
        )

    async def sweep(self, now_ms: int, worker_lost_ms: int, max_retries: int) -> SweepResult:
        result = await self.inner.sweep(now_ms, worker_lost_ms, max_retries)
        ended = result.timed_out + result.failed_lost
        if ended:

            async def count() -> None:
                for job in await self.inner.jobs_by_ids(ended, now_ms):
                    self.metrics.job_finished(job)

            await self._observe("sweep", count)
        if result.requeued:
            self.metrics.requeued.inc(len(result.requeued))
        if ended or result.requeued or result.workers_lost:
            self._changed()
        return result

    async def due_webhooks(self, now_ms: int, limit: int) -> list[WebhookDelivery]:
        deliveries = await self.inner.due_webhooks(now_ms, limit)
        for delivery in deliveries:
            self._delivery_jobs[delivery.id] = (delivery.job_id, delivery.attempts + 1)
            while len(self._delivery_jobs) > WEBHOOK_HISTORY_JOBS:
                self._delivery_jobs.popitem(last=False)
        return deliveries

    async def webhook_attempted(
        self, delivery_id: int, *, ok: bool, now_ms: int, next_attempt_at_ms: int | None
    ) -> None:
        await self.inner.webhook_attempted(
            delivery_id, ok=ok, now_ms=now_ms, next_attempt_at_ms=next_attempt_at_ms
        )
        final = ok or next_attempt_at_ms is None
        if ok:
            self.metrics.webhook_deliveries.inc()
        else:
            self.metrics.webhook_failures.labels("true" if final else "false").inc()
        claimed = self._delivery_jobs.pop(delivery_id, None)
        if claimed is not None:
            job_id, attempt = claimed
            history = self._webhook_attempts.setdefault(job_id, [])
            self._webhook_attempts.move_to_end(job_id)
            history.append(WebhookAttempt(now_ms, attempt, ok, final))
            while len(self._webhook_attempts) > WEBHOOK_HISTORY_JOBS:
                self._webhook_attempts.popitem(last=False)


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
    store: ObservedStore = app_state.store
    metrics: Metrics = app_state.metrics
    metrics.set_state_gauges(await store.job_counts(now_ms()), await store.list_workers())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: Starlette) -> Metrics:
    """Wrap `app.state.store` in an `ObservedStore`, count HTTP requests and serve `/metrics`.
    Must run before the app starts (the lifespan opens the wrapped store)."""
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.store = ObservedStore(app.state.store, metrics)
    app.router.routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    return metrics
