"""Several OS processes on one SQLite file: no job is taken twice, and commits survive SIGKILL."""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from neuroq.jobs import JobStatus, NewJob, now_ms
from neuroq.store.base import Holder
from neuroq.store.sqlite import SQLiteStore

EP = "ep-proc"
JOBS = 240
SPAWN = multiprocessing.get_context("spawn")


def take_until_empty(path: str, worker_id: str, start: Barrier, out: Any) -> None:
    """Child: take up to 3 jobs at a time and finish them until the queue is empty."""

    async def run() -> list[str]:
        store = SQLiteStore(path)
        await store.open()
        taken: list[str] = []
        try:
            start.wait(30)
            while jobs := await store.take(EP, worker_id, 3, now_ms(), 60_000):
                for job in jobs:
                    taken.append(job.id)
                    done = await store.finish(
                        job.id,
                        output_json="1",
                        error_json=None,
                        now_ms=now_ms(),
                        holder=Holder(worker_id),
                    )
                    assert done is not None, job.id
        finally:
            await store.close()
        return taken

    try:
        out.put((worker_id, asyncio.run(run())))
    except BaseException as exc:
        out.put((worker_id, repr(exc)))
        raise


def submit_then_hang(path: str, out: Any) -> None:
    """Child: submit a job, report its id once the commit returned, then wait to be killed."""

    async def run() -> None:
        store = SQLiteStore(path)
        await store.open()
        job, _ = await store.submit(NewJob(EP, '{"keep": true}'), now_ms())
        out.put(job.id)
        await asyncio.Event().wait()

    asyncio.run(run())


async def test_three_processes_take_every_job_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteStore(path)
    await store.open()
    submitted = [(await store.submit(NewJob(EP, str(i)), now_ms()))[0].id for i in range(JOBS)]

    start = SPAWN.Barrier(3)
    out: Any = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=take_until_empty, args=(str(path), f"w{i}", start, out))
        for i in range(3)
    ]
    for proc in procs:
        proc.start()
    results: dict[str, Any] = dict(out.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0, results

    taken = [job_id for ids in results.values() for job_id in ids]
    assert all(isinstance(ids, list) for ids in results.values()), results
    assert len(taken) == len(set(taken)) == JOBS
    assert set(taken) == set(submitted)
    for job_id in submitted:
        job = await store.get(EP, job_id)
        assert job is not None and job.status is JobStatus.COMPLETED
    await store.close()


async def test_a_committed_submit_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    out: Any = SPAWN.Queue()
    proc = SPAWN.Process(target=submit_then_hang, args=(str(path), out))
    proc.start()
    job_id = out.get(timeout=60)
    proc.kill()
    proc.join(10)
    assert proc.exitcode == -9

    store = SQLiteStore(path)
    await store.open()
    try:
        job = await store.get(EP, str(job_id))
        assert job is not None and job.status is JobStatus.IN_QUEUE
        assert job.input_json == '{"keep": true}'
    finally:
        await store.close()
