"""The SQLite job store: one database file in WAL mode, safe for several processes at once.

All database work runs on one dedicated thread that owns the connection, so a slow disk never
blocks the event loop and the connection is never shared between threads. Each operation of
`neuroq.store.sql.ops` runs as one transaction; writes open it with `BEGIN IMMEDIATE`, which
takes SQLite's single write lock before the first read, so the state an operation checks cannot
change before it writes. Processes that share the file therefore never double-assign a job.

Other processes cannot notify this one: long-polls see their changes through the bounded
re-check of `wait_until` (`recheck_s`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from neuroq.jobs import Job, NewJob, now_ms
from neuroq.store.base import Notifier, SweepResult, WebhookDelivery, WorkerInfo
from neuroq.store.sql import load_queries, ops, read_sql
from neuroq.store.sql.ops import Op, Outcome

T = TypeVar("T")

SCHEMA_VERSION = 1
#: how long a writer waits for another process's write lock before giving up
BUSY_TIMEOUT_MS = 10_000

_QUERIES = load_queries("sqlite")


class SQLiteStore:
    """`JobStore` on one SQLite file. `retention_*_ms` apply to jobs whose NewJob gave none."""

    def __init__(
        self,
        path: str | Path,
        *,
        recheck_s: float = 0.5,
        retention_run_ms: int = 1_800_000,
        retention_sync_ms: int = 60_000,
    ) -> None:
        self.path = Path(path)
        self.notifier = Notifier()
        self.recheck_s = recheck_s
        self.retention_run_ms = retention_run_ms
        self.retention_sync_ms = retention_sync_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # -- plumbing --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("SQLiteStore is already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="neuroq-sqlite")
        try:
            await self._call(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._call(self._disconnect)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _connect(self) -> None:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _split_script(read_sql("sqlite_schema.sql")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.path}: schema version {version}, but this neuroq knows"
                        f" version {SCHEMA_VERSION}"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self, op: Op[T], *, write: bool) -> T:
        """Run one transaction script on the database thread. Its topics are published on the
        event-loop thread, where the notifier's waiters live, even if the caller was cancelled
        meanwhile: the transaction commits regardless, so its wake-ups must go out too."""
        if self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._execute, op, write
        )
        future.add_done_callback(self._publish)
        outcome = await asyncio.shield(future)
        return outcome.value

    def _publish(self, future: asyncio.Future[Outcome[Any]]) -> None:
        if not future.cancelled() and future.exception() is None:
            topics = future.result().topics
            if topics:
                self.notifier.publish_all(topics)

    def _execute(self, op: Op[T], write: bool) -> Outcome[T]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            outcome = self._drive(conn, op)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome

    def _drive(self, conn: sqlite3.Connection, op: Op[T]) -> Outcome[T]:
        base = {"retention_run": self.retention_run_ms, "retention_sync": self.retention_sync_ms}
        rows: list[Any] | None = None
        while True:
            try:
                stmt = next(op) if rows is None else op.send(rows)
            except StopIteration as stop:
                outcome: Outcome[T] = stop.value
                return outcome
            params = {**base, **stmt.params}
            for key, value in params.items():
                if isinstance(value, list):
                    params[key] = json.dumps(value)
            rows = conn.execute(_QUERIES[stmt.name], params).fetchall()

    # -- clients ---------------------------------------------------------------------------

    async def submit(
        self, new: NewJob, now_ms: int, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        return await self._run(ops.submit(new, now_ms, idempotency_key), write=True)

    async def get(self, endpoint_id: str, job_id: str) -> Job | None:
        return await self._run(ops.get(endpoint_id, job_id, now_ms()), write=False)

    async def cancel(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        return await self._run(ops.cancel(endpoint_id, job_id, now_ms), write=True)

    async def retry(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        return await self._run(ops.retry(endpoint_id, job_id, now_ms), write=True)

    async def purge_queue(self, endpoint_id: str, now_ms: int) -> int:
        return await self._run(ops.purge_queue(endpoint_id, now_ms), write=True)

    async def read_stream(
        self, endpoint_id: str, job_id: str, after_seq: int | None = None
    ) -> tuple[Job, list[tuple[int, str]]] | None:
        op = ops.read_stream(endpoint_id, job_id, after_seq, now_ms())
        return await self._run(op, write=after_seq is None)

    async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
        return await self._run(ops.health(endpoint_id, now_ms), write=False)

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

    async def record_progress(self, job_id: str, output_json: str, now_ms: int) -> bool:
        return await self._run(ops.record_progress(job_id, output_json), write=True)

    async def append_stream(self, job_id: str, chunk_json: str, now_ms: int) -> int | None:
        return await self._run(ops.append_stream(job_id, chunk_json), write=True)

    async def finish(
        self,
        job_id: str,
        *,
        output_json: str | None,
        error_json: str | None,
        now_ms: int,
        worker_id: str | None = None,
    ) -> Job | None:
        op = ops.finish(job_id, output_json, error_json, now_ms, worker_id)
        return await self._run(op, write=True)

    async def touch_worker(
        self,
        endpoint_id: str,
        worker_id: str,
        now_ms: int,
        *,
        held_job_ids: list[str] | None = None,
        state: str | None = None,
        lease_ms: int | None = None,
    ) -> None:
        op = ops.touch_worker(endpoint_id, worker_id, now_ms, held_job_ids, state, lease_ms)
        await self._run(op, write=True)

    async def jobs_to_stop(self, worker_id: str) -> list[str]:
        return await self._run(ops.jobs_to_stop(worker_id), write=False)

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        return await self._run(ops.worker(worker_id), write=False)

    # -- background ------------------------------------------------------------------------

    async def sweep(self, now_ms: int, worker_lost_ms: int, max_retries: int) -> SweepResult:
        return await self._run(ops.sweep(now_ms, worker_lost_ms, max_retries), write=True)

    async def due_webhooks(self, now_ms: int, limit: int) -> list[WebhookDelivery]:
        if limit <= 0:
            return []
        return await self._run(ops.due_webhooks(now_ms, limit), write=True)

    async def webhook_attempted(
        self, delivery_id: int, *, ok: bool, now_ms: int, next_attempt_at_ms: int | None
    ) -> None:
        await self._run(ops.webhook_attempted(delivery_id, ok, next_attempt_at_ms), write=True)

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
        return await self._run(op, write=False)

    async def job_counts(self, now_ms: int) -> dict[str, dict[str, int]]:
        return await self._run(ops.job_counts(now_ms), write=False)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._run(ops.list_workers(), write=False)

    async def jobs_by_ids(self, job_ids: list[str], now_ms: int) -> list[Job]:
        if not job_ids:
            return []
        return await self._run(ops.jobs_by_ids(job_ids, now_ms), write=False)

    async def job_webhooks(self, job_id: str) -> list[WebhookDelivery]:
        return await self._run(ops.job_webhooks(job_id), write=False)


def _split_script(script: str) -> list[str]:
    """Statements of a schema file (no `;` appears inside our statements), comments removed.
    `executescript` would commit the open transaction, so each runs through `execute`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
