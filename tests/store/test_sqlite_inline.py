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
