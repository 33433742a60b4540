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

from neuroq.store.base import Notifier
from neuroq.store.sql import load_queries, read_sql
from neuroq.store.sql.ops import Op, Outcome
from neuroq.store.sql.store import OpStore

T = TypeVar("T")

SCHEMA_VERSION = 1
#: how long a writer waits for another process's write lock before giving up
BUSY_TIMEOUT_MS = 10_000

_QUERIES = load_queries("sqlite")


class SQLiteStore(OpStore):
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


def _split_script(script: str) -> list[str]:
    """Statements of a schema file (no `;` appears inside our statements), comments removed.
    `executescript` would commit the open transaction, so each runs through `execute`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
