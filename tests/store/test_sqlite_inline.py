"""SQLiteStore runs small operations on the event loop and falls back to its database thread when
the file is locked: a held lock never stalls the loop, and nothing is lost or reordered wrongly."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from neuroq.jobs import JobStatus, NewJob, now_ms
from neuroq.store.sqlite import CHECKPOINT_EVERY_COMMITS, SQLiteStore

EP = "ep-inline"


async def test_a_write_waits_for_a_foreign_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        before, _ = await store.submit(NewJob(EP, "1"), now_ms())
        # Another connection (as another process would) holds the write lock.
        other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        submit = asyncio.create_task(store.submit(NewJob(EP, "2"), now_ms()))
        # The loop keeps running while the submit waits on the thread ...
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ticks += 1
        assert not submit.done()
        # ... and reads still answer from their snapshot.
        seen = await store.get(EP, before.id)
        assert seen is not None and seen.status is JobStatus.IN_QUEUE
        other.execute("COMMIT")
        other.close()
        job, created = await asyncio.wait_for(submit, 10)
        assert created and ticks == 20
        taken = await store.take(EP, "w1", 10, now_ms(), 60_000)
        assert [j.id for j in taken] == [before.id, job.id]
    finally:
        await store.close()


async def test_heavy_operations_and_checkpoints_keep_the_file_consistent(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        # Enough inline commits to trigger several checkpoints on the thread.
        ids = []
        for i in range(CHECKPOINT_EVERY_COMMITS * 2 + 10):
            job, _ = await store.submit(NewJob(EP, str(i)), now_ms())
            ids.append(job.id)
        assert await store.purge_queue(EP, now_ms()) == len(ids)
        counts = await store.health(EP, now_ms())
        assert counts["jobs"]["inQueue"] == 0
    finally:
        await store.close()
    # A fresh connection sees every commit and a sound file.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        statuses = {row[0] for row in conn.execute("SELECT status FROM jobs")}
        assert statuses == {"CANCELLED"}
    finally:
        conn.close()


async def test_a_submit_and_a_read_are_one_statement_each(tmp_path: Path) -> None:
    """Each runs in autocommit, a transaction of its own: no BEGIN or COMMIT around it. A key
    seen before costs its look-up transaction after the INSERT that found it held."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        sent: list[str] = []
        assert store._inline is not None
        store._inline.set_trace_callback(sent.append)
        job, created = await store.submit(NewJob(EP, "1"), now_ms())
        assert created
        assert await store.get(EP, job.id) == job
        assert len(sent) == 2, sent
        assert sent[0].lstrip().startswith("INSERT INTO jobs")
        assert sent[1].lstrip().startswith("SELECT")
        # A fresh idempotency key: the INSERT alone.
        sent.clear()
        keyed, created = await store.submit(NewJob(EP, "2"), now_ms(), idempotency_key="k1")
        assert created
        assert len(sent) == 1 and sent[0].lstrip().startswith("INSERT INTO jobs"), sent
        # The same key again: the INSERT changes nothing, then the look-up's transaction
        # returns the key's holder.
        sent.clear()
        again, created = await store.submit(NewJob(EP, "3"), now_ms(), idempotency_key="k1")
        assert not created and again == keyed
        assert sent[0].lstrip().startswith("INSERT INTO jobs"), sent
        assert sent[1] == "BEGIN IMMEDIATE" and sent[-1] == "COMMIT", sent
        assert (await store.health(EP, now_ms()))["jobs"]["inQueue"] == 2
    finally:
        await store.close()
