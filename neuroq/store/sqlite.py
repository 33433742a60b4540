"""The SQLite job store: one database file in WAL mode, safe for several processes at once.

Each operation of `neuroq.store.sql.ops` runs as one transaction; writes open it with
`BEGIN IMMEDIATE`, which takes SQLite's single write lock before the first read, so the state an
operation checks cannot change before it writes. Processes that share the file therefore never
double-assign a job.

Where operations run: a small operation on an uncontended database takes tens of microseconds,
less than handing it to another thread and back, so it runs right on the event loop, on a
connection that never waits for a lock (busy timeout 0) and never checkpoints. If that
connection finds the database locked (another process, or our own thread, is writing), the
untouched operation goes to the database thread instead, whose connection waits for the lock;
so do `heavy` operations (sweeps, purges, scans) and the WAL checkpoints, which sync the disk.
The event loop therefore never sleeps on a lock or an fsync.

Other processes cannot notify this one: long-polls see their changes through the bounded
re-check of `wait_until` (`recheck_s`).

Failures are translated once, here: an operation SQLite refused before committing (disk or size
cap full, read-only file, locked past the busy timeout, I/O error) raises `StoreUnavailable`,
and a file that cannot be opened as our database raises `StoreOpenError` naming it. Nothing is
cached across a failure, so the store works again as soon as SQLite does (space freed, lock
released), without a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from neuroq.jobs import Job, NewJob
from neuroq.store.base import Notifier
from neuroq.store.errors import StoreError, StoreOpenError, StoreUnavailable
from neuroq.store.events import StoreEvents
from neuroq.store.sql import load_queries, read_sql
from neuroq.store.sql.ops import Op, Outcome, Stmt
from neuroq.store.sql.store import OpStore

T = TypeVar("T")

#: (version, file) in order: version 1 creates the schema, later ones migrate an older file
MIGRATIONS: list[tuple[int, str]] = [
    (1, "sqlite_schema.sql"),
    (2, "sqlite_0002_endpoints.sql"),
    (3, "sqlite_0003_job_logs.sql"),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: pages a size cap keeps free of new jobs, for the writes that finish accepted ones
SUBMIT_HEADROOM_MIN_PAGES = 16
#: how long a writer waits for another process's write lock before giving up
BUSY_TIMEOUT_MS = 10_000
#: commits through the event-loop connection between two WAL checkpoints on the thread (a
#: commit writes a few pages, so this keeps the WAL near SQLite's own 1,000-page default)
CHECKPOINT_EVERY_COMMITS = 250

#: primary result codes meaning "refused before committing, may work later": reply, retry after
_UNAVAILABLE: dict[int, tuple[str, int]] = {
    sqlite3.SQLITE_FULL: ("the job store is out of disk space; retry later", 10),
    sqlite3.SQLITE_READONLY: ("the job store is read-only; retry later", 10),
    sqlite3.SQLITE_IOERR: ("the job store could not read or write its disk; retry later", 10),
    sqlite3.SQLITE_BUSY: ("the job store is locked by another process; retry later", 1),
    sqlite3.SQLITE_LOCKED: ("the job store is locked by another process; retry later", 1),
}
#: result codes meaning the file is not a database we can read: only the operator can help
_NOT_A_DATABASE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)

_QUERIES = load_queries("sqlite")

log = logging.getLogger("neuroq.store")


class SQLiteStore(OpStore):
    """`JobStore` on one SQLite file. `retention_*_ms` apply to jobs whose NewJob gave none."""

    def __init__(
        self,
        path: str | Path,
        *,
        recheck_s: float = 0.5,
        retention_run_ms: int = 1_800_000,
        retention_sync_ms: int = 60_000,
        max_size_bytes: int = 0,
    ) -> None:
        """`max_size_bytes` caps the database file (0: no cap); writes past it fail like a full
        disk, so an operator can keep the queue from filling the volume it shares."""
        self.path = Path(path)
        self.max_size_bytes = max_size_bytes
        #: with a size cap: the pages in use past which submits are refused (see submit)
        self._new_job_pages: int | None = None
        self.notifier = Notifier()
        self.events = StoreEvents()
        self.recheck_s = recheck_s
        self.retention_run_ms = retention_run_ms
        self.retention_sync_ms = retention_sync_ms
        self._executor: ThreadPoolExecutor | None = None
        #: the database thread's connection (waits for locks)
        self._conn: sqlite3.Connection | None = None
        #: the event loop's connection (never waits: busy timeout 0, no autocheckpoint)
        self._inline: sqlite3.Connection | None = None
        self._inline_commits = 0
        self._checkpointing = False

    # -- plumbing --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("SQLiteStore is already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="neuroq-sqlite")
        try:
            try:
                await self._call(self._connect)
                self._inline = self._open_inline()
            except sqlite3.Error as exc:
                raise _open_error(exc, self.path) from exc
        except BaseException:
            if self._conn is not None:
                await self._call(self._disconnect)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._inline is not None:
            self._inline.close()
            self._inline = None
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
            self._apply_size_cap(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreOpenError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            # With WAL, NORMAL loses at most the last commits on power loss, never consistency.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreOpenError(
                        f"{self.path}: schema version {version}, but this neuroq knows"
                        f" version {SCHEMA_VERSION}; upgrade neuroq to open it"
                    )
                for number, filename in MIGRATIONS:
                    if number > version:
                        for statement in _split_script(read_sql(filename)):
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_inline(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            self._apply_size_cap(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _apply_size_cap(self, conn: sqlite3.Connection) -> None:
        """`max_page_count` is per connection, so every connection sets it; SQLite then fails
        a write that would grow the file past it with SQLITE_FULL, exactly as a full disk does.
        A cap below the current size holds the file at its current size."""
        if self.max_size_bytes > 0:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, self.max_size_bytes // page_size)
            conn.execute(f"PRAGMA max_page_count = {pages}")
            self._new_job_pages = pages - max(SUBMIT_HEADROOM_MIN_PAGES, pages // 20)

    async def submit(
        self, new: NewJob, now_ms: int, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Under a size cap, new jobs stop a little before the cap (5 %, at least
        SUBMIT_HEADROOM_MIN_PAGES): what is already accepted can still take, finish, be
        cancelled, purged and swept, which all need a few pages, so a full queue drains by
        itself instead of jamming with every write refused."""
        if self._new_job_pages is not None and self._inline is not None:
            used = self._inline.execute("PRAGMA page_count").fetchone()[0]
            free = self._inline.execute("PRAGMA freelist_count").fetchone()[0]
            if used - free >= self._new_job_pages:
                raise StoreUnavailable("the job store is out of disk space; retry later", 10)
        return await super().submit(new, now_ms, idempotency_key)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(
        self, op: Op[T], *, write: bool, heavy: bool = False, one_statement: bool = False
    ) -> T:
        """Run one transaction script: on the event loop when the database is free and the
        operation is small, else on the database thread. Its topics are published on the
        event-loop thread, where the notifier's waiters live, even if the caller was cancelled
        meanwhile: the transaction commits regardless, so its wake-ups must go out too."""
        if self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        try:
            if not heavy and self._inline is not None:
                if one_statement:
                    outcome, op = self._one_statement_inline(self._inline, op, write)
                else:
                    outcome = self._execute_inline(self._inline, op, write)
                if outcome is not None:
                    return self._committed(outcome)
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, self._execute, op, write
            )
            future.add_done_callback(self._publish)
            outcome = await asyncio.shield(future)
        except sqlite3.Error as exc:
            # SQLite rolls a failed transaction back whole (and so does _finish_transaction),
            # so these codes always mean nothing was written.
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        return outcome.value

    def _execute_inline(
        self, conn: sqlite3.Connection, op: Op[T], write: bool
    ) -> Outcome[T] | None:
        """The operation's outcome, or None, with `op` untouched, when the database is locked.

        A write takes the write lock with BEGIN IMMEDIATE, a read its snapshot with its first
        statement; both happen before `op` runs, and once held neither can fail with "locked"
        later in the transaction, so a busy database is only ever met before `op` starts."""
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            if not write:
                conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_busy(exc):
                return None
            raise
        outcome = self._finish_transaction(conn, op)
        if write:
            self._count_inline_commit()
        return outcome

    def _one_statement_inline(
        self, conn: sqlite3.Connection, op: Op[T], write: bool
    ) -> tuple[Outcome[T] | None, Op[T]]:
        """An operation of one statement runs in autocommit, a transaction of its own: one call
        instead of BEGIN, the statement and COMMIT. A busy database refuses it before anything
        is written (this connection never waits for a lock); then the outcome is None and the
        returned operation replays the statement, for the database thread to run."""
        stmt = next(op)
        if stmt.before:
            raise RuntimeError(f"{stmt.name}: statements before it in a one_statement operation")
        try:
            rows = conn.execute(_QUERIES[stmt.name], self._params(stmt)).fetchall()
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return None, _replay(stmt, op)
            raise
        try:
            extra = op.send(rows)
        except StopIteration as stop:
            if write:
                self._count_inline_commit()
            return stop.value, op
        raise RuntimeError(f"{extra.name}: a second statement in a one_statement operation")

    def _count_inline_commit(self) -> None:
        self._inline_commits += 1
        if self._inline_commits >= CHECKPOINT_EVERY_COMMITS and not self._checkpointing:
            self._schedule_checkpoint()

    def _schedule_checkpoint(self) -> None:
        """Copy the WAL back into the database on the thread, which may fsync; PASSIVE never
        waits for (or blocks) writers, so the event loop's connection keeps writing."""
        assert self._executor is not None
        self._inline_commits = 0
        self._checkpointing = True
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = False
        if not future.cancelled() and future.exception() is not None:
            log.warning("SQLite checkpoint failed: %s", future.exception())

    def _publish(self, future: asyncio.Future[Outcome[Any]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._committed(future.result())

    def _execute(self, op: Op[T], write: bool) -> Outcome[T]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("SQLiteStore is not open: call open() first")
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return self._finish_transaction(conn, op)

    def _finish_transaction(self, conn: sqlite3.Connection, op: Op[T]) -> Outcome[T]:
        """Run `op` inside the transaction just begun on `conn`, then commit (or roll back)."""
        try:
            outcome = self._drive(conn, op)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome

    def _drive(self, conn: sqlite3.Connection, op: Op[T]) -> Outcome[T]:
        rows: list[Any] | None = None
        while True:
            try:
                stmt = next(op) if rows is None else op.send(rows)
            except StopIteration as stop:
                outcome: Outcome[T] = stop.value
                return outcome
            for before in stmt.before:
                conn.execute(_QUERIES[before.name], self._params(before))
            rows = conn.execute(_QUERIES[stmt.name], self._params(stmt)).fetchall()

    def _params(self, stmt: Stmt) -> dict[str, Any]:
        """The statement's parameters and the store's own; lists travel as JSON text."""
        base = {"retention_run": self.retention_run_ms, "retention_sync": self.retention_sync_ms}
        params = {**base, **stmt.params}
        for key, value in params.items():
            if isinstance(value, list):
                params[key] = json.dumps(value)
        return params


def _replay(first: Stmt, op: Op[T]) -> Op[T]:
    """`op` as it was before it yielded `first`: yields `first` again, then goes on with `op`."""
    stmt = first
    while True:
        rows = yield stmt
        try:
            stmt = op.send(rows)
        except StopIteration as stop:
            outcome: Outcome[T] = stop.value
            return outcome


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable | None:
    """The `StoreUnavailable` for a refusal that may pass by itself, else None."""
    entry = _UNAVAILABLE.get(_primary_code(exc) or -1)
    if entry is None:
        return None
    message, retry_after_s = entry
    return StoreUnavailable(message, retry_after_s)


def _open_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """One line for the operator: which file, what is wrong, what to do."""
    code = _primary_code(exc)
    if code in _NOT_A_DATABASE:
        return StoreOpenError(
            f"{path} is not a usable SQLite database ({exc}); move it aside and restore a"
            " backup, or move it aside to start with an empty queue"
        )
    if code in _UNAVAILABLE:
        return StoreUnavailable(f"{path}: {exc}; free space or fix its permissions, then retry")
    return StoreOpenError(
        f"{path} cannot be opened ({exc}); check that it is a file this user can read and"
        " write, in a directory it can write"
    )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _split_script(script: str) -> list[str]:
    """Statements of a schema file (no `;` appears inside our statements), comments removed.
    `executescript` would commit the open transaction, so each runs through `execute`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
