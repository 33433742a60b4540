"""PostgreSQL-only behaviour: concurrent migration, SKIP LOCKED takes, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import wait_for_async
from store_backends import POSTGRES_URL, drop_schema, open_store

from neuroq.jobs import JobStatus, NewJob, now_ms
from neuroq.store import postgres
from neuroq.store.base import Holder, PostedResult, TakeLook, job_topic, queue_topic
from neuroq.store.postgres import MIGRATIONS, PostgresStore

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="set NEUROQ_TEST_POSTGRES_URL to run the PostgreSQL tests"
)
EP = "ep-pg"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    yield name
    await drop_schema(name)


async def test_servers_starting_together_migrate_once(schema: str, tmp_path: Path) -> None:
    stores = await asyncio.gather(*(open_store("postgres", tmp_path, schema) for _ in range(4)))
    try:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            cur = await conn.execute(f'SELECT version FROM "{schema}".neuroq_schema_version')
            assert await cur.fetchall() == [(v,) for v, _ in MIGRATIONS]
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_takes_never_share_a_job(schema: str, tmp_path: Path) -> None:
    stores = [await open_store("postgres", tmp_path, schema) for _ in range(3)]
    try:
        t = now_ms()
        submitted = {(await stores[0].submit(NewJob(EP, str(i)), t))[0].id for i in range(60)}

        async def drain(index: int) -> list[str]:
            taken: list[str] = []
            while jobs := await stores[index % 3].take(EP, f"w{index}", 2, now_ms(), 60_000):
                taken += [job.id for job in jobs]
            return taken

        results = await asyncio.gather(*(drain(i) for i in range(6)))
        taken = [job_id for ids in results for job_id in ids]
        assert len(taken) == len(set(taken)) == len(submitted)
        assert set(taken) == submitted
    finally:
        for store in stores:
            await store.close()


async def test_a_commit_in_one_store_wakes_another(schema: str, tmp_path: Path) -> None:
    writer = await open_store("postgres", tmp_path, schema)
    reader = await open_store("postgres", tmp_path, schema)
    try:
        queue_version = reader.notifier.version(queue_topic(EP))
        job, _ = await writer.submit(NewJob(EP, "1"), now_ms())
        assert await reader.notifier.wait(queue_topic(EP), queue_version, timeout_s=5.0)
        job_version = reader.notifier.version(job_topic(job.id))
        await writer.take(EP, "w1", 1, now_ms(), 60_000)
        assert await reader.notifier.wait(job_topic(job.id), job_version, timeout_s=5.0)
    finally:
        await writer.close()
        await reader.close()


async def _listen(schema: str, received: list[str], ready: asyncio.Event) -> None:
    """Collect every NOTIFY payload sent on the schema's channel, as another server would."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'LISTEN "neuroq_{schema}"')
        ready.set()
        async for note in conn.notifies():
            received.append(note.payload)


async def test_the_topics_of_concurrent_commits_share_a_notify(schema: str, tmp_path: Path) -> None:
    """Other servers hear of every committed job, the topics of commits made while a NOTIFY
    was on its way gathered into the next one: at most one NOTIFY for two commits (there was
    one per commit)."""
    writer = await open_store("postgres", tmp_path, schema)
    reader = await open_store("postgres", tmp_path, schema)
    received: list[str] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(schema, received, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10.0)
        jobs = await asyncio.gather(
            *(writer.submit(NewJob(EP, str(i)), now_ms()) for i in range(200))
        )
        expected = {job_topic(job.id) for job, _ in jobs}

        async def all_heard() -> bool:
            heard = {topic for payload in received for topic in payload.split()}
            return expected <= heard and queue_topic(EP) in heard

        await wait_for_async(all_heard, 10.0, "every submit's topics in some NOTIFY")
        assert len(received) <= 100, f"{len(received)} NOTIFYs for 200 commits"
        # and the other store wakes on them as before
        version = reader.notifier.version(queue_topic(EP))
        await writer.submit(NewJob(EP, "one more"), now_ms())
        assert await reader.notifier.wait(queue_topic(EP), version, timeout_s=5.0)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await writer.close()
        await reader.close()


async def test_notifies_resume_after_their_connection_is_lost(
    schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection that sends NOTIFYs killed by the database: the round it was sending is
    dropped with a warning (the other servers' re-checks cover it) and the next commit's
    NOTIFY goes out on a new connection."""
    writer = await open_store("postgres", tmp_path, schema)
    reader = await open_store("postgres", tmp_path, schema)
    try:
        version = reader.notifier.version(queue_topic(EP))
        await writer.submit(NewJob(EP, "1"), now_ms())
        assert await reader.notifier.wait(queue_topic(EP), version, timeout_s=5.0)
        assert writer._notify_conn is not None
        pid = writer._notify_conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        heard = False
        for i in range(20):  # the first commit after the kill may meet the dead connection
            version = reader.notifier.version(queue_topic(EP))
            await writer.submit(NewJob(EP, f"after {i}"), now_ms())
            if await reader.notifier.wait(queue_topic(EP), version, timeout_s=2.0):
                heard = True
                break
        assert heard
        assert writer._notify_conn is not None and writer._notify_conn.info.backend_pid != pid
        assert "NOTIFY of committed changes failed" in caplog.text
    finally:
        await writer.close()
        await reader.close()


async def test_a_cancelled_transaction_leaves_its_connection_idle(
    schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operation cancelled inside its transaction (here: waiting for a row lock) leaves it
    rolled back, its connection back in the pool idle, and the store working."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        job, _ = await store.submit(NewJob(EP, "1"), now_ms())
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as holder:
            await holder.execute(
                f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', (job.id,)
            )
            cancel = asyncio.create_task(store.cancel(EP, job.id, now_ms()))

            async def blocked() -> int:
                cur = await holder.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                row = await cur.fetchone()
                return int(row[0]) if row else 0

            await wait_for_async(blocked, 10.0, "the cancel waiting for the row lock")
            cancel.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancel
            await holder.rollback()
        assert "rolling back returned connection" not in caplog.text
        for conn in store._pool._pool:  # the idle connections the pool holds
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cancelled = await store.cancel(EP, job.id, now_ms())
        assert cancelled is not None and cancelled.status.value == "CANCELLED"
    finally:
        await store.close()


async def test_a_failed_transaction_is_rolled_back_before_its_connection_returns(
    schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement the server refuses aborts the transaction, which is rolled back before the
    connection returns to the pool (a pool given it open would roll back and warn)."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        await store.submit(NewJob(EP, "1"), now_ms())
        monkeypatch.setitem(postgres._QUERIES, "take", "SELECT no_such_column FROM jobs")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            await store.take(EP, "w1", 1, now_ms(), 60_000)
        monkeypatch.undo()
        assert "rolling back returned connection" not in caplog.text
        assert [job.status.value for job in await store.take(EP, "w1", 1, now_ms(), 60_000)] == [
            "IN_PROGRESS"
        ]
    finally:
        await store.close()


def test_schema_name_is_validated() -> None:
    with pytest.raises(ValueError, match="schema="):
        PostgresStore(POSTGRES_URL, schema="x; DROP TABLE jobs")


class _RoundTrips:
    """Counts what a store's operations send: round trips (a pipeline's sync, or a statement
    outside a pipeline), pipelines entered, and BEGIN/COMMIT; not the NOTIFYs that its own
    connection sends after the commits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: PostgresStore) -> None:
        self.round_trips = 0
        self.pipelines = 0
        self.begins_and_commits: list[bytes] = []
        sync, execute = psycopg.AsyncPipeline.sync, psycopg.AsyncCursor.execute
        enter = psycopg.AsyncPipeline.__aenter__

        async def counted_sync(pipe: psycopg.AsyncPipeline) -> None:
            self.round_trips += 1
            await sync(pipe)

        async def counted_enter(pipe: psycopg.AsyncPipeline) -> Any:
            self.pipelines += 1
            return await enter(pipe)

        async def counted_execute(
            cur: psycopg.AsyncCursor[Any], query: Any, *a: Any, **k: Any
        ) -> Any:
            if query in (b"BEGIN", b"COMMIT"):
                self.begins_and_commits.append(query)
            if cur.connection is store._notify_conn:
                return await execute(cur, query, *a, **k)
            if cur.connection._pipeline is None:
                self.round_trips += 1
            return await execute(cur, query, *a, **k)

        monkeypatch.setattr(psycopg.AsyncPipeline, "sync", counted_sync)
        monkeypatch.setattr(psycopg.AsyncPipeline, "__aenter__", counted_enter)
        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted_execute)

    def counts(self) -> tuple[int, int, list[bytes]]:
        """(round trips, pipelines, BEGIN/COMMIT sent) since the last call; then reset."""
        counts = (self.round_trips, self.pipelines, list(self.begins_and_commits))
        self.round_trips = self.pipelines = 0
        self.begins_and_commits.clear()
        return counts


async def test_a_take_and_a_batch_of_results_are_one_round_trip_each(
    schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's hot path: a take look that finds jobs (contact included) and a batch of
    results for jobs without webhooks each go to PostgreSQL as one round trip, a transaction
    with no BEGIN or COMMIT; a lone statement like the batch of results needs no pipeline. A
    job with a webhook is ended in a second, whole transaction with its delivery."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        t = now_ms()
        for i in range(3):
            await store.submit(NewJob(EP, str(i)), t)
        hooked, _ = await store.submit(NewJob(EP, "4", webhook="https://hook.example/a"), t)
        assert isinstance(store, PostgresStore)
        sent = _RoundTrips(monkeypatch, store)
        look = TakeLook(EP, "w1", 3, t, 60_000, touch=True, held_job_ids=[])
        recycling, jobs = await store.worker_take(look)
        assert not recycling and len(jobs) == 3
        assert sent.counts() == (1, 1, [])
        recycling, more = await store.worker_take(replace(look, touch=False))
        assert not recycling and [job.id for job in more] == [hooked.id]
        assert sent.counts() == (1, 0, [])
        assert (await store.release([hooked.id], "w1", t)) == 1
        sent.counts()

        done = await store.finish_many(
            [PostedResult(job.id, '"ok"', None, Holder("w1")) for job in jobs], now_ms=t + 1
        )
        assert all(job is not None and job.status is JobStatus.COMPLETED for job in done)
        assert sent.counts() == (1, 0, [])

        (taken,) = await store.take(EP, "w1", 3, t, 60_000)
        assert taken.id == hooked.id
        await store.submit(NewJob(EP, "5"), t)
        (extra_taken,) = await store.take(EP, "w1", 3, t, 60_000)
        sent.counts()
        done = await store.finish_many(
            [PostedResult(j.id, '"ok"', None, Holder("w1")) for j in (taken, extra_taken)],
            now_ms=t + 2,
        )
        assert [job.status if job else None for job in done] == [JobStatus.COMPLETED] * 2
        # the plain job's statement, then in a pipeline BEGIN + its UPDATE, its outbox row,
        # COMMIT
        assert sent.counts() == (4, 1, [b"BEGIN", b"COMMIT"])
        (delivery,) = await store.job_webhooks(hooked.id)
        assert delivery.url == "https://hook.example/a"
    finally:
        await store.close()


async def test_concurrent_submits_share_inserts_in_their_order(
    schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submits arriving while an INSERT is on its way are stored by the next one: 60 at once
    take far fewer statements than jobs, and each job keeps its place in the queue."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        inserts = 0
        execute = psycopg.AsyncCursor.execute

        async def counted(cur: psycopg.AsyncCursor[Any], query: Any, *a: Any, **k: Any) -> Any:
            nonlocal inserts
            inserts += "INSERT INTO jobs" in str(query)
            return await execute(cur, query, *a, **k)

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)
        t = now_ms()
        submitted = await asyncio.gather(*(store.submit(NewJob(EP, str(i)), t) for i in range(60)))
        assert all(created for _, created in submitted)
        assert 1 <= inserts <= 10
        taken = await store.take(EP, "w1", 100, t, 60_000)
        assert [job.input_json for job in taken] == [str(i) for i in range(60)]
        assert [job.id for job in taken] == [job.id for job, _ in submitted]
    finally:
        await store.close()


async def test_one_key_submitted_together_makes_one_job(schema: str, tmp_path: Path) -> None:
    store = await open_store("postgres", tmp_path, schema)
    try:
        t = now_ms()
        first = store.submit(NewJob(EP, "0"), t)  # on its way while the keyed ones gather
        keyed = [store.submit(NewJob(EP, str(i)), t, idempotency_key="k") for i in range(1, 6)]
        _, *results = await asyncio.gather(first, *keyed)
        assert len({job.id for job, _ in results}) == 1
        assert [created for _, created in results].count(True) == 1
        assert (await store.health(EP, t))["jobs"]["inQueue"] == 2
    finally:
        await store.close()


async def test_a_submit_the_database_refuses_fails_alone(schema: str, tmp_path: Path) -> None:
    """A job PostgreSQL cannot store (text with a NUL) in a shared INSERT: its submitter gets
    the error, the others' jobs are stored."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        t = now_ms()
        inputs = ['"a"', '"b"', '"bad\x00"', '"c"']
        results = await asyncio.gather(
            *(store.submit(NewJob(EP, text), t) for text in inputs), return_exceptions=True
        )
        assert isinstance(results[2], psycopg.DataError)
        stored = [r[0].input_json for r in results if not isinstance(r, BaseException)]
        assert stored == ['"a"', '"b"', '"c"']
        assert len(await store.take(EP, "w1", 10, t, 60_000)) == 3
    finally:
        await store.close()


async def test_a_store_skips_only_the_notifies_it_sent(schema: str, tmp_path: Path) -> None:
    """NOTIFYs say who sent them, so a store drops its own and publishes every other, whatever
    backend sent it: a backend pid is no name for a store (PostgreSQL reuses pids, and a pid
    this store once used may later be another server's)."""
    store = await open_store("postgres", tmp_path, schema)
    try:
        assert isinstance(store, PostgresStore)
        own, other, untagged = job_topic("own"), job_topic("other"), job_topic("untagged")
        versions = {t: store.notifier.version(t) for t in (own, other, untagged)}
        payloads = [f"{store.sender} {own}", f"from:another-server {other}", untagged]
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
            for payload in payloads:  # delivered in this order
                await admin.execute("SELECT pg_notify(%s, %s)", (store.channel, payload))
        assert await store.notifier.wait(untagged, versions[untagged], timeout_s=5.0)
        assert store.notifier.version(other) != versions[other]
        assert store.notifier.version(own) == versions[own]
    finally:
        await store.close()


def _quiet_store(schema: str) -> PostgresStore:
    """A store that re-checks its long-polls only every 30 s (so a wake-up within the test's
    time is a NOTIFY's) and looks for other servers every 50 ms."""
    return PostgresStore(POSTGRES_URL, schema=schema, recheck_s=30.0, presence_check_s=0.05)


async def test_a_lone_server_sends_no_notify_until_another_one_listens(schema: str) -> None:
    """NOTIFY is for the other servers on the schema: a server alone sends none, one that
    starts beside it is heard from once its open() returns, and the first falls silent again
    when the other leaves."""
    watcher = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    alone = _quiet_store(schema)
    await alone.open()
    other: PostgresStore | None = None
    try:
        await watcher.execute(f'LISTEN "neuroq_{schema}"')
        await wait_for_async(lambda: _now(not alone._peers), 10, "the store to find itself alone")
        unheard, _ = await alone.submit(NewJob(EP, "1"), now_ms())

        other = _quiet_store(schema)
        await other.open()
        assert other._acked.is_set(), "open() returned without the first server's answer"
        assert alone._peers
        version = other.notifier.version(queue_topic(EP))
        heard, _ = await alone.submit(NewJob(EP, "2"), now_ms())
        assert await other.notifier.wait(queue_topic(EP), version, timeout_s=5.0)
        # NOTIFYs arrive in commit order: had the first submit been sent, it came before
        payloads: list[str] = []
        async for note in watcher.notifies(timeout=5.0):
            payloads.append(note.payload)
            if job_topic(heard.id) in note.payload.split():
                break
        assert any(job_topic(heard.id) in p.split() for p in payloads)
        assert not any(job_topic(unheard.id) in p.split() for p in payloads)

        await other.close()
        other = None
        await wait_for_async(lambda: _now(not alone._peers), 10, "the store to see the other go")
    finally:
        await alone.close()
        if other is not None:
            await other.close()
        await watcher.close()


async def _now(value: bool) -> bool:
    return value


async def test_a_server_whose_listen_connection_dies_is_notified_again(schema: str) -> None:
    """The other server falls silent while this one's LISTEN connection is gone (its presence
    lock went with it) and notifies it again once it has reconnected."""
    first, second = _quiet_store(schema), _quiet_store(schema)
    await first.open()
    await second.open()
    try:
        assert first._peers and second._peers
        old_pid = second._listen_pid
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        await wait_for_async(lambda: _now(not first._peers), 10, "the first to fall silent")
        await wait_for_async(
            lambda: _now(first._peers and second._listen_pid not in (None, old_pid)),
            10,
            "the second to listen again and the first to notify it",
        )
        version = second.notifier.version(queue_topic(EP))
        await first.submit(NewJob(EP, "1"), now_ms())
        assert await second.notifier.wait(queue_topic(EP), version, timeout_s=5.0)
    finally:
        await first.close()
        await second.close()
