"""The store methods of `JobStore`, written once for both SQL stores.

Each method only picks its operation from `neuroq.store.sql.ops` and says whether it writes;
`SQLiteStore` and `PostgresStore` differ only in how `_run` executes one operation as one
transaction (a database thread, or an asyncio connection pool) and publishes its topics.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import Job, NewJob, now_ms
from neuroq.store import events
from neuroq.store.base import (
    FinishedMinute,
    Holder,
    LogLimits,
    LogLine,
    Notifier,
    PostedResult,
    QueueStats,
    SweepResult,
    TakeLook,
    WebhookDelivery,
    WorkerInfo,
    job_topic,
    output_topic,
)
from neuroq.store.events import StoreEvents
from neuroq.store.sql import ops
from neuroq.store.sql.ops import Op, Outcome

T = TypeVar("T")

#: how many just-ended jobs `recently_ended` keeps, and the largest output or error (in
#: characters) it keeps one with: enough for the long-polls of a busy server's last moments,
#: small enough to bound the memory (at most about 16 MB); the same bounds for the just-queued
#: jobs of `recently_submitted` (their input instead)
ENDED_CACHE_SIZE = 1024
ENDED_CACHE_MAX_CHARS = 16_384


class OpStore:
    """Base of the SQL stores: the public `JobStore` methods on top of an abstract `_run`."""

    notifier: Notifier
    events: StoreEvents
    recheck_s: float
    #: jobs this process just ended, with their job topic's version right after and the
    #: `ended_mark` they were given: see `recently_ended` (created on first use, so subclasses
    #: need not call a base __init__)
    _ended: OrderedDict[str, tuple[Job, int, int]] | None = None
    _ended_count = 0
    #: jobs this process just queued, with their output topic's version right after: see
    #: `recently_submitted` (created on first use, like `_ended`)
    _submitted: OrderedDict[str, tuple[Job, int]] | None = None

    def _committed(self, outcome: Outcome[T]) -> T:
        """What every store does once a transaction has committed: wake this process's waiters
        on its topics and tell the event listeners what changed."""
        if outcome.topics:
            self.notifier.publish_all(outcome.topics)
        if outcome.events:
            for event in outcome.events:
                if isinstance(event, events.JobsEnded):
                    self._remember_ended(event.jobs)
                elif isinstance(event, events.JobSubmitted):
                    self._remember_submitted(event.job)
            self.events.emit(outcome.events)
        return outcome.value

    def _remember_ended(self, jobs: tuple[Job, ...]) -> None:
        ended = self._ended
        if ended is None:
            ended = self._ended = OrderedDict()
        for job in jobs:
            self._ended_count += 1
            if len(job.output_json or "") + len(job.error_json or "") > ENDED_CACHE_MAX_CHARS:
                continue
            version = self.notifier.version(job_topic(job.id))
            ended[job.id] = (job, version, self._ended_count)
            ended.move_to_end(job.id)
        while len(ended) > ENDED_CACHE_SIZE:
            ended.popitem(last=False)

    def _remember_submitted(self, job: Job) -> None:
        submitted = self._submitted
        if submitted is None:
            submitted = self._submitted = OrderedDict()
        if len(job.input_json) > ENDED_CACHE_MAX_CHARS:
            return
        submitted[job.id] = (job, self.notifier.version(output_topic(job.id)))
        while len(submitted) > ENDED_CACHE_SIZE:
            submitted.popitem(last=False)

    def recently_submitted(self, endpoint_id: str, job_id: str, version: int) -> Job | None:
        entry = self._submitted.get(job_id) if self._submitted is not None else None
        if entry is None:
            return None
        job, seen = entry
        if job.endpoint_id != endpoint_id or seen != version:
            return None
        return job

    def ended_mark(self) -> int:
        return self._ended_count

    def recently_ended(self, endpoint_id: str, job_id: str, after: int) -> Job | None:
        entry = self._ended.get(job_id) if self._ended is not None else None
        if entry is None:
            return None
        job, version, mark = entry
        if (
            mark <= after
            or job.endpoint_id != endpoint_id
            or self.notifier.version(job_topic(job_id)) != version
        ):
            return None
        return job

    async def _run(
        self, op: Op[T], *, write: bool, heavy: bool = False, one_statement: bool = False
    ) -> T:
        """Run `op` as one transaction. `heavy` marks operations that may touch many rows
        (sweeps, purges, dashboard scans): a store must not run those on the event loop.
        `one_statement` marks an operation of exactly one statement, which is a transaction by
        itself: PostgreSQL then spares it the BEGIN and COMMIT round trips."""
        raise NotImplementedError

    # -- clients ---------------------------------------------------------------------------

    async def submit(
        self, new: NewJob, now_ms: int, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        # First the INSERT alone, which is the whole submit unless the key is held already;
        # then (rare: a client's retry) the look-up that returns the holder or replaces it
        # once past retention. The INSERT that found the key held changed nothing.
        job = await self._insert_new(new, now_ms, idempotency_key)
        if job is not None:
            return job, True
        if idempotency_key is None:
            raise RuntimeError("insert_job inserted nothing without an idempotency key")
        return await self._run(ops.submit(new, now_ms, idempotency_key), write=True)

    async def _insert_new(self, new: NewJob, now_ms: int, key: str | None) -> Job | None:
        """The submit's INSERT (`ops.insert_new`): the new job, or None when `key` is held."""
        return await self._run(ops.insert_new(new, now_ms, key), write=True, one_statement=True)

    async def get(self, endpoint_id: str, job_id: str) -> Job | None:
        return await self._run(
            ops.get(endpoint_id, job_id, now_ms()), write=False, one_statement=True
        )

    async def cancel(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        return await self._run(ops.cancel(endpoint_id, job_id, now_ms), write=True)

    async def retry(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        return await self._run(ops.retry(endpoint_id, job_id, now_ms), write=True)

    async def shorten_retention(
        self, endpoint_id: str, job_id: str, ttl_ms: int, now_ms: int
    ) -> bool:
        return await self._run(
            ops.shorten_retention(endpoint_id, job_id, ttl_ms, now_ms), write=True
        )

    async def purge_queue(self, endpoint_id: str, now_ms: int) -> int:
        return await self._run(ops.purge_queue(endpoint_id, now_ms), write=True, heavy=True)

    async def read_stream(
        self, endpoint_id: str, job_id: str, after_seq: int | None = None
    ) -> tuple[Job, list[tuple[int, str]]] | None:
        op = ops.read_stream(endpoint_id, job_id, after_seq, now_ms())
        return await self._run(op, write=after_seq is None)

    async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
        return await self._run(ops.health(endpoint_id, now_ms), write=False, heavy=True)

    # -- workers ---------------------------------------------------------------------------

    async def take(
        self, endpoint_id: str, worker_id: str, limit: int, now_ms: int, lease_ms: int
    ) -> list[Job]:
        if limit <= 0:
            return []
        return await self._run(
            ops.take(endpoint_id, worker_id, limit, now_ms, lease_ms), write=True
        )

    async def release(self, job_ids: list[str], worker_id: str, now_ms: int) -> int:
        if not job_ids:
            return 0
        return await self._run(ops.release(job_ids, worker_id), write=True)

    async def record_progress(
        self,
        job_id: str,
        output_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> bool:
        op = ops.record_progress(job_id, output_json, now_ms, holder, lease_ms)
        return await self._run(op, write=True)

    async def append_stream(
        self,
        job_id: str,
        chunk_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> int | None:
        op = ops.append_stream(job_id, chunk_json, now_ms, holder, lease_ms)
        return await self._run(op, write=True)

    async def append_logs(
        self,
        job_id: str,
        lines: list[tuple[int, str, str]],
        now_ms: int,
        holder: Holder | None = None,
        *,
        truncated: bool = False,
        limits: LogLimits | None = None,
        late_ms: int = 60_000,
        lease_ms: int | None = None,
    ) -> int | None:
        limits = limits or LogLimits()
        op = ops.append_logs(job_id, lines, now_ms, holder, truncated, limits, late_ms, lease_ms)
        return await self._run(op, write=True)

    async def read_logs(
        self, endpoint_id: str, job_id: str, after_seq: int = 0, limit: int = 1_000
    ) -> tuple[Job, list[LogLine], bool] | None:
        op = ops.read_logs(endpoint_id, job_id, after_seq, limit, now_ms())
        return await self._run(op, write=False)

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
        op = ops.finish(job_id, output_json, error_json, now_ms, holder, endpoint_id)
        return await self._run(op, write=True)

    async def finish_many(
        self, results: list[PostedResult], *, now_ms: int, endpoint_id: str | None = None
    ) -> list[Job | None]:
        if not results:
            return []
        return await self._run(ops.finish_many(results, now_ms, endpoint_id), write=True)

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
        op = ops.touch_worker(endpoint_id, worker_id, now_ms, held_job_ids, state, lease_ms, alias)
        await self._run(op, write=True)

    async def worker_take(self, look: TakeLook) -> tuple[bool, list[Job]]:
        return await self._run(ops.worker_take(look), write=True)

    async def jobs_to_stop(self, worker_id: str) -> list[str]:
        return await self._run(ops.jobs_to_stop(worker_id), write=False)

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        return await self._run(ops.worker(worker_id), write=False)

    async def forget_worker(self, endpoint_id: str, worker_id: str) -> bool:
        return await self._run(ops.forget_worker(endpoint_id, worker_id), write=True)

    # -- endpoints -------------------------------------------------------------------------

    async def put_endpoint(self, config: EndpointConfig, now_ms: int) -> EndpointConfig:
        return await self._run(ops.put_endpoint(config, now_ms), write=True)

    async def get_endpoint(self, endpoint_id: str) -> EndpointConfig | None:
        return await self._run(ops.get_endpoint(endpoint_id), write=False)

    async def list_endpoints(self) -> list[EndpointConfig]:
        return await self._run(ops.list_endpoints(), write=False)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return await self._run(ops.delete_endpoint(endpoint_id), write=True)

    async def queue_stats(self) -> dict[str, QueueStats]:
        return await self._run(ops.queue_stats(), write=False)

    # -- background ------------------------------------------------------------------------

    async def sweep(self, now_ms: int, worker_lost_ms: int, max_retries: int) -> SweepResult:
        op = ops.sweep(now_ms, worker_lost_ms, max_retries)
        return await self._run(op, write=True, heavy=True)

    async def due_webhooks(self, now_ms: int, limit: int) -> list[WebhookDelivery]:
        if limit <= 0:
            return []
        return await self._run(ops.due_webhooks(now_ms, limit), write=True)

    async def webhook_attempted(
        self, delivery_id: int, *, ok: bool, now_ms: int, next_attempt_at_ms: int | None
    ) -> None:
        op = ops.webhook_attempted(delivery_id, ok, now_ms, next_attempt_at_ms)
        await self._run(op, write=True)

    # -- read-only views (dashboard, metrics) ----------------------------------------------

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
        op = ops.list_jobs(endpoint_id, status, since_ms, limit, offset, now_ms)
        return await self._run(op, write=False, heavy=True)

    async def job_counts(self, now_ms: int) -> dict[str, dict[str, int]]:
        return await self._run(ops.job_counts(now_ms), write=False, heavy=True)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._run(ops.list_workers(), write=False)

    async def jobs_by_ids(self, job_ids: list[str], now_ms: int) -> list[Job]:
        if not job_ids:
            return []
        return await self._run(ops.jobs_by_ids(job_ids, now_ms), write=False)

    async def job_webhooks(self, job_id: str) -> list[WebhookDelivery]:
        return await self._run(ops.job_webhooks(job_id), write=False)

    async def finished_minutes(self, since_ms: int, now_ms: int) -> list[FinishedMinute]:
        return await self._run(ops.finished_minutes(since_ms, now_ms), write=False, heavy=True)
