"""The PostgreSQL job store: psycopg 3 on asyncio, for several API servers sharing one database.

It runs the same transaction scripts as the SQLite store (`neuroq.store.sql.ops`). Concurrency
comes from row locks instead of one write lock: a take selects its jobs `FOR UPDATE SKIP LOCKED`,
so concurrent takers skip each other's rows instead of waiting or double-assigning, and every
other transition is an UPDATE whose WHERE checks the starting state, re-evaluated by PostgreSQL
after any lock wait.

Wake-ups across processes: once a transaction that publishes topics has committed, its topics
join the next NOTIFY on this store's channel, sent by one connection kept for it
(`_send_notifies`): while one NOTIFY is on its way, the topics of every commit meanwhile gather
for the next, so under load one NOTIFY carries the topics of many jobs. A NOTIFY inside each
transaction would cost more than the rest of the job: PostgreSQL serialises the commits of
notifying transactions on one lock and signals every listener for each. A dedicated connection
LISTENs on the channel and feeds received topics into `self.notifier`, skipping the NOTIFYs
this store sent (each payload starts with its sender, `self.sender`: a backend pid would not
do, as PostgreSQL reuses them), so a long-poll in one server wakes within milliseconds of a
change committed by another; a NOTIFY lost with its
process (or its connection) leaves the others to see the change at their next re-check
(`recheck_s`). A server alone on its schema sends no NOTIFY at all: each listening connection
holds a shared advisory lock on the schema, so a store can count the others (`_watch_peers`),
and a store that starts says hello and waits for the others to answer, so none of them is
still silent once its open() returns.

Failures: an operation that fails before its COMMIT is sent (no connection to be had, the
connection lost mid-transaction, disk full, a read-only standby) changed nothing and raises
`StoreUnavailable`; one that fails during COMMIT may have committed, so it stays an internal
error. Broken connections leave the pool when returned, so the store recovers by itself.
`close()` leaves the store ready to `open()` again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
import zlib
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from neuroq.jobs import Job, NewJob, now_ms
from neuroq.store.base import Notifier
from neuroq.store.errors import StoreUnavailable
from neuroq.store.events import StoreEvents
from neuroq.store.sql import load_queries, ops, read_sql
from neuroq.store.sql.ops import Op, Outcome, Stmt
from neuroq.store.sql.store import OpStore

T = TypeVar("T")
log = logging.getLogger(__name__)

#: (version, file) in order; open() applies those newer than the schema's recorded version
MIGRATIONS: list[tuple[int, str]] = [
    (1, "postgres_0001_initial.sql"),
    (2, "postgres_0002_endpoints.sql"),
    (3, "postgres_0003_job_logs.sql"),
    (4, "postgres_0004_no_endpoint_status_index.sql"),
]
#: pg_advisory_xact_lock key serialising migrations of every neuroq schema ("neuroq" in ASCII)
MIGRATION_LOCK_KEY = 0x6E6575726F71
#: NOTIFY payloads must stay under 8000 bytes
NOTIFY_PAYLOAD_BYTES = 7000
LISTEN_RETRY_S = 1.0
#: first key of the shared advisory lock every store's listening connection holds on its
#: schema (the second is the schema's): how a store counts the other servers on the schema
PRESENCE_LOCK_KEY = 0x6E657571
#: how often a store counts the others, to fall silent once it is alone
PRESENCE_CHECK_S = 2.0
#: how long open() waits for the servers already on the schema to answer its hello
HELLO_WAIT_S = 1.0
#: payload words of the presence handshake (topics never start with "+"); an answer names
#: the hello's sender: "+ack:from:..."
HELLO, ACK = "+hello", "+ack"
#: most submits one INSERT stores, and most characters of input they may carry together; a
#: larger input goes alone
INSERT_BATCH_MAX = 100
INSERT_BATCH_MAX_CHARS = 1_000_000

#: a submit waiting for the next INSERT: job, now_ms, idempotency key, its caller's future
_Waiting = tuple[NewJob, int, str | None, "asyncio.Future[Job | None]"]

_QUERIES = load_queries("postgres")
#: the other listening connections holding the presence lock of a schema
_OTHERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = %s AND objid = %s AND objsubid = 2 AND pid <> %s"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
#: one NOTIFY per payload of a round, in one statement
_NOTIFY = "SELECT pg_notify(%s, p) FROM unnest(CAST(%s AS TEXT[])) AS p"
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
        presence_check_s: float = PRESENCE_CHECK_S,
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
        #: the first word of this store's NOTIFY payloads: its own are published here already
        self.sender = f"from:{secrets.token_hex(8)}"
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        #: whether another server may listen on the schema: NOTIFYs are sent only then
        self._peers = True
        #: payloads received from other servers so far (see `_watch_peers`)
        self._peer_news = 0
        #: the listening connection's backend, and the answers to its hello still awaited
        self._listen_pid: int | None = None
        self._awaited_acks = 0
        self._acked = asyncio.Event()
        self.presence_check_s = presence_check_s
        self._presence_key = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        self._watcher: asyncio.Task[None] | None = None
        #: topics committed here and not yet sent to other servers, and the task sending them
        self._unsent: set[str] = set()
        self._sender: asyncio.Task[None] | None = None
        self._notify_conn: psycopg.AsyncConnection[Any] | None = None
        #: submits waiting for the next INSERT, and the task storing them
        self._to_insert: collections.deque[_Waiting] = collections.deque()
        self._inserter: asyncio.Task[None] | None = None

    # -- plumbing --------------------------------------------------------------------------

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        # A psycopg pool cannot be reopened once closed, so each open() gets a fresh one.
        return AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_max_size,
            kwargs={"options": self._options, "autocommit": True},
            configure=self._configure,
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
        self._acked = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(), name=f"neuroq-listen-{self.schema}")
        # Wait for LISTEN, so a change committed right after open() is never missed, and for
        # the other servers to answer the hello, so none of them still thinks itself alone.
        # Should either fail, long-polls still re-check every recheck_s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acked.wait(), HELLO_WAIT_S)
        self._watcher = asyncio.create_task(self._watch_peers(), name=f"neuroq-peers-{self.schema}")

    async def close(self) -> None:
        # Submits already on their way are stored (their clients wait for the answer), and
        # what was committed before close() still reaches the other servers.
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await _let_finish(self._inserter, 5.0)
        self._inserter = None
        while self._to_insert:
            self._to_insert.popleft()[3].cancel()
        await _let_finish(self._sender, 5.0)
        self._sender = None
        self._unsent.clear()
        if self._notify_conn is not None:
            await self._notify_conn.close()
            self._notify_conn = None
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

    # -- submits ---------------------------------------------------------------------------

    async def _insert_new(self, new: NewJob, now_ms: int, key: str | None) -> Job | None:
        """Submits arriving while an INSERT is on its way gather for the next one, which stores
        them all in one statement (`ops.insert_many`): under load one round trip and one commit
        (one WAL flush) carry many jobs, while a lone submit goes at once."""
        if len(new.input_json) > INSERT_BATCH_MAX_CHARS:
            return await super()._insert_new(new, now_ms, key)
        waiter: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._to_insert.append((new, now_ms, key, waiter))
        if self._inserter is None or self._inserter.done():
            self._inserter = asyncio.create_task(
                self._insert_waiting(), name=f"neuroq-insert-{self.schema}"
            )
        # Shielded: a caller that goes away does not take the others' INSERT with it (its own
        # job may still be stored, as with a COMMIT on its way).
        return await asyncio.shield(waiter)

    async def _insert_waiting(self) -> None:
        """Store the waiting submits, as many rounds as needed: each round takes every submit
        queued while the one before was on its way (up to the batch limits)."""
        while self._to_insert:
            batch: list[_Waiting] = []
            chars = 0
            while self._to_insert and len(batch) < INSERT_BATCH_MAX:
                size = len(self._to_insert[0][0].input_json)
                if batch and chars + size > INSERT_BATCH_MAX_CHARS:
                    break
                batch.append(self._to_insert.popleft())
                chars += size
            await self._insert_batch(batch)

    async def _insert_batch(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                new, now, key, _ = batch[0]
                jobs = [await super()._insert_new(new, now, key)]
            else:
                many = ops.insert_many([(new, now, key) for new, now, key, _ in batch])
                jobs = await self._run(many, write=True, one_statement=True)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            if len(batch) == 1:
                _fail_waiters(batch, exc)
                return
            # One job's data failed the statement, which stored nothing: store each alone,
            # so the error reaches that job's submitter only.
            for item in batch:
                await self._insert_batch([item])
            return
        except Exception as exc:
            _fail_waiters(batch, exc)
            return
        except BaseException:
            for *_, waiter in batch:
                waiter.cancel()
            raise
        for (*_, waiter), job in zip(batch, jobs, strict=True):
            if not waiter.done():
                waiter.set_result(job)

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Run on each new connection of the pool: nothing to set today (the URL and
        `_new_pool` say it all); a subclass may watch the connection (tests read plans)."""

    async def _listen(self) -> None:
        """LISTEN on the schema's channel and publish here what the other servers committed.

        The connection holds the schema's shared presence lock, so the others can count this
        server, and says hello on connecting: a server that had found itself alone starts
        sending NOTIFYs again before it answers (`ACK`), and open() waits for those answers."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    key = (PRESENCE_LOCK_KEY, self._presence_key)
                    await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", key)
                    await conn.execute(f'LISTEN "{self.channel}"')
                    self._listen_pid = conn.info.backend_pid
                    self._awaited_acks = others = await self._others(conn, self._listen_pid)
                    self._peers = others > 0
                    if not others:
                        self._acked.set()
                    await conn.execute(
                        "SELECT pg_notify(%s, %s)", (self.channel, f"{self.sender} {HELLO}")
                    )
                    self._listening.set()
                    own = f"{self.sender} "
                    async for note in conn.notifies():
                        if note.payload.startswith(own):
                            continue  # published here when it committed
                        self._heard(note.payload.split())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listen_pid = None
                self._peers = True
                log.warning("PostgreSQL LISTEN connection failed, retrying: %s", exc)
                await asyncio.sleep(LISTEN_RETRY_S)

    def _heard(self, words: list[str]) -> None:
        """Take in another server's payload: its sender word, then topics, a `HELLO`, or the
        answers to hellos (`ACK` and the hello's sender)."""
        self._peer_news += 1
        self._peers = True
        sender = None
        if words and words[0].startswith("from:"):
            sender, words = words[0], words[1:]
        if HELLO in words and sender is not None:
            self._notify_others({f"{ACK}:{sender}"})
        if f"{ACK}:{self.sender}" in words:
            self._awaited_acks -= 1
            if self._awaited_acks <= 0:
                self._acked.set()
        self.notifier.publish_all(words)

    async def _watch_peers(self) -> None:
        """Every `presence_check_s`, count the other servers holding the schema's presence
        lock; with none, and nothing heard from one meanwhile, stop sending NOTIFYs. A server
        that comes later says hello, which turns them back on before its open() returns."""
        while True:
            await asyncio.sleep(self.presence_check_s)
            news, pid = self._peer_news, self._listen_pid
            if pid is None:
                continue
            try:
                async with self._pool.connection() as conn:
                    others = await self._others(conn, pid)
            except psycopg.Error as exc:
                log.debug("counting the other servers failed: %s", exc)
                self._peers = True
                continue
            self._peers = bool(others) or news != self._peer_news or pid != self._listen_pid

    async def _others(self, conn: psycopg.AsyncConnection[Any], listen_pid: int) -> int:
        """How many listening connections other than `listen_pid` hold the schema's presence
        lock."""
        cur = await conn.execute(_OTHERS, (PRESENCE_LOCK_KEY, self._presence_key, listen_pid))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _run(
        self, op: Op[T], *, write: bool, heavy: bool = False, one_statement: bool = False
    ) -> T:
        """Run one transaction script, publish its topics here at once and queue them for the
        other servers (`_notify_others`). Never blocks the loop, heavy or not.

        The pool's connections are in autocommit mode, so a `one_statement` operation runs as
        its own transaction: one round trip instead of three (BEGIN, the statement, COMMIT).
        Other scripts go through `_script`. A lost connection leaves a write's fate
        unknown once its COMMIT is on its way: only an error the server reported (it has an
        SQLSTATE) then says it did not happen."""
        commit = _Commit()
        try:
            async with self._pool.connection() as conn:
                commit.sent = one_statement and write
                outcome = await self._script(conn, op, commit, one_statement)
        except psycopg.Error as exc:
            unavailable = None if commit.sent and exc.sqlstate is None else _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        self._notify_others(outcome.topics)
        return self._committed(outcome)

    def _notify_others(self, topics: set[str]) -> None:
        """Queue committed topics for the next NOTIFY, unless no other server listens; start
        the sender unless it runs."""
        if not topics or not self._peers:
            return
        self._unsent |= topics
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(
                self._send_notifies(), name=f"neuroq-notify-{self.schema}"
            )

    async def _send_notifies(self) -> None:
        """NOTIFY the queued topics, as many times as needed: each round sends every topic
        queued while the one before was on its way, in one statement (one round trip). A
        failure drops that round's topics, logged; the other servers' re-checks cover them."""
        while self._unsent:
            topics, self._unsent = self._unsent, set()
            try:
                if self._notify_conn is None or self._notify_conn.closed:
                    self._notify_conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True
                    )
                payloads = [f"{self.sender} {payload}" for payload in _payloads(topics)]
                # Parameters, not literals in the text: the statement is prepared once.
                await self._notify_conn.execute(_NOTIFY, (self.channel, payloads))
            except psycopg.Error as exc:
                log.warning("NOTIFY of committed changes failed (others re-check): %s", exc)
                if self._notify_conn is not None:
                    await self._notify_conn.close()
                    self._notify_conn = None

    async def _script(
        self,
        conn: psycopg.AsyncConnection[Any],
        op: Op[T],
        commit: _Commit,
        one_statement: bool = False,
    ) -> Outcome[T]:
        """Run the statements `op` yields, sending each the rows of the one before; each
        statement (with those it carries in `Stmt.before`) is one round trip.

        A first statement marked `Stmt.commit` that carries none before it is a transaction of
        its own: it runs in autocommit, as a plain statement (in a pipeline it would cost
        psycopg about twice the CPU), so an operation that stops there is one round trip in
        all; so does the statement of a `one_statement` operation. The rest run in a pipeline
        (`_pipelined`)."""
        try:
            stmt = next(op)
        except StopIteration as stop:
            return stop.value
        if one_statement or (stmt.commit and not stmt.before):
            if stmt.before:
                raise RuntimeError(f"{stmt.name}: statements before it in a one_statement op")
            commit.sent = commit.sent or stmt.commit
            async with conn.cursor() as cur:
                await cur.execute(_QUERIES[stmt.name], self._params(stmt))
                rows = await _rows(cur)
            try:
                stmt = op.send(rows)
            except StopIteration as stop:
                return stop.value
            if one_statement:
                raise RuntimeError(f"{stmt.name}: a second statement in a one_statement op")
        return await self._pipelined(conn, op, stmt, commit)

    async def _pipelined(
        self, conn: psycopg.AsyncConnection[Any], op: Op[T], stmt: Stmt, commit: _Commit
    ) -> Outcome[T]:
        """Run `stmt` and the statements `op` yields after it in a pipeline.

        A transaction starts with the statement that opens it: its BEGIN goes in the same
        round trip. A statement marked `Stmt.commit` that opens one needs no BEGIN: it and
        the pipeline's sync are a transaction of their own (PostgreSQL commits the statements
        before a sync as one). One marked `commit` inside a transaction sends its COMMIT with
        it. Whatever `op` yields next opens a new transaction. A failure or a cancellation
        inside a transaction begun with BEGIN, before its COMMIT: leaving the pool's
        connection block rolls it back. A statement that is a transaction of its own and
        reached the server may still commit with the sync the pipeline sends on leaving, as a
        COMMIT on its way would."""
        in_transaction = False
        async with conn.pipeline() as pipe, conn.cursor() as cur, conn.cursor() as aux:
            while True:
                if not in_transaction and not stmt.commit:
                    await aux.execute(b"BEGIN", prepare=False)
                    in_transaction = True
                for before in stmt.before:
                    await aux.execute(_QUERIES[before.name], self._params(before))
                await cur.execute(_QUERIES[stmt.name], self._params(stmt))
                if stmt.commit:
                    if in_transaction:
                        await aux.execute(b"COMMIT", prepare=False)
                        in_transaction = False
                    commit.sent = True
                await pipe.sync()
                rows = await _rows(cur)
                try:
                    stmt = op.send(rows)
                except StopIteration as stop:
                    if in_transaction:
                        commit.sent = True
                        await aux.execute(b"COMMIT", prepare=False)
                        await pipe.sync()
                    return stop.value

    def _params(self, stmt: Stmt) -> dict[str, Any]:
        base = {"retention_run": self.retention_run_ms, "retention_sync": self.retention_sync_ms}
        return {**base, **stmt.params}


class _Commit:
    """Whether a COMMIT (or a sync ending a transaction) has been sent: a connection lost
    after it leaves the outcome unknown."""

    sent = False


async def _rows(cur: psycopg.AsyncCursor[Any]) -> list[tuple[Any, ...]]:
    """The rows of the statement just run on `cur`; none for a statement that returns none."""
    # Not `cur.description`: it builds a Column object per column (22 for a job) on every
    # statement, a measurable share of a finish's CPU.
    result = cur.pgresult
    returned = result is not None and result.status == pq.ExecStatus.TUPLES_OK
    return await cur.fetchall() if returned else []


async def _let_finish(task: asyncio.Task[None] | None, timeout_s: float) -> None:
    """Give `task` up to `timeout_s` to end by itself, then cancel it."""
    if task is None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _fail_waiters(batch: list[_Waiting], exc: Exception) -> None:
    """Hand `exc` to every submitter of `batch` still waiting."""
    for item in batch:
        if not item[3].done():
            item[3].set_exception(exc)


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
    for topic in topics:
        if current and size + len(topic) + 1 > NOTIFY_PAYLOAD_BYTES:
            payloads.append(" ".join(current))
            current, size = [], 0
        current.append(topic)
        size += len(topic) + 1
    if current:
        payloads.append(" ".join(current))
    return payloads
