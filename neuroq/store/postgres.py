"""The PostgreSQL job store: psycopg 3 on asyncio, for several API servers sharing one database.

It runs the same transaction scripts as the SQLite store (`neuroq.store.sql.ops`). Concurrency
comes from row locks instead of one write lock: a take selects its jobs `FOR UPDATE SKIP LOCKED`,
so concurrent takers skip each other's rows instead of waiting or double-assigning, and every
other transition is an UPDATE whose WHERE checks the starting state, re-evaluated by PostgreSQL
after any lock wait.

Wake-ups across processes: each transaction that publishes topics also calls `pg_notify` on this
store's channel with the topic names, delivered only if it commits. A dedicated connection
LISTENs on the channel and feeds received topics into `self.notifier`, so a long-poll in one
server wakes within milliseconds of a change committed by another.

Failures: an operation that fails before its COMMIT is sent (no connection to be had, the
connection lost mid-transaction, disk full, a read-only standby) changed nothing and raises
`StoreUnavailable`; one that fails during COMMIT may have committed, so it stays an internal
error. Broken connections leave the pool when returned, so the store recovers by itself.
`close()` leaves the store ready to `open()` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from neuroq.jobs import now_ms
from neuroq.store.base import Notifier
from neuroq.store.errors import StoreUnavailable
from neuroq.store.events import StoreEvents
from neuroq.store.sql import load_queries, read_sql
from neuroq.store.sql.ops import Op, Outcome
from neuroq.store.sql.store import OpStore

T = TypeVar("T")
log = logging.getLogger(__name__)

#: (version, file) in order; open() applies those newer than the schema's recorded version
MIGRATIONS: list[tuple[int, str]] = [
    (1, "postgres_0001_initial.sql"),
    (2, "postgres_0002_endpoints.sql"),
    (3, "postgres_0003_job_logs.sql"),
]
#: pg_advisory_xact_lock key serialising migrations of every neuroq schema ("neuroq" in ASCII)
MIGRATION_LOCK_KEY = 0x6E6575726F71
#: NOTIFY payloads must stay under 8000 bytes
NOTIFY_PAYLOAD_BYTES = 7000
LISTEN_RETRY_S = 1.0

_QUERIES = load_queries("postgres")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def split_schema(url: str) -> tuple[str, str | None]:
    """Take our own `schema` query parameter out of a store URL: `(libpq URL, schema or None)`.

    libpq refuses query parameters it does not know, so `schema` must be removed before the URL
    reaches psycopg. One database can then hold several independent queues (one per schema),
    which is how tests and staging servers share a database without seeing each other's jobs:

    >>> split_schema("postgresql://u@h/db?schema=staging&sslmode=require")
    ('postgresql://u@h/db?sslmode=require', 'staging')
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    if len(schemas) > 1:
        raise ValueError(f"schema: given {len(schemas)} times in the store URL; give it once")
    if not schemas[0]:
        raise ValueError("schema: empty in the store URL; leave it out for the public schema")
    # The other parameters are kept as written: re-encoding would turn %20 into + (not a space
    # to libpq).
    kept = "&".join(p for p in parts.query.split("&") if p.partition("=")[0] != "schema")
    return urlunsplit(parts._replace(query=kept)), schemas[0]


class PostgresStore(OpStore):
    """`JobStore` on PostgreSQL; every table lives in `schema` (created when missing)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        recheck_s: float = 0.5,
        retention_run_ms: int = 1_800_000,
        retention_sync_ms: int = 60_000,
        pool_max_size: int = 10,
    ) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(
                f"schema={schema!r}: expected a plain identifier (letters, digits, _; 41 max)"
            )
        self.url = url
        self.schema = schema
        self.channel = f"neuroq_{schema}"
        self.notifier = Notifier()
        self.events = StoreEvents()
        self.recheck_s = recheck_s
        self.retention_run_ms = retention_run_ms
        self.retention_sync_ms = retention_sync_ms
        # Options the URL already carries (statement_timeout, ...) are kept; only search_path is
        # ours to set.
        try:
            options = conninfo_to_dict(url).get("options") or ""
        except psycopg.ProgrammingError as exc:
            reason = str(exc).strip()
            raise ValueError(f"url: not a PostgreSQL connection URL ({reason})") from None
        if "search_path" in str(options):
            raise ValueError(
                "options: the store URL sets search_path; name the schema with ?schema=NAME"
            )
        if pool_max_size < 1:
            raise ValueError(f"pool_max_size: must be at least 1, got {pool_max_size}")
        self._pool_max_size = pool_max_size
        self._options = f"{options} -c search_path={schema}".strip()
        self._pool = self._new_pool()
        #: backend pids of our pool's connections: their NOTIFYs were already published here
        self._own_pids: set[int] = set()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    # -- plumbing --------------------------------------------------------------------------

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        # A psycopg pool cannot be reopened once closed, so each open() gets a fresh one.
        return AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_max_size,
            kwargs={"options": self._options, "autocommit": True},
            configure=self._remember_backend,
            open=False,
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True)
            await self._migrate()
        except BaseException as exc:
            await self._pool.close()
            self._pool = self._new_pool()
            if isinstance(exc, psycopg.OperationalError):
                raise StoreUnavailable(
                    f"cannot use PostgreSQL for the job store ({exc}); check NEUROQ_STORE and"
                    " that the database is up"
                ) from exc
            raise
        self._listening = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(), name=f"neuroq-listen-{self.schema}")
        # Wait for LISTEN, so a change committed right after open() is never missed. Should the
        # connection fail, long-polls still re-check every recheck_s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()
        self._pool = self._new_pool()

    async def _migrate(self) -> None:
        """Apply missing migrations under an advisory lock, so servers starting together
        migrate once and the others wait, then see the new version."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS neuroq_schema_version"
                " (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)"
            )
            cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM neuroq_schema_version")
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            latest = MIGRATIONS[-1][0]
            if current > latest:
                raise RuntimeError(
                    f"schema {self.schema!r} is at version {current}, newer than this neuroq"
                    f" ({latest})"
                )
            for version, filename in MIGRATIONS:
                if version > current:
                    await conn.execute(read_sql(filename).encode())
                    await conn.execute(
                        "INSERT INTO neuroq_schema_version VALUES (%s, %s)", (version, now_ms())
                    )

    async def _remember_backend(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._own_pids.add(conn.info.backend_pid)

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    self._listening.set()
                    async for note in conn.notifies():
                        if note.pid not in self._own_pids:
                            self.notifier.publish_all(note.payload.split())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("PostgreSQL LISTEN connection failed, retrying: %s", exc)
                await asyncio.sleep(LISTEN_RETRY_S)

    async def _run(
        self, op: Op[T], *, write: bool, heavy: bool = False, one_statement: bool = False
    ) -> T:
        """Run one transaction script in one transaction; NOTIFY its topics inside it (sent on
        commit only) and publish them here at once. Never blocks the loop, heavy or not. The
        NOTIFY and the COMMIT travel together (`_notify_and_commit`): BEGIN, the statements,
        then one round trip to end.

        The pool's connections are in autocommit mode, so a `one_statement` operation runs as
        its own transaction: one round trip instead of three (BEGIN, the statement, COMMIT),
        and a write's NOTIFY follows in a second. A lost connection leaves such a write's fate
        unknown, like a lost COMMIT: only an error the server reported (it has an SQLSTATE)
        says it did not happen."""
        committing = False
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                if one_statement:
                    committing = write
                    outcome, notified = await self._one_statement(cur, op)
                    if outcome.topics - notified:
                        await self._notify_after(cur, outcome.topics - notified)
                else:
                    # A failure or a cancellation before the COMMIT: leaving the pool's
                    # connection block rolls the transaction back.
                    await cur.execute(b"BEGIN", prepare=False)
                    outcome = await self._script(cur, op)
                    committing = True
                    await cur.execute(self._notify_and_commit(outcome.topics), prepare=False)
        except psycopg.Error as exc:
            unavailable = None if committing and exc.sqlstate is None else _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        return self._committed(outcome)

    def _notify_and_commit(self, topics: set[str]) -> sql.Composed:
        """The end of a transaction as one simple query, one round trip: `pg_notify` of its
        topics (delivered only if the COMMIT that follows succeeds), then COMMIT."""
        notify = sql.SQL("SELECT pg_notify({}, {})")
        statements = [
            notify.format(sql.Literal(self.channel), sql.Literal(payload))
            for payload in _payloads(topics)
        ]
        return sql.SQL("; ").join([*statements, sql.SQL("COMMIT")])

    async def _notify(self, cur: psycopg.AsyncCursor[Any], topics: set[str]) -> None:
        for payload in _payloads(topics):
            await cur.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def _notify_after(self, cur: psycopg.AsyncCursor[Any], topics: set[str]) -> None:
        """NOTIFY for a write that has committed already: should it fail, the write still
        stands, and other servers see it at their next re-check (`recheck_s`)."""
        try:
            await self._notify(cur, topics)
        except psycopg.Error as exc:
            log.warning("NOTIFY after a committed write failed (others re-check): %s", exc)

    async def _script(self, cur: psycopg.AsyncCursor[Any], op: Op[T]) -> Outcome[T]:
        """Run the statements `op` yields, sending each one the rows of the one before."""
        rows: list[tuple[Any, ...]] | None = None
        while True:
            try:
                stmt = next(op) if rows is None else op.send(rows)
            except StopIteration as stop:
                return stop.value
            rows = await self._execute(cur, _QUERIES[stmt.name], stmt.params)

    async def _one_statement(
        self, cur: psycopg.AsyncCursor[Any], op: Op[T]
    ) -> tuple[Outcome[T], frozenset[str]]:
        """Run an operation of one statement, in autocommit. When the statement names the
        topics it publishes (`Stmt.notify`), their `pg_notify` runs inside it, for each row it
        returns: the notification is sent with its commit, and a statement that changes nothing
        notifies nothing. Returns the outcome and the topics already notified."""
        stmt = next(op)
        query = _QUERIES[stmt.name]
        params = stmt.params
        payloads = _payloads(set(stmt.notify))
        notified = frozenset[str]()
        if len(payloads) == 1:
            notify = "pg_notify(%(_channel)s, %(_topics)s)::text = ''"
            query = f"WITH s AS ({query}) SELECT * FROM s WHERE {notify}"
            params = {**params, "_channel": self.channel, "_topics": payloads[0]}
            notified = stmt.notify
        rows = await self._execute(cur, query, params)
        try:
            stmt = op.send(rows)
        except StopIteration as stop:
            return stop.value, notified if rows else frozenset()
        raise RuntimeError(f"{stmt.name}: a second statement in a one_statement operation")

    async def _execute(
        self, cur: psycopg.AsyncCursor[Any], query: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        base = {"retention_run": self.retention_run_ms, "retention_sync": self.retention_sync_ms}
        await cur.execute(query, {**base, **params})
        # Not `cur.description`: it builds a Column object per column (22 for a job) on
        # every statement, a measurable share of a finish's CPU.
        result = cur.pgresult
        returned = result is not None and result.status == pq.ExecStatus.TUPLES_OK
        return await cur.fetchall() if returned else []


def _unavailable(exc: psycopg.Error) -> StoreUnavailable | None:
    """The `StoreUnavailable` for an error raised before COMMIT that may pass by itself."""
    if isinstance(exc, psycopg.errors.DiskFull):
        return StoreUnavailable("the job store is out of disk space; retry later", 10)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return StoreUnavailable("the job store is read-only; retry later", 10)
    if isinstance(exc, psycopg.OperationalError):
        # no connection to be had, the connection lost, out of memory, an admin shutdown
        return StoreUnavailable("the job store's database is unavailable; retry later", 5)
    return None


def _payloads(topics: set[str]) -> list[str]:
    """Space-separated topic lists, each small enough for one NOTIFY."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for topic in sorted(topics):
        if current and size + len(topic) + 1 > NOTIFY_PAYLOAD_BYTES:
            payloads.append(" ".join(current))
            current, size = [], 0
        current.append(topic)
        size += len(topic) + 1
    if current:
        payloads.append(" ".join(current))
    return payloads
